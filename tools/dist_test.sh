#!/usr/bin/env bash
# Multi-process evaluation on one machine through torchrun and mmengine's 'pytorch' launcher.
#   bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py options...]
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
usage_unless 3 "$0 CONFIG CHECKPOINT NPROC [tools/test.py options...]" "$@"
CONFIG=$1 CHECKPOINT=$2 NPROC=$3
shift 3
torchrun_tool test.py "$NPROC" "$CONFIG" "$CHECKPOINT" "$@"
