#!/usr/bin/env bash
# Multi-process training on one machine through torchrun and mmengine's 'pytorch' launcher:
# NCCL on GPUs, gloo on a CPU-only host (one process per GPU, or NPROC CPU processes).
#   bash tools/dist_train.sh CONFIG NPROC [train.py options...]
# NNODES, NODE_RANK, MASTER_ADDR and PORT configure multi-node runs.
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
usage_unless 2 "$0 CONFIG NPROC [tools/train.py options...]" "$@"
CONFIG=$1 NPROC=$2
shift 2
torchrun_tool train.py "$NPROC" "$CONFIG" "$@"
