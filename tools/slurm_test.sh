#!/usr/bin/env bash
# Evaluation on a SLURM cluster through srun and mmengine's 'slurm' launcher.
#   GPUS=8 bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py options...]
# GPUS (total, default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5) and SRUN_ARGS tune the job.
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
usage_unless 4 "$0 PARTITION JOB_NAME CONFIG CHECKPOINT [tools/test.py options...]" "$@"
PARTITION=$1 JOB_NAME=$2 CONFIG=$3 CHECKPOINT=$4
shift 4
srun_tool test.py "$PARTITION" "$JOB_NAME" "$CONFIG" "$CHECKPOINT" "$@"
