#!/usr/bin/env bash
# Training on a SLURM cluster: srun starts one task per GPU and mmengine's 'slurm' launcher
# reads the SLURM_* variables.
#   GPUS=16 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options...]
# GPUS (total, default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5) and SRUN_ARGS tune the job.
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
usage_unless 4 "$0 PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py options...]" "$@"
PARTITION=$1 JOB_NAME=$2 CONFIG=$3 WORK_DIR=$4
shift 4
srun_tool train.py "$PARTITION" "$JOB_NAME" "$CONFIG" --work-dir="$WORK_DIR" "$@"
