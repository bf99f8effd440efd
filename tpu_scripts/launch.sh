#!/usr/bin/env bash
# Run a zoomiqa command on every host of a Cloud TPU VM pod.
#
#   tpu_scripts/launch.sh TPU_NAME ZONE [--project P] -- zoomiqa train sft --config configs/...
#
# Packs this working tree (without .git and runs/), copies it to every worker, installs jax[tpu] and the project
# there, and starts the same command on all workers at once. JAX's multi-host start-up finds the pod on its own
# (jax.distributed.initialize() with no arguments on Cloud TPU); each host then feeds its shard of the batch and
# only process 0 writes logs and checkpoints' metadata.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,9p' "$0"; exit 2
fi
TPU=$1; ZONE=$2; shift 2
PROJECT_FLAG=()
if [ "${1:-}" = "--project" ]; then PROJECT_FLAG=(--project "$2"); shift 2; fi
if [ "${1:-}" != "--" ]; then echo "launch.sh: expected -- before the command" >&2; exit 2; fi
shift
CMD=$(printf '%q ' "$@")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PKG=$(mktemp -d)/zoomiqa.tgz
tar czf "$PKG" -C "$ROOT" --exclude=.git --exclude=runs --exclude='*.egg-info' .
gcloud compute tpus tpu-vm scp "$PKG" "$TPU":zoomiqa.tgz --zone "$ZONE" --worker=all "${PROJECT_FLAG[@]}"
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all "${PROJECT_FLAG[@]}" --command \
  "set -e; mkdir -p ~/zoomiqa-jax && tar xzf ~/zoomiqa.tgz -C ~/zoomiqa-jax && cd ~/zoomiqa-jax && \
   python3 -m pip install -q -U 'jax[tpu]' && python3 -m pip install -q -e . && $CMD"
