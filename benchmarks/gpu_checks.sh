#!/usr/bin/env bash
# GPU checks and timings, from the repository root on a machine with a CUDA device (about 7 minutes on one H200, plus step 5):
#
#     bash benchmarks/gpu_checks.sh [LOG_DIR]          # default LOG_DIR: out/gpu_checks
#
# 1. the GPU tests (tests/test_gpu.py);
# 2. seconds per image against SamAutomaticMaskGenerator: the tiny model on the bundled samples (SAM's defaults);
# 3. vit_h with seeded random weights (speed only) on two synthetic pictures of SA-1B's release size (shortest
#    side 1500 px), the full SA-1B recipe (32x32 grid, 2 crop layers): the reference, amg=sa1b (exact) and
#    amg=sa1b_fast with its agreement with amg=sa1b (mean IoU of matched masks, images whose mask count differs,
#    masks found by one side only);
# 4. the automatic stage through Ray with GPU workers (runtime=local: one worker per GPU), vit_h, amg=sa1b_fast;
# 5. SAM 2.1: sam2.1_hiera_l (seeded weights) against SAM2AutomaticMaskGenerator on the 1500-px pictures (amg=sam2,
#    and with SA-1B's crop layers), and every model's encoder and decoder seconds (benchmarks/model_speed.py).
# ALL=1 also runs the train-stage and quality timings of docs/performance.md (about 10 more minutes).
# Each step has its own time limit, so one that hangs does not take the others with it.
# PYTHON picks the interpreter (default python3); the project and its dependencies must import there.
set -u
LOG=${1:-out/gpu_checks}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu: a dry run of the wiring where there is no GPU (very slow with vit_h)
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

"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null

step tests 100 "$PY" -m pytest -p no:cacheprovider -m gpu tests/test_gpu.py -v -rs --durations=0

step bench_tiny 45 "$PY" benchmarks/amg_vs_reference.py --device "$DEVICE" --images samples --limit 3 \
    --settings sam-defaults --points-per-side 32

# vit_h with seeded weights as a checkpoint file (for the stage), and the 1500-px pictures as files (for Ray)
step prepare 75 "$PY" - "$LOG" <<'EOF'
import os, sys, cv2, torch
sys.path.insert(0, "benchmarks")
from amg_vs_reference import sa1b_sized_scene
from data_engine.model.build import seeded_sam
log = sys.argv[1]
torch.save(seeded_sam("vit_h").state_dict(), f"{log}/vit_h_seeded.pth")
os.makedirs(f"{log}/big", exist_ok=True)
for i in range(4):
    cv2.imwrite(f"{log}/big/scene-{i}.png", sa1b_sized_scene(i)[:, :, ::-1])
EOF

step bench_vit_h 150 "$PY" benchmarks/amg_vs_reference.py --device "$DEVICE" --variant vit_h --images 1500 \
    --limit-1500 2 --settings sa1b --points-per-side 32 --crop-layers 2 --fast

step ray_gpu 110 "$PY" -m data_engine runtime=local runtime.progress=false model=vit_h \
    model.checkpoint="$LOG/vit_h_seeded.pth" model.device="$DEVICE" amg=sa1b_fast input.path="$LOG/big" \
    input.shard_size=2 output.overlays=0 output.dir="$LOG/ray_vit_h" output.overwrite=true
cat "$LOG/ray_vit_h/summary.json" 2>/dev/null && echo

step bench_sam2 240 "$PY" benchmarks/amg_vs_reference.py --family sam2 --device "$DEVICE" --variant sam2.1_hiera_l \
    --images 1500 --limit-1500 2 --settings sam2-defaults,crops --points-per-side 32 --crop-layers 2
step model_speed 240 "$PY" benchmarks/model_speed.py --device "$DEVICE" --repeats 3

if [ "${ALL:-0}" = 1 ]; then
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
    step main_command 120 "$PY" -m data_engine runtime=serial runtime.progress=false model.device="$DEVICE" \
        output.dir="$LOG/auto"
    RECIPE=(model.checkpoint=data_engine/model/weights/sam_tiny.pt train.init=pretrained train.masks_per_image=16
            train.box_prob=0.3 train.area_power=0 train.correction_clicks=1 train.iou_target=containing
            train.warmup_steps=10 train.lr=1e-4 seed=13)
    step synth 60 "$PY" -m data_engine stage=synth synth.num_scenes=64 synth.seed=1 runtime=serial \
        runtime.progress=false output.dir="$LOG/synth"
    train_speed run14_recipe 60 "${RECIPE[@]}" train.images_per_step=2
    train_speed 16_images 30 "${RECIPE[@]}" train.images_per_step=16
    train_speed nondeterministic 60 "${RECIPE[@]}" train.images_per_step=2 train.deterministic=false
    step quality 180 "$PY" benchmarks/quality.py --clicks 3 --out "$LOG/quality_cuda.json"
fi

echo "gpu_checks: $([ $status = 0 ] && echo 'all steps passed' || echo 'SOME STEPS FAILED')"
exit $status
