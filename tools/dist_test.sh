#!/usr/bin/env bash
# Evaluate on several processes with torchrun.
#   bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py options]
set -euo pipefail
CONFIG=${1:?usage: tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [options]}
CHECKPOINT=${2:?usage: tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [options]}
NPROC=${3:?usage: tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [options]}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" "$HERE/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
