#!/usr/bin/env bash
# Train on several processes of one or more hosts with torchrun (DDP through MMEngine's pytorch launcher).
#   bash tools/dist_train.sh CONFIG NUM_PROCS [train.py options]
# Several hosts: NNODES, NODE_RANK, MASTER_ADDR and PORT as for torchrun. Without a GPU the processes use gloo.
set -euo pipefail
CONFIG=${1:?usage: tools/dist_train.sh CONFIG NUM_PROCS [options]}
NPROC=${2:?usage: tools/dist_train.sh CONFIG NUM_PROCS [options]}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" "$HERE/train.py" "$CONFIG" --launcher pytorch "${@:3}"
