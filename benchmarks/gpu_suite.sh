#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md in one go, on a machine with the usgm package importable
# (PYTHONPATH=. from the repo root) and SpeechBrain installed (the `bench` extra).
#   bash benchmarks/gpu_suite.sh OUT_DIR [core|extra|learn|check]...
set -euo pipefail
out=${1:?usage: gpu_suite.sh OUT_DIR [core|extra|learn|check]...}
shift
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/usgm_inductor}
cd "$(dirname "$0")"
for part in "${@:-core}"; do
  case $part in
    core | extra) python train_throughput.py --suite "$part" --out "$out" ;;
    learn) python train_throughput.py --learn --steps 500 --batch 16 --seconds 4 --out "$out" ;;
    check) python train_throughput.py --check-compile --out "$out" ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
