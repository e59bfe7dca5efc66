#!/usr/bin/env bash
# Submit a fully-automatic run to a running Ray cluster (dashboard on port 8265).
#   RAY_ADDRESS=http://HEAD:8265 jobs/ray_job_submit.sh /shared/images /shared/out /shared/sam_vit_h_4b8939.pth
# Paths must be on storage every node sees. Extra arguments are passed on as Hydra overrides.
# The cluster's Python environment needs the dependencies (pip install -c constraints.txt .); the
# project's code itself travels with --working-dir, which Ray puts on every worker's import path.
set -euo pipefail
IMAGES=${1:?usage: $0 IMAGES OUT CHECKPOINT [overrides...]}
OUT=${2:?output dir on shared storage}
CKPT=${3:?SAM checkpoint path on shared storage}
shift 3
: "${RAY_ADDRESS:?set RAY_ADDRESS=http://HEAD:8265}"

ray job submit --address "$RAY_ADDRESS" --working-dir "$(dirname "$0")/.." \
  --runtime-env-json '{"excludes": [".venv", "out", ".git", "tests/data"]}' -- \
  python -m data_engine stage=auto runtime=ray_cluster \
    input.path="$IMAGES" output.dir="$OUT" model=vit_h model.checkpoint="$CKPT" "$@"
