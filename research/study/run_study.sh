#!/usr/bin/env bash
# The gradient-modulation study (issue 23) in one command, rerun until it is done:
#
#   bash research/study/run_study.sh            # each device call the same (see README.md)
#
# One call: install the carried wheels (.whl) → generate the study corpus once (data.root of
# experiment=study; needs the recorded-speech copy .rec in the call that generates it) → train the
# grid of conf/hparams_search/gm_study.yaml (seed-major, PARALLEL runs side by side on the one
# GPU, each in its fixed folder $STUDY_DIR/<method>_s<seed>) until DEADLINE_S after the start,
# then SIGTERM: every run saves checkpoints/last.ckpt and the next call resumes it
# (ckpt_path=last); a run with results.json is finished and never trained again → evaluate every
# finished run not yet evaluated: the real-speech dev set (eval_real.py → eval/real2mix_dev/)
# and, with EVAL_TEST=1, the study corpus's test split with evaluate.py (SI-SNRi and SDRi →
# eval/test/) → usgm-compare over $STUDY_DIR into $OUT (summary.md/.csv, runs.csv, PNGs) and
# $OUT/study_files.tgz (every run's small files: results, metrics CSVs, evaluations, configs).
# Every step is idempotent: rerunning the same command continues where the last call stopped.
#
# Stages: `run_study.sh [all|train|eval|compare]` (default all: every stage, in this order).
#
# Environment (defaults in brackets):
#   PYTHON [python3]; USGM_STUDY_DIR [logs/study/multiruns/gm_study]; STUDY_DATA
#   [data/study_2mix]; MIX_DIR, the built real-speech set [data/real_speech/mix]; OUT [the study
#   dir + _out]; REC_DIR, packed recorded speech for a machine without apt [.rec where present];
#   DEADLINE_S, seconds after the start at which training is stopped [450]; CALL_LIMIT, seconds
#   after the start by which the whole call must be done [590]; MIN_START_S, the least training
#   time for which a run is started [60]; PARALLEL, runs side by side [5]; METHODS / SEEDS
#   (space-separated) [the grid of gm_study.yaml]; EVAL_TEST [1]; MAX_FAILS, crashes after which
#   a run is left alone [2]; STUDY_OVERRIDES, extra Hydra overrides for training (space-separated);
#   STUDY_TINY=1, a CPU dry run with a tiny model and corpus (what the tests run; with
#   REAL_SMOKE_SPEECH=DIR the real-speech set is a tiny stand-in built from DIR);
#   STUDY_NO_INSTALL=1 skips the wheel install; WHL_DIR [.whl].
set -uo pipefail  # no -e: one failing run must not stop the others
T0=$(date +%s)
cd "$(dirname "$0")/../.." || exit 2
STAGE=${1:-all}
PY=${PYTHON:-python3}
STUDY_DIR=${USGM_STUDY_DIR:-logs/study/multiruns/gm_study}
export USGM_STUDY_DIR=$STUDY_DIR  # hparams_search=gm_study's sweep dir, should anyone use it
DATA=${STUDY_DATA:-data/study_2mix}
MIX_DIR=${MIX_DIR:-data/real_speech/mix}
OUT=${OUT:-${STUDY_DIR%/}_out}
DEADLINE_S=${DEADLINE_S:-450}
CALL_LIMIT=${CALL_LIMIT:-590}
MIN_START_S=${MIN_START_S:-60}
PARALLEL=${PARALLEL:-5}
EVAL_TEST=${EVAL_TEST:-1}
MAX_FAILS=${MAX_FAILS:-2}
export PYTHONUNBUFFERED=1
mkdir -p "$STUDY_DIR" "$OUT"
say() { echo "[study $(($(date +%s) - T0))s] $*"; }
left() { echo $(($1 - ($(date +%s) - T0))); }
main() {
say "stage $STAGE start $(date -u +%FT%TZ) on $(hostname); study dir $STUDY_DIR"

# ---- wheels (the device image lacks hydra, soundfile, espeakng-loader, torchjd, ...) --------
if [ -z "${STUDY_NO_INSTALL:-}" ] && [ -d "${WHL_DIR:-.whl}" ] && [ ! -f /tmp/site/.usgm_installed ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "${WHL_DIR:-.whl}"/*.whl && touch /tmp/site/.usgm_installed
fi
[ -d /tmp/site ] && export PYTHONPATH=.:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export USGM_CACHE=${USGM_CACHE:-/tmp/usgm_cache}

# ---- the grid and the training overrides ------------------------------------------------------
grid() {  # key of gm_study.yaml's sweeper params → its values, space-separated
  "$PY" -c 'import sys; from omegaconf import OmegaConf as O
print(str(O.load("conf/hparams_search/gm_study.yaml").hydra.sweeper.params[sys.argv[1]]).replace(",", " "))' "$1"
}
read -r -a SEED_LIST <<<"${SEEDS:-$(grid seed)}"
read -r -a METHOD_LIST <<<"${METHODS:-$(grid model.method)}"
COMMON=(experiment=study "data.root=$DATA")
REC_DIR=${REC_DIR:-.rec}
[ -d "$REC_DIR" ] && COMMON+=("data.generate.recorded_dir=$REC_DIR")
if [ -n "${STUDY_TINY:-}" ]; then
  COMMON+=(trainer=cpu trainer.precision=32 trainer.max_steps=4 trainer.val_check_interval=2
           callbacks.last_checkpoint.every_n_train_steps=2 data.num_workers=0 data.pin_memory=false
           data.segment=0.5 data.batch_size=2 data.max_valid=2 data.max_test=2 data.validate=none
           data.generate.n_train=12 data.generate.n_dev=3 data.generate.n_test=3
           model.net.n_filters=16 model.net.d_model=16 model.net.n_heads=2 model.net.d_ffn=32
           model.net.chunk_size=10 "model.net.ss={n_blocks: 1, n_intra: 1, n_inter: 1}"
           callbacks.audio_examples.n_examples=1 trainer.enable_model_summary=false)
  DEVICE=cpu
else
  COMMON+=(trainer=gpu)
  DEVICE=cuda
fi
read -r -a EXTRA <<<"${STUDY_OVERRIDES:-}"
COMMON+=("${EXTRA[@]}")

run_dir() { echo "$STUDY_DIR/$1_s$2"; }
is_done() { [ -f "$1/results.json" ]; }
fails() { [ -f "$1/failures" ] && wc -l <"$1/failures" || echo 0; }

# ---- the corpus, once (before the runs: parallel runs must not all generate it) ---------------
generate() {
  [ -f "$DATA/DONE" ] && return 0
  say "generating the study corpus into $DATA"
  "$PY" - "${COMMON[@]}" <<'PYEOF'
import os, sys, time
from hydra import compose, initialize_config_dir
from usgm.training.factory import ensure_default_data, register_resolvers
register_resolvers()
with initialize_config_dir(version_base="1.3", config_dir=os.path.abspath("conf")):
    cfg = compose("train", overrides=[o for o in sys.argv[1:] if not o.startswith("trainer")])
t = time.time()
ensure_default_data(cfg.data)
print(f"[study] generated {cfg.data.root} in {time.time() - t:.1f} s", flush=True)
PYEOF
}

train_one() {  # method seed seconds: one run until done or SIGTERM at the deadline
  local m=$1 s=$2 secs=$3 dir rc
  dir=$(run_dir "$m" "$s")
  local args=("${COMMON[@]}" "model.method=$m" "seed=$s" "hydra.run.dir=$dir")
  [ -f "$dir/checkpoints/last.ckpt" ] && args+=(ckpt_path=last)
  mkdir -p "$dir"
  echo "=== $(date -u +%FT%TZ) train for at most ${secs}s: ${args[*]}" >>"$dir/driver.out"
  timeout -s TERM -k 120 "$secs" "$PY" train.py "${args[@]}" >>"$dir/driver.out" 2>&1
  rc=$?
  case $rc in
    0) say "$m seed $s: finished" ;;
    124 | 143) say "$m seed $s: stopped at the deadline (resumes next call)" ;;
    *) echo "$(date -u +%FT%TZ) exit $rc" >>"$dir/failures"
       say "$m seed $s: FAILED (exit $rc; see $dir/driver.out)" ;;
  esac
}

train_all() {
  local s m dir secs
  for s in "${SEED_LIST[@]}"; do
    for m in "${METHOD_LIST[@]}"; do
      dir=$(run_dir "$m" "$s")
      if is_done "$dir"; then say "$m seed $s: done, skipped"; continue; fi
      if [ "$(fails "$dir")" -ge "$MAX_FAILS" ]; then
        say "$m seed $s: failed $MAX_FAILS times, left alone"; continue
      fi
      while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n; done
      secs=$(left "$DEADLINE_S")
      if [ "$secs" -lt "$MIN_START_S" ]; then say "no time left to start $m seed $s"; break 2; fi
      say "$m seed $s: training (${secs}s left)"
      train_one "$m" "$s" "$secs" &
    done
  done
  wait
}

eval_one() {  # run dir: the real-speech set and (EVAL_TEST=1) the test split, each once
  local dir=$1 secs ckpt
  secs=$(left "$((CALL_LIMIT - 30))")
  if [ -f "$MIX_DIR/real2mix_dev/manifest.json" ] || [ -n "${REAL_SMOKE_SPEECH:-}" ]; then
    local smoke=()
    [ -n "${REAL_SMOKE_SPEECH:-}" ] && smoke=(-- --smoke --speech-dir "$REAL_SMOKE_SPEECH")
    timeout -s TERM "$secs" "$PY" research/study/eval_real.py "$dir" --mix-dir "$MIX_DIR" \
      --device "$DEVICE" "${smoke[@]}" >>"$dir/eval.out" 2>&1 ||
      say "$(basename "$dir"): real-speech scoring failed (see $dir/eval.out)"
  else
    say "no real-speech set at $MIX_DIR/real2mix_dev: carry it (README) — $(basename "$dir") not scored on it"
  fi
  if [ "$EVAL_TEST" = 1 ] && [ ! -f "$dir/eval/test/final_metrics.json" ]; then
    ckpt=$("$PY" -c 'import sys; sys.path.insert(0, "research/study"); import eval_real
print(eval_real.checkpoint_of(__import__("pathlib").Path(sys.argv[1])))' "$dir") || return 0
    local tiny=()
    [ -n "${STUDY_TINY:-}" ] && tiny=(data.max_test=2 data.num_workers=0)
    secs=$(left "$((CALL_LIMIT - 30))")
    timeout -s TERM "$secs" "$PY" evaluate.py "ckpt_path=$ckpt" "data.root=$DATA" data.n_src=2 \
      "results_dir=$dir/eval/test" "hydra.run.dir=$dir/eval/test" eval.progress=false \
      "eval.device=$DEVICE" "${tiny[@]}" >>"$dir/eval.out" 2>&1 ||
      say "$(basename "$dir"): test-split evaluation failed (see $dir/eval.out)"
  fi
}

eval_all() {
  local dir
  for dir in "$STUDY_DIR"/*_s*/; do
    dir=${dir%/}
    is_done "$dir" || continue
    if [ -f "$dir/eval/real2mix_dev/final_metrics.json" ] &&
       { [ "$EVAL_TEST" != 1 ] || [ -f "$dir/eval/test/final_metrics.json" ]; }; then
      continue
    fi
    while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n; done
    if [ "$(left "$((CALL_LIMIT - 30))")" -lt 30 ]; then say "no time left to evaluate more"; break; fi
    say "evaluating $(basename "$dir")"
    if [ ! -f "$MIX_DIR/real2mix_dev/manifest.json" ] && [ -n "${REAL_SMOKE_SPEECH:-}" ]; then
      eval_one "$dir"  # the first evaluation builds the stand-in set: never two builders at once
    else
      eval_one "$dir" &
    fi
  done
  wait
}

compare() {
  "$PY" -c 'import sys; from usgm.cli import compare; sys.exit(compare(sys.argv[1:]))' \
    "$STUDY_DIR" --out "$OUT" >"$OUT/compare.txt" 2>&1
  local rc=$?
  cat "$OUT/compare.txt"
  # every run's small files in one archive (a device call returns at most 8 files)
  (cd "$STUDY_DIR" && find . \( -name results.json -o -name metrics.csv -o -name '*.out' \
      -o -name failures -o -name '*.yaml' -o -name '*.json' \) -not -path '*/checkpoints/*' \
      -print0 | tar czf - --null -T -) >"$OUT/study_files.tgz"
  rm -f "$OUT/compare.txt"
  return $rc
}

case $STAGE in
  all) generate && train_all; eval_all; compare ;;
  train) generate && train_all ;;
  eval) eval_all ;;
  compare) compare ;;
  *) echo "usage: run_study.sh [all|train|eval|compare]" >&2; exit 2 ;;
esac
RC=$?
n_done=0; n_all=0
for s in "${SEED_LIST[@]}"; do for m in "${METHOD_LIST[@]}"; do
  n_all=$((n_all + 1)); is_done "$(run_dir "$m" "$s")" && n_done=$((n_done + 1))
done; done
say "$n_done of $n_all runs finished; stage $STAGE done in $(($(date +%s) - T0)) s"
[ "$n_done" -lt "$n_all" ] && say "NOT COMPLETE: run the same command again (next call)"
return $RC
}
# a pipeline, not exec > >(tee): `wait` would wait for the process substitution too
main 2>&1 | tee -a "$OUT/study.log"
exit "${PIPESTATUS[0]}"
