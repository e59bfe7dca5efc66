#!/usr/bin/env bash
# GPU checks and timings, from the repository root on a machine with a CUDA device:
#
#     bash benchmarks/gpu_checks.sh [LOG_DIR]          # default LOG_DIR: out/gpu_checks
#
# 1. the GPU tests (tests/test_gpu.py);
# 2. the README's main command on the GPU, in-process (runtime=serial);
# 3. the train stage's seconds per step on the GPU (the embedded model's last recipe; 16 images per step; without
#    deterministic kernels);
# 4. the quality figures of the embedded model computed on the GPU (compare data_engine/model/weights/quality.json);
# 5. seconds per image against SamAutomaticMaskGenerator on the GPU: the tiny model on the bundled
#    samples, and vit_b (random weights: speed only) on synthetic pictures of SA-1B's size (~1500x2250).
# Each step has its own time limit, so one that hangs does not take the others with it.
# PYTHON picks the interpreter (default python3); the project and its dependencies must import there.
set -u
LOG=${1:-out/gpu_checks}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu: a dry run where there is no GPU (slow: the quality step alone takes ~30 min)
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
status=0

step() {  # step NAME SECONDS CMD...: run CMD with a time limit, its output also in LOG/NAME.log
    local name=$1 limit=$2; shift 2
    echo "=== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" > >(tee "$LOG/$name.log") 2>&1
    local rc=$?
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" = 0 ] || status=1
}

train_speed() {  # train_speed NAME STEPS OVERRIDES...: mean seconds per step after the first 5
    local name=$1 steps=$2; shift 2
    step "train_$name" 90 "$PY" -m data_engine stage=train "train.data=[$LOG/synth]" runtime=serial \
        runtime.progress=false model.device="$DEVICE" train.steps="$steps" train.checkpoint_every="$steps" \
        output.dir="$LOG/train_$name" "$@"
    "$PY" - "$LOG/train_$name/loss_log.jsonl" "$name" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"train {sys.argv[2]}: {len(rows)} steps, {statistics.mean(r['seconds'] for r in rows[5:]):.3f} s/step "
      f"after the first 5; loss {rows[0]['loss']:.3f} -> {rows[-1]['loss']:.3f}")
EOF
}

"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null

step tests 180 "$PY" -m pytest -p no:cacheprovider -m gpu tests/test_gpu.py -v -rs --durations=0

step main_command 120 "$PY" -m data_engine runtime=serial runtime.progress=false model.device="$DEVICE" \
    output.dir="$LOG/auto"
cat "$LOG/auto/summary.json" 2>/dev/null && echo

RECIPE=(model.checkpoint=data_engine/model/weights/sam_tiny.pt train.init=pretrained train.masks_per_image=16
        train.box_prob=0.3 train.area_power=0 train.correction_clicks=1 train.iou_target=containing
        train.warmup_steps=10 train.lr=1e-4 seed=13)
step synth 60 "$PY" -m data_engine stage=synth synth.num_scenes=64 synth.seed=1 runtime=serial \
    runtime.progress=false output.dir="$LOG/synth"
train_speed run14_recipe 60 "${RECIPE[@]}" train.images_per_step=2
train_speed 16_images 30 "${RECIPE[@]}" train.images_per_step=16
train_speed nondeterministic 60 "${RECIPE[@]}" train.images_per_step=2 train.deterministic=false

step quality 180 "$PY" benchmarks/quality.py --clicks 3 --out "$LOG/quality_cuda.json"

step bench_tiny 120 "$PY" benchmarks/amg_vs_reference.py --device "$DEVICE" --limit 3 --repeats 1

"$PY" - "$LOG" <<'EOF'
import os, sys, cv2, torch
from segment_anything import sam_model_registry
from data_engine import synth
log = sys.argv[1]
torch.save(sam_model_registry["vit_b"]().state_dict(), f"{log}/vit_b_random.pth")
os.makedirs(f"{log}/big", exist_ok=True)
for i in range(2):
    cv2.imwrite(f"{log}/big/scene-{i}.png", synth.make_scene(7, i, 1500, 2250)["image"][:, :, ::-1])
EOF
step bench_vit_b 120 "$PY" benchmarks/amg_vs_reference.py --device "$DEVICE" --variant vit_b \
    --checkpoint "$LOG/vit_b_random.pth" --input "$LOG/big" --limit 2 --settings sam-defaults,open-filters

echo "gpu_checks: $([ $status = 0 ] && echo 'all steps passed' || echo 'SOME STEPS FAILED')"
exit $status
