#!/usr/bin/env bash
# Real-vs-synthetic transfer of a study-size model trained 10 minutes on one GPU
# (the default-data study, docs/default-data.md).
#
# Two device calls on the same warm machine (each call has a 600 s limit):
#   stage 1: install the carried wheels, generate the default corpus (improved generator, more
#            training mixtures for dynamic mixing), train experiment=default_gpu for what is left
#            of the call (about 7-8 min of the 10), checkpointing into $RUN (outside $OUT).
#   stage 2: resume from last.ckpt until 10 min of training in total (Lightning's Timer state is
#            in the checkpoint), test on the synthetic test split, then score the best
#            checkpoint on the real-speech dev set (research/realism/real_speech_transfer.py) and
#            write everything under $OUT.
#
#   bash research/realism/gpu_transfer_run.sh 1      # device call 1
#   bash research/realism/gpu_transfer_run.sh 2      # device call 2 (same warm machine)
#   bash research/realism/gpu_transfer_run.sh weights   # optional: the best model back, in parts
#
# Longer runs (TOTAL_TRAIN_S above what two calls hold, e.g. 1200 for a 20-minute curve):
# between 1 and 2, `gpu_transfer_run.sh resume` continues training for what is left of one
# more call, up to TOTAL_TRAIN_S; $RUN/trained_s.txt keeps the running total (Lightning's Timer
# restores the elapsed time from the checkpoint, so each call's max_time is that total).
#
# The recorded speech: either the exact bank, carried in parts (research/realism/bank_transport.py
# pack --out .bank; BANK_PARTS="..." names the parts a call carries, and `gpu_transfer_run.sh
# bank` stages parts ahead of stage 1, one call each), or the smaller lossy copy of
# pack_recorded.py (REC_DIR=.rec), whose corpus differs from the default one (see there).
#
# The real-speech set is built beforehand on a machine with apt and carried (the device has no
# internet/apt):  python research/realism/real_speech_transfer.py --build-only --n-src 2
# → data/real_speech/mix/real2mix_dev (~13 MB). Carry .whl/ and .rec/ (REC_DIR=.rec) in stage 1,
# .whl/ and that set in stage 2 (both stages together would pass the 64 MiB carry limit).
#
# Environment: RUN (default /tmp/gpu_run), OUT (results; default $RUN/out), PYTHON (python3),
# GPU_TRANSFER_TINY=1 (a CPU dry run of the same logic in seconds: tiny data and model),
# GPU_TRANSFER_NO_INSTALL=1 (skip the wheel install), CALL_LIMIT (seconds per call, 600),
# BANK_PARTS (bank parts carried by this call), TOTAL_TRAIN_S (training seconds in all, 600),
# REUSE_DATA=1 (stage 1 keeps $RUN/data from an earlier run; that run's logs move to
# $RUN/logs.<time>), REC_DIR (packed recorded speech for a machine without apt), USGM_CACHE (default
# /tmp/usgm_cache), EXTRA_OVERRIDES (Hydra overrides for both stages), CURVE=1 (stage 2 also
# scores every kept epoch checkpoint: transfer over training; pair with
# callbacks.model_checkpoint.save_top_k=-1; CURVE_EVERY=N scores every N-th epoch only),
# CHANNEL_PROBE=1 (stage 2 adds the channel probe to the best checkpoint's report), REF_TEST=1
# (stage 2 also scores the best checkpoint on the test split of the default recipe, without
# EXTRA_OVERRIDES but with REF_OVERRIDES: real_speech_transfer_default_test.json), WHL_DIR (wheel folder to
# install, default .whl; the device image has scipy, so a copy without it leaves room for a
# larger .rec within the carry limit).
set -euo pipefail
STAGE=${1:?usage: gpu_transfer_run.sh bank|1|resume|2|weights}
T0=$(date +%s)
RUN=${RUN:-/tmp/gpu_run}
OUT=${OUT:-$RUN/out}
PY=${PYTHON:-python3}
CALL_LIMIT=${CALL_LIMIT:-600}
TOTAL_TRAIN_S=${TOTAL_TRAIN_S:-600}
# A dry run builds its own smoke set: never over the real set a later device call carries.
if [ -n "${GPU_TRANSFER_TINY:-}" ]; then MIX_DIR=${MIX_DIR:-$RUN/real_mix}; fi
MIX_DIR=${MIX_DIR:-data/real_speech/mix}
mkdir -p "$RUN" "$OUT"
LOG="$OUT/stage$STAGE.log"
exec > >(tee -a "$LOG") 2>&1
echo "[gpu-transfer] stage $STAGE start $(date -u +%FT%TZ) on $(hostname)"

if [ -z "${GPU_TRANSFER_NO_INSTALL:-}" ] && [ -d "${WHL_DIR:-.whl}" ] && [ ! -f /tmp/site/.usgm_installed ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "${WHL_DIR:-.whl}"/*.whl
  touch /tmp/site/.usgm_installed
fi
export PYTHONPATH=.:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
# /tmp outlives a call on a warm device machine (stage 2 finds stage 1's run there), so staged
# bank parts and the decoded bank wait there for the next call.
export USGM_CACHE=${USGM_CACHE:-/tmp/usgm_cache}

# The exact recorded-speech bank (research/realism/bank_transport.py pack): its parts may come over
# several calls (stage "bank" stages what one call carried); stage 1 installs the rest. With
# the bank installed, leave REC_DIR unset: the corpus is then the default corpus of the VM.
if [ -n "${BANK_PARTS:-}" ]; then
  read -r -a PARTS <<<"$BANK_PARTS"
  "$PY" research/realism/bank_transport.py unpack "${PARTS[@]}"
fi
if [ "$STAGE" = bank ]; then exit 0; fi

DATA="$RUN/data/default_2mix"
COMMON=(experiment=default_gpu "paths.log_dir=$RUN/logs" "data.root=$DATA")
# Or the lossy copy of the bank (research/realism/pack_recorded.py → .rec; carry it in stage 1). Where
# it lives does not change the data, so stage 2 needs no copy.
[ -n "${REC_DIR:-}" ] && COMMON+=("data.generate.recorded_dir=$REC_DIR")
# Extra Hydra overrides for both stages (space-separated), e.g. a data-recipe variant.
read -r -a EXTRA <<<"${EXTRA_OVERRIDES:-}"
# REF_TEST's corpus: without them (the exact default recipe), plus REF_OVERRIDES if given.
BASE=("${COMMON[@]}")
read -r -a REF_EXTRA <<<"${REF_OVERRIDES:-}"
BASE+=("${REF_EXTRA[@]}")
COMMON+=("${EXTRA[@]}")
if [ -n "${GPU_TRANSFER_TINY:-}" ]; then
  TINY_COUNTS=(data.generate.n_train=12 data.generate.n_dev=3 data.generate.n_test=3)
  BASE+=("${TINY_COUNTS[@]}")
  COMMON+=(trainer=cpu trainer.precision=32 data.num_workers=0 data.pin_memory=false
           data.segment=0.5 data.batch_size=2 "${TINY_COUNTS[@]}"
           model.net.n_filters=16 model.net.d_model=16 model.net.n_heads=2 model.net.d_ffn=32
           model.net.chunk_size=10 "model.net.ss={n_blocks: 1, n_intra: 1, n_inter: 1}"
           callbacks.audio_examples.n_examples=1)
else
  COMMON+=(trainer=gpu)
  BASE+=(data.generate.n_train=50)
fi
generate() {  # Hydra overrides → the corpus train.py would generate from them (data.generate)
  "$PY" - "$@" <<'PYEOF'
import os, sys, time
from hydra import compose, initialize_config_dir
from usgm.training.factory import ensure_default_data, register_resolvers
register_resolvers()
with initialize_config_dir(version_base="1.3", config_dir=os.path.abspath("conf")):
    cfg = compose("train", overrides=[o for o in sys.argv[1:] if not o.startswith("trainer")],
                  return_hydra_config=False)
t = time.time()
ensure_default_data(cfg.data)
print(f"[gpu-transfer] generated {cfg.data.root} in {time.time() - t:.1f} s", flush=True)
PYEOF
}
hms() { printf '00:%02d:%02d:%02d' $(($1 / 3600)) $(($1 % 3600 / 60)) $(($1 % 60)); }
# After a training call: note its last checkpoint and the training seconds reached so far (the
# next call resumes from both), and return its results.json as $OUT/$2.
record_call() {
  LAST=$(ls -t "$RUN"/logs/default_gpu/runs/*/checkpoints/last.ckpt | head -1)
  echo "$LAST" > "$RUN/last_ckpt.txt"
  echo "$1" > "$RUN/trained_s.txt"
  cp "$(dirname "$(dirname "$LAST")")/results.json" "$OUT/$2" || true
}

if [ "$STAGE" = 1 ]; then
  # REUSE_DATA=1 keeps the generated corpus of an earlier run on this machine (a second model
  # variant on the same data; ensure_default_data still checks its DONE against the options).
  if [ -z "${REUSE_DATA:-}" ]; then
    rm -rf "$RUN/data" "$RUN/logs"
  elif [ -d "$RUN/logs" ]; then
    mv "$RUN/logs" "$RUN/logs.$(date +%s)"  # the earlier variant's checkpoints stay scoreable
  fi
  rm -f "$RUN/trained_s.txt"
  nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null | tee "$OUT/gpu.txt" || true
  # Generate with the same options train.py would use (data.generate of the experiment).
  G0=$(date +%s)
  generate "${COMMON[@]}"
  echo "{\"generate_s\": $(($(date +%s) - G0))}" > "$OUT/generate.json"
  # Train for what is left of this call (margin for start-up, last validation, checkpoint).
  LEFT=$((CALL_LIMIT - ($(date +%s) - T0) - ${MARGIN_S:-75}))
  [ "$LEFT" -gt "$TOTAL_TRAIN_S" ] && LEFT=$TOTAL_TRAIN_S
  [ "$LEFT" -lt 10 ] && LEFT=10
  echo "[gpu-transfer] training for $LEFT s in this call (max_time $(hms "$LEFT"))"
  "$PY" train.py "${COMMON[@]}" "trainer.max_time=$(hms "$LEFT")" test=false
  record_call "$LEFT" results_stage1.json
  echo "[gpu-transfer] stage 1 done in $(($(date +%s) - T0)) s; checkpoint $LAST"
elif [ "$STAGE" = resume ]; then
  LAST=$(cat "$RUN/last_ckpt.txt")
  DONE_S=$(cat "$RUN/trained_s.txt")
  TARGET=$((DONE_S + CALL_LIMIT - ($(date +%s) - T0) - ${MARGIN_S:-75}))
  [ "$TARGET" -gt "$TOTAL_TRAIN_S" ] && TARGET=$TOTAL_TRAIN_S
  echo "[gpu-transfer] resuming $LAST from ${DONE_S} s to $TARGET s of training"
  "$PY" train.py "${COMMON[@]}" "trainer.max_time=$(hms "$TARGET")" "ckpt_path=$LAST" test=false
  record_call "$TARGET" "results_resume_$TARGET.json"
  echo "[gpu-transfer] resume done in $(($(date +%s) - T0)) s; $TARGET s trained; checkpoint $LAST"
elif [ "$STAGE" = 2 ]; then
  LAST=$(cat "$RUN/last_ckpt.txt")
  DONE_S=$(cat "$RUN/trained_s.txt" 2>/dev/null || echo 0)
  if [ $((TOTAL_TRAIN_S - DONE_S)) -gt $((CALL_LIMIT - 150)) ]; then
    echo "[gpu-transfer] warning: $((TOTAL_TRAIN_S - DONE_S)) s of training left; with the" \
         "scoring that may not fit one call: run 'gpu_transfer_run.sh resume' first" >&2
  fi
  echo "[gpu-transfer] resuming $LAST until $(hms "$TOTAL_TRAIN_S") of training"
  # test=false: the transfer script below scores the synthetic test split with the same SI-SNR
  # (a resumed run's restored "best" path can point at a checkpoint that no longer exists).
  "$PY" train.py "${COMMON[@]}" "trainer.max_time=$(hms "$TOTAL_TRAIN_S")" "ckpt_path=$LAST" \
    test=false
  RES=$(ls -t "$RUN"/logs/default_gpu/runs/*/results.json | head -1)
  cp "$RES" "$OUT/results_train.json"
  # One archive for the metrics CSVs of every call: a device call returns at most 8 files.
  rm -rf "$RUN/csv_export" && mkdir -p "$RUN/csv_export"
  for d in "$RUN"/logs/default_gpu/runs/*/; do
    cp -r "$d/csv" "$RUN/csv_export/csv_$(basename "$d")" 2>/dev/null || true
  done
  tar czf "$OUT/csv.tgz" -C "$RUN/csv_export" .
  # Best checkpoint of all calls by its exact validation SI-SNRi (file names round it).
  BEST=$("$PY" research/realism/best_checkpoint.py "$RUN"/logs/default_gpu/runs/*/checkpoints/epoch*.ckpt)
  echo "$BEST" > "$OUT/best_checkpoint.txt"
  echo "$BEST" > "$RUN/best_checkpoint.txt"
  echo "[gpu-transfer] scoring $BEST"
  DEV=cuda
  [ -n "${GPU_TRANSFER_TINY:-}" ] && DEV=cpu
  score_real() {  # checkpoint, JSON out, extra options
    local args=(--model "$1" --synthetic-root "${SYN_ROOT:-$DATA}" --mix-dir "$MIX_DIR" --n-src 2
                --device "$DEV" --out "$2" "${@:3}")
    [ -n "${GPU_TRANSFER_TINY:-}" ] && args+=(--smoke --speech-dir "${SPEECH_DIR:?}")
    "$PY" research/realism/real_speech_transfer.py "${args[@]}"
  }
  # CHANNEL_PROBE=1: the best checkpoint is also scored with the real sources given different /
  # shared recording chains (real_speech_transfer.py --channel-probe; seconds on a GPU).
  PROBE=()
  [ -n "${CHANNEL_PROBE:-}" ] && PROBE=(--channel-probe)
  score_real "$BEST" "$OUT/real_speech_transfer.json" "${PROBE[@]}"
  if [ -n "${REF_TEST:-}" ]; then
    # A data-recipe variant (EXTRA_OVERRIDES) changes the test split too: also score the best
    # checkpoint on the exact default recipe's test split. Splits are seeded apart, so a corpus
    # with few training mixtures has the same test split as the full default one.
    REF="$RUN/ref_data/default_2mix"
    [ -f "$REF/DONE" ] || generate "${BASE[@]/#data.root=*/data.root=$REF}"
    SYN_ROOT=$REF score_real "$BEST" "$OUT/real_speech_transfer_default_test.json"
  fi
  if [ -n "${CURVE:-}" ]; then
    # Transfer over training: every kept epoch checkpoint (EXTRA_OVERRIDES with
    # callbacks.model_checkpoint.save_top_k=-1) scored on both sets → $OUT/curve.tgz.
    rm -rf "$RUN/curve" && mkdir -p "$RUN/curve"
    shopt -s nullglob
    for ck in "$RUN"/logs/default_gpu/runs/*/checkpoints/epoch*.ckpt; do
      ep=$(basename "$ck" | sed -E 's/^epoch0*([0-9]+).*/\1/')
      [ $((ep % ${CURVE_EVERY:-1})) -eq 0 ] || [ "$ck" = "$BEST" ] || continue
      dest="$RUN/curve/$(basename "$ck" .ckpt).json"
      if [ "$ck" = "$BEST" ]; then cp "$OUT/real_speech_transfer.json" "$dest"; continue; fi
      score_real "$ck" "$dest" | tail -1
    done
    shopt -u nullglob
    tar czf "$OUT/curve.tgz" -C "$RUN/curve" .
    "$PY" - "$RUN"/curve/*.json <<'PYEOF'
import json, sys
print("[gpu-transfer] curve: checkpoint, real SI-SNRi, synthetic SI-SNRi, ratio")
for p in sys.argv[1:]:
    d = json.load(open(p))
    r, s = d["real"]["2spk"]["si_snri"], d["synthetic"]["si_snri"]
    print(f"  {p.rsplit('/', 1)[-1][:-5]:32s} {r:+6.2f} {s:+6.2f} {r / s if s else float('nan'):5.2f}")
PYEOF
  fi
  echo "[gpu-transfer] stage 2 done in $(($(date +%s) - T0)) s"
elif [ "$STAGE" = weights ]; then
  # The best checkpoint of stage 2 as a weights-only export (usgm-export), split into parts
  # under the 16 MiB a returned file may have; rejoin with `cat best_model.pt.part* > best_model.pt`.
  BEST=$(cat "$RUN/best_checkpoint.txt")
  "$PY" -c 'import sys; from usgm.evaluation.export import main; sys.exit(main(sys.argv[1:]))' \
    "$BEST" "$RUN/best_model.pt"
  split -b "${PART_BYTES:-15000000}" -d "$RUN/best_model.pt" "$OUT/best_model.pt.part"
  sha256sum "$RUN/best_model.pt" | tee "$OUT/best_model.sha256"
  echo "[gpu-transfer] weights of $BEST in $(ls "$OUT" | grep -c part) parts"
else
  echo "usage: gpu_transfer_run.sh bank|1|resume|2|weights" >&2
  exit 2
fi
