#!/usr/bin/env bash
# Makes the embedded tiny model, data_engine/model/weights/sam_tiny.pt: the synthetic training scenes, then
# the thirteen training runs that made it, each from the previous run's weights.
#   jobs/train_tiny.sh                     # about 12.7 hours on a 2-core CPU (data_engine/model/weights/MODEL_CARD.md)
#   OUT=/scratch/tiny jobs/train_tiny.sh   # another output folder
# Safe to stop and rerun: the data stage resumes shard by shard, a stopped run continues from its last
# checkpoint, and a finished run only writes its model.pt again.
# DATA_ENGINE names the command to run (default: data-engine); the tests set it to record the commands.
set -euo pipefail
OUT=${OUT:-out}
DATA_ENGINE=${DATA_ENGINE:-data-engine}

# The recipe every run shares
COMMON=(stage=train "train.data=[$OUT/synth_train]" train.images_per_step=2 train.masks_per_image=16
        train.box_prob=0.3 train.area_power=0 train.correction_clicks=1 train.num_threads=2)

# Run N: its settings, then continue from the weights of the run named by FROM
train_run() {
  local n=$1 from=$2
  shift 2
  local start=(train.init=scratch)
  [ "$from" = none ] || start=(train.init=pretrained "model.checkpoint=$OUT/train_tiny_$from/model.pt")
  "$DATA_ENGINE" "${COMMON[@]}" "${start[@]}" "$@" "output.dir=$OUT/train_tiny_$n"
}

"$DATA_ENGINE" stage=synth synth.num_scenes=4000 synth.seed=1 "output.dir=$OUT/synth_train"  # ~2 min

# Cycles of one cosine schedule each, all 3 IoU predictions trained against the drawn mask
train_run 1 none train.steps=3000 train.supervise_all_iou=true train.warmup_steps=200 train.lr=6e-4 seed=0
train_run 2 1 train.steps=4500 train.supervise_all_iou=true train.warmup_steps=100 train.lr=3e-4 seed=1
train_run 3 2 train.steps=4000 train.supervise_all_iou=true train.warmup_steps=100 train.lr=2e-4 seed=2
train_run 4 3 train.steps=3000 train.supervise_all_iou=true train.warmup_steps=100 train.lr=1.5e-4 seed=3
for n in 5 6 7 8 9; do
  train_run $n $((n - 1)) train.steps=3000 train.supervise_all_iou=true train.warmup_steps=100 train.lr=1e-4 seed=$((n - 1))
done
for n in 10 11; do
  train_run $n $((n - 1)) train.steps=1500 train.supervise_all_iou=true train.warmup_steps=100 train.lr=1e-4 seed=$((n - 1))
done
# The IoU head trained on the best output only, then scored against any mask holding the point
train_run 12 11 train.steps=1000 train.supervise_all_iou=false train.warmup_steps=100 train.lr=1e-4 seed=11
train_run 14 12 train.steps=500 train.supervise_all_iou=false train.iou_target=containing \
  train.warmup_steps=100 train.lr=1e-4 seed=13

echo "done: $OUT/train_tiny_14/model.pt (copy it to data_engine/model/weights/sam_tiny.pt to embed it)"
