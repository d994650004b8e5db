#!/usr/bin/env bash
# DDP checks on a 2-GPU machine, in one call:
#   1. one `gm` step on 2 GPUs (DDP, NCCL) vs. one step on 1 GPU over the concatenated batch;
#   2. training throughput of the paper-size model with `gm` on 1 and 2 GPUs (scaling efficiency);
#   3. a 2-GPU train.py run killed mid-epoch resumes from last.ckpt.
# Results go to $OUT (or ./ddp_gpu_results). Carry `.whl` (bash ../shared/tools/device-wheels.sh,
# plus scipy and espeakng-loader wheels) and run from the repo root:
#   bash benchmarks/ddp_gpu_check.sh
set -uo pipefail
# NVLink multicast stays off on shared hosts (see the device tool's KINDS.md).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1
OUT=${OUT:-ddp_gpu_results}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=.:/tmp/site
else
  export PYTHONPATH=.
fi
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpus.txt"

echo "== 1. equivalence (paper size, fp32 and bf16) =="
for prec in 32 bf16-mixed; do
  python3 benchmarks/ddp_gm_equivalence.py --mode single --accelerator gpu --size paper \
    --batch 2 --length 32000 --lr 1e-3 --precision "$prec" --out "$OUT/single_$prec.pt"
  python3 benchmarks/ddp_gm_equivalence.py --mode ddp --devices 2 --accelerator gpu --size paper \
    --batch 2 --length 32000 --lr 1e-3 --precision "$prec" --out "$OUT/ddp_$prec.pt"
  tol="--rtol 1e-4 --atol 1e-6"; [ "$prec" = "32" ] || tol="--rtol 2e-2 --atol 1e-4"
  python3 benchmarks/ddp_gm_equivalence.py --compare "$OUT/single_$prec.pt" "$OUT/ddp_$prec.pt" \
    $tol | tee "$OUT/equivalence_$prec.json"
  rm -f "$OUT/single_$prec.pt" "$OUT/ddp_$prec.pt"
done

echo "== 2. throughput 1 vs 2 GPUs =="
for dev in 1 2; do
  python3 benchmarks/train_throughput.py --size paper --method gm --precision bf16-mixed \
    --devices "$dev" --batch 8 --seconds 4 --warmup 3 --steps 15 \
    --out "$OUT/throughput_$dev" 2>&1 | grep audio_s_per_s
  cat "$OUT/throughput_$dev/train_throughput.jsonl" >> "$OUT/throughput.jsonl"
done
python3 - "$OUT/throughput.jsonl" <<'EOF' | tee "$OUT/scaling.json"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
one = next(r for r in rows if r["devices"] == 1)["audio_s_per_s"]
two = next(r for r in rows if r["devices"] == 2)["audio_s_per_s"]
print(json.dumps({"audio_s_per_s_1gpu": one, "audio_s_per_s_2gpu": two,
                  "scaling_efficiency": two / (2 * one)}))
EOF

echo "== 3. kill mid-epoch, resume =="
python3 -m usgm.data.synth.cli --out /tmp/ddp_data --n-train 400 --n-dev 20 --n-test 20 --quiet \
  --recorded-fraction 0   # eSpeak only: the device has no apt for the recorded speech
RUN=/tmp/ddp_run
common=(experiment=default trainer=ddp trainer.devices=2 data.root=/tmp/ddp_data
  data.generate=null trainer.max_epochs=3 trainer.limit_val_batches=4 test=false
  callbacks.last_checkpoint.every_n_train_steps=10 trainer.enable_progress_bar=false)
setsid python3 train.py "${common[@]}" hydra.run.dir=$RUN > "$OUT/killed_run.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  python3 - "$RUN/checkpoints/last.ckpt" <<'EOF' && break
import sys, torch
try:
    s = torch.load(sys.argv[1], weights_only=True, map_location="cpu")
except Exception:
    sys.exit(1)
sys.exit(0 if s["global_step"] >= 20 else 1)
EOF
  sleep 1
done
kill -9 -- -"$pid" 2>/dev/null; sleep 2
python3 train.py "${common[@]}" hydra.run.dir=${RUN}_resumed ckpt_path=$RUN/checkpoints/last.ckpt \
  > "$OUT/resumed_run.log" 2>&1
echo "resume exit code: $?" | tee "$OUT/resume.txt"
python3 - "$RUN/checkpoints/last.ckpt" "${RUN}_resumed/checkpoints/last.ckpt" <<'EOF' | tee -a "$OUT/resume.txt"
import json, sys, torch
a = torch.load(sys.argv[1], weights_only=True, map_location="cpu")
b = torch.load(sys.argv[2], weights_only=True, map_location="cpu")
print(json.dumps({"killed_at_step": a["global_step"], "killed_at_epoch": a["epoch"],
                  "resumed_final_step": b["global_step"], "resumed_final_epoch": b["epoch"]}))
EOF
