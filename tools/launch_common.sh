# Sourced by dist_{train,test}.sh and slurm_{train,test}.sh: how each starts tools/train.py or
# tools/test.py under mmengine's own launchers. Not run on its own.
#   usage_unless MIN USAGE "$@"   exit 2 with USAGE unless at least MIN arguments were given
#   torchrun_tool TOOL NPROC ARGS...   torchrun with mmengine's 'pytorch' launcher;
#     NNODES, NODE_RANK, MASTER_ADDR and PORT configure multi-node runs
#   srun_tool TOOL PARTITION JOB_NAME ARGS...   srun, one task per GPU, mmengine's 'slurm'
#     launcher; GPUS (total, default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS
# PYTHON names the interpreter (default: python).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"

usage_unless() {
  local min=$1 usage=$2
  shift 2
  if [ $# -lt "$min" ]; then
    echo "usage: $usage" >&2
    exit 2
  fi
}

torchrun_tool() {
  local tool=$1 nproc=$2
  shift 2
  exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$nproc" \
    "$ROOT/tools/$tool" "$@" --launcher pytorch
}

srun_tool() {
  local tool=$1 partition=$2 job_name=$3 gpus_per_node=${GPUS_PER_NODE:-8}
  shift 3
  # shellcheck disable=SC2086  # SRUN_ARGS is a list of options
  exec srun -p "$partition" --job-name="$job_name" \
    --gres=gpu:"$gpus_per_node" --ntasks="${GPUS:-8}" --ntasks-per-node="$gpus_per_node" \
    --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "$PYTHON" -u "$ROOT/tools/$tool" "$@" --launcher slurm
}
