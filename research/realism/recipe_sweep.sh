#!/usr/bin/env bash
# Data-recipe sweep of the CPU default model, run on one GPU so that several recipes fit in
# one device call: each run trains experiment=default (the 0.65 M DPRNN+SE, fp32) for the number
# of steps the CPU job reaches in its 11 minutes (~4,100) or longer, all runs side by side on the
# GPU. The best checkpoints come back under $OUT; score them on the real-speech dev set on a
# machine that has it (research/realism/real_speech_transfer.py).
#
#   bash research/realism/recipe_sweep.sh               # on the device, carrying .whl and .rec
#
# .rec: the recorded-speech bank packed for a machine without apt (research/realism/pack_recorded.py;
# lossy, so not quite the default corpus), or BANK_PARTS: the exact bank (bank_transport.py).
# Environment: OUT (results), SWEEP (work dir, /tmp/sweep), RUNS (the run list, see below),
# DEADLINE_S (stop training this many seconds after the start, 500).
set -euo pipefail
T0=$(date +%s)
OUT=${OUT:-/tmp/sweep/out}
SWEEP=${SWEEP:-/tmp/sweep}
DEADLINE_S=${DEADLINE_S:-500}
mkdir -p "$OUT" "$SWEEP"
if [ -z "${NO_INSTALL:-}" ] && [ -d "${WHL_DIR:-.whl}" ] && [ ! -f /tmp/site/.usgm_installed ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "${WHL_DIR:-.whl}"/*.whl
  touch /tmp/site/.usgm_installed
fi
export PYTHONPATH=.:/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
REC=${REC:-.rec}
# The exact bank instead of the lossy .rec (research/realism/bank_transport.py): BANK_PARTS names this
# call's parts; parts staged by earlier calls (`gpu_transfer_run.sh bank` on the same warm
# machine) wait in its cache, /tmp/usgm_cache, which the sweep then uses too.
if [ -z "${BANK_PARTS:-}" ]; then
  export USGM_CACHE=$SWEEP/cache
else
  export USGM_CACHE=${USGM_CACHE:-/tmp/usgm_cache}
  read -r -a PARTS <<<"$BANK_PARTS"
  python3 research/realism/bank_transport.py unpack "${PARTS[@]}"
  REC=
fi
REC_ARGS=()
if [ -n "$REC" ]; then REC_ARGS=("data.generate.recorded_dir=$REC"); fi
# name:recorded_fraction:max_steps[:extra overrides separated by ,]; data.generate overrides
# among the extras give the run its own corpus
RUNS=${RUNS:-"r0:0:4100 r50:0.5:4100 r100:1.0:4100 r50p3:0.5:4100:model.scheduler.patience=3 r50long:0.5:14000 r100long:1.0:14000"}
TRAINER=${TRAINER:-gpu}

gen() {  # generate the corpus of one recorded_fraction, exactly as train.py would
  python3 - "$@" <<'PYEOF'
import os, sys, time
from hydra import compose, initialize_config_dir
from usgm.training.factory import ensure_default_data, register_resolvers
register_resolvers()
with initialize_config_dir(version_base="1.3", config_dir=os.path.abspath("conf")):
    cfg = compose("train", overrides=sys.argv[1:])
t = time.time()
ensure_default_data(cfg.data)
print(f"[sweep] generated {cfg.data.root} in {time.time() - t:.1f} s", flush=True)
PYEOF
}
data_args() {  # the run's data.generate overrides (they pick its corpus), comma-separated
  local out=() o
  IFS=, read -r -a all <<<"${1:-}"
  for o in "${all[@]}"; do case "$o" in data.generate.*|+data.generate.*) out+=("$o") ;; esac; done
  (IFS=,; echo "${out[*]}")
}
data_dir() {  # one corpus per recorded_fraction and set of data.generate overrides
  echo "$SWEEP/data/rf$1${2:+_$(echo "$2" | tr -c 'A-Za-z0-9.\n' _)}"
}
declare -A DONE_DATA=()
for spec in $RUNS; do
  IFS=: read -r name frac steps extra <<<"$spec"
  dargs=$(data_args "$extra")
  data=$(data_dir "$frac" "$dargs")
  if [ -z "${DONE_DATA[$data]:-}" ]; then
    IFS=, read -r -a more <<<"$dargs"
    gen experiment=default "data.root=$data" "data.generate.recorded_fraction=$frac" \
      "${REC_ARGS[@]}" "${more[@]}"
    DONE_DATA[$data]=1
  fi
done
LEFT=$((DEADLINE_S - ($(date +%s) - T0)))
echo "[sweep] data ready after $(($(date +%s) - T0)) s; training for at most $LEFT s"
pids=()
for spec in $RUNS; do
  IFS=: read -r name frac steps extra <<<"$spec"
  IFS=, read -r -a more <<<"${extra:-}"
  python3 train.py experiment=default "trainer=$TRAINER" trainer.precision=32 "task_name=sweep_$name" \
    "paths.log_dir=$SWEEP/logs" "data.root=$(data_dir "$frac" "$(data_args "$extra")")" \
    "data.generate.recorded_fraction=$frac" "${REC_ARGS[@]}" \
    "trainer.max_steps=$steps" "trainer.max_time=00:00:$(printf %02d:%02d $((LEFT / 60)) $((LEFT % 60)))" \
    callbacks.audio_examples.n_examples=0 "${more[@]}" > "$SWEEP/$name.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || echo "[sweep] a run failed (pid $p)"; done
python3 - "$SWEEP" "$OUT" $RUNS <<'PYEOF'
import glob, json, sys
sweep, out, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
summary = {}
for spec in runs:
    name = spec.split(":")[0]
    res = sorted(glob.glob(f"{sweep}/logs/sweep_{name}/runs/*/results.json"))
    if not res:
        summary[name] = {"error": open(f"{sweep}/{name}.log").read()[-1500:]}
        continue
    r = json.load(open(res[-1]))
    import torch
    best = r.get("best_checkpoint") or r.get("last_checkpoint")
    last = torch.load(r["last_checkpoint"], map_location="cpu", weights_only=False)
    summary[name] = {"spec": spec, "global_step": last.get("global_step"), **r}
    if best:  # without optimizer state, so that larger variants fit the device's 16 MiB per file
        ck = torch.load(best, map_location="cpu", weights_only=False)
        ck.pop("optimizer_states", None)
        torch.save(ck, f"{out}/{name}.ckpt")
json.dump(summary, open(f"{out}/sweep.json", "w"), indent=1, default=str)
print(json.dumps({k: {kk: v.get("metrics", {}).get(kk, v.get(kk)) for kk in ("test/si_snri", "val/si_snri", "global_step")}
                  for k, v in summary.items()}, indent=1, default=str))
PYEOF
echo "[sweep] done in $(($(date +%s) - T0)) s"
