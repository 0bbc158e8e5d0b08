#!/usr/bin/env bash
# usage: [GPUS=16] [PYTHON=.venv/bin/python] tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
# Training under Slurm (srun, one task per GPU).
#
# Preemption. On SIGTERM (what Slurm sends when it preempts or cancels a job, or at the time
# limit), mmfish configs finish the current iteration, write WORK_DIR/iter_<n>.pth and exit with
# status 75; `--resume` continues from the newest checkpoint (and starts afresh when there is
# none), so a job that Slurm requeues continues by itself. Submit it as a batch job that asks to
# be requeued and to get SIGTERM early enough to save (here 120 s before the time limit):
#
#   sbatch --requeue --signal=TERM@120 -p PARTITION --nodes=2 --ntasks-per-node=8 \
#       --gres=gpu:8 --cpus-per-task=5 \
#       --wrap "GPUS=16 tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR --resume"
#
# Without `B:`, --signal goes to every task, which is what training needs; with
# `--signal=B:TERM@120` only the batch shell gets it and must forward it to srun's tasks. Every
# process stops after the same iteration (they agree after each one) and the job ends with 75.
# A job ended that way on purpose (`scancel --signal=TERM JOBID`) is not requeued by Slurm; a
# batch script can do it with `[ $? -eq 75 ] && scontrol requeue "$SLURM_JOB_ID"`.
#
# Exit status: train.py's (75 preempted, 130 Ctrl-C, 1 a stop on an error, 2 a bad input). srun
# reports the highest status of its tasks, and a task that --kill-on-bad-exit killed counts as
# 128 + its signal; the tasks also write their status to ./.mmfish-exit-status.* (in the
# directory the script runs in, which every node must see, as the work dir; named by
# MMFISH_EXIT_STATUS_FILE) and this script exits with it.
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }
case "${1:-}" in -h | --help) usage; exit 0 ;; esac
if [[ $# -lt 4 ]]; then usage >&2; exit 2; fi
set -x

PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PY_ARGS=${@:5}
PYTHON=${PYTHON:-python}

MMFISH_EXIT_STATUS_FILE=$(mktemp "${PWD}/.mmfish-exit-status.XXXXXX")
export MMFISH_EXIT_STATUS_FILE
trap 'rm -f "$MMFISH_EXIT_STATUS_FILE"' EXIT

PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    --gres=gpu:"${GPUS_PER_NODE}" \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$(dirname "$0")/train.py" "${CONFIG}" --work-dir="${WORK_DIR}" --launcher="slurm" ${PY_ARGS}
STATUS=$?
if [[ $STATUS -ne 0 && -s $MMFISH_EXIT_STATUS_FILE ]]; then
    STATUS=$(head -n 1 "$MMFISH_EXIT_STATUS_FILE")
fi
exit "$STATUS"
