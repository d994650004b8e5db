#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md in one go, on a machine with the usgm package importable
# (PYTHONPATH=. from the repo root) and SpeechBrain installed (the `bench` extra).
#   bash benchmarks/gpu_suite.sh OUT_DIR [core|extra|learn|check|infer2]...
# infer2: usgm-separate's speed and memory (60 s and 1 h files, fp32 and bf16, default
# --batch-windows, eager then --compile, no peer), into OUT_DIR/inference.{jsonl,md}; ~3 min.
set -euo pipefail
out=${1:?usage: gpu_suite.sh OUT_DIR [core|extra|learn|check|infer2]...}
shift
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/usgm_inductor}
cd "$(dirname "$0")"
for part in "${@:-core}"; do
  case $part in
    core | extra) python train_throughput.py --suite "$part" --out "$out" ;;
    learn) python train_throughput.py --learn --steps 500 --batch 16 --seconds 4 --out "$out" ;;
    check) python train_throughput.py --check-compile --out "$out" ;;
    infer2)
      python inference.py --no-peer --seconds 60 3600 --precision 32 bf16 --out "$out"
      python inference.py --no-peer --compile --seconds 60 3600 --precision 32 bf16 --out "$out"
      ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
