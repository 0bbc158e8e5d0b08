#!/usr/bin/env bash
# usage: [PYTHON=.venv/bin/python] tools/dist_train.sh CONFIG GPUS [train.py args...]
# Distributed training with torchrun, GPUS processes on this machine (CPU processes use gloo).
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT as in mmdet.
#
# Exit status: train.py's. 75 when training was preempted (SIGTERM: a checkpoint of the last
# finished iteration was written; continue with --resume), 130 when stopped by Ctrl-C (the same
# checkpoint), 1 when training stopped on an error, 2 for a bad argument or input. torchrun
# itself reports any failed worker as 1; the workers write their status to a file
# (MMFISH_EXIT_STATUS_FILE) and this script exits with it. A SIGTERM sent to this script alone
# is passed on to torchrun, which passes it to the workers; so is Ctrl-C in the terminal (a second
# Ctrl-C makes torchrun stop the workers with SIGTERM: they save the iteration and exit 75).
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }
case "${1:-}" in -h | --help) usage; exit 0 ;; esac
if [[ $# -lt 2 ]]; then usage >&2; exit 2; fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

MMFISH_EXIT_STATUS_FILE=$(mktemp "${TMPDIR:-/tmp}/mmfish-exit-status.XXXXXX")
export MMFISH_EXIT_STATUS_FILE
trap 'rm -f "$MMFISH_EXIT_STATUS_FILE"' EXIT

PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}" &
LAUNCHER=$!
# SIGTERM sent to this script is passed on to torchrun (twice is harmless: both are SIGTERM).
# Ctrl-C reaches torchrun from the terminal itself, and torchrun passes one SIGINT to the workers
# (they run in sessions of their own): passing it on again would make it a second Ctrl-C.
# `wait` returns when a trapped signal arrives, so wait again until torchrun has exited.
trap 'kill -TERM "$LAUNCHER" 2>/dev/null' TERM
trap ':' INT
STATUS=0
while true; do
    wait "$LAUNCHER"
    STATUS=$?
    kill -0 "$LAUNCHER" 2>/dev/null || break
done
if [[ $STATUS -ne 0 && -s $MMFISH_EXIT_STATUS_FILE ]]; then
    STATUS=$(head -n 1 "$MMFISH_EXIT_STATUS_FILE")
fi
exit "$STATUS"
