#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md in one go, on a machine with the usgm package importable
# (PYTHONPATH=. from the repo root) and SpeechBrain installed (the `bench` extra).
#   bash benchmarks/gpu_suite.sh OUT_DIR [core|extra|learn|check|whole|whole-compiled|modes|infer2|tail]...
# whole: whole utterances (--batch-seconds 64, 3-20 s) against 16 x 4 s segments in the same
#   process (gm, bf16-mixed, paper size, eager; about 3 minutes): batches padded to their longest
#   item with cold shapes (`--pad-to longest`); padded to the bucket edge with every shape of the
#   epoch warm, without and with cuDNN's benchmark.
# whole-compiled: the bucket-edge row compiled (dynamic), every shape warm, beside the compiled
#   16 x 4 s row of `core` (no segment row here; about 5+ minutes, a call of its own).
# modes: compiled 16 x 4 s gm with torch's default mode and with max-autotune-no-cudagraphs
#   (autotuning makes the second one's warm-up long).
# infer2: usgm-separate's speed and memory (60 s and 1 h files, fp32 and bf16, default
#   --batch-windows, eager then --compile, no peer, median of 3 runs), into
#   OUT_DIR/inference.{jsonl,md}; ~5 min.
# tail: the 60 s file compiled, with the last, shorter window also compiled (dynamic shapes;
#   --compile-tail) instead of eager, beside the same file without it; ~2 min.
set -euo pipefail
out=${1:?usage: gpu_suite.sh OUT_DIR [core|extra|learn|check|whole|whole-compiled|modes|infer2|tail]...}
shift
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/usgm_inductor}
cd "$(dirname "$0")"
for part in "${@:-core}"; do
  case $part in
    core | extra) python train_throughput.py --suite "$part" --out "$out" ;;
    learn) python train_throughput.py --learn --steps 500 --batch 16 --seconds 4 --out "$out" ;;
    check) python train_throughput.py --check-compile --out "$out" ;;
    whole | whole-compiled)
      w=(train_throughput.py --method gm --precision bf16-mixed --seconds 4 --batch-seconds 64
         --out "$out")
      if [ "$part" = whole ]; then
        python "${w[@]}" --steps 20 --pad-to longest
        python "${w[@]}" --steps 40 --warm-shapes
        python "${w[@]}" --steps 40 --warm-shapes --cudnn-benchmark
      else
        python "${w[@]}" --steps 40 --warm-shapes --cudnn-benchmark --compile --no-segment-row
      fi ;;
    modes)
      for m in default max-autotune-no-cudagraphs; do
        python train_throughput.py --method gm --precision bf16-mixed --batch 16 --seconds 4 \
          --compile --compile-mode "$m" --out "$out"
      done ;;
    infer2)
      for c in "" --compile; do  # shellcheck disable=SC2086: "" is the eager run
        python inference.py --no-peer $c --repeats 3 --seconds 60 3600 --precision 32 bf16 \
          --out "$out"
      done
      ;;
    tail)
      for t in "" --compile-tail; do  # shellcheck disable=SC2086: "" is the eager-tail run
        python inference.py --no-peer --compile $t --repeats 3 --seconds 60 --precision 32 bf16 \
          --out "$out"
      done ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
