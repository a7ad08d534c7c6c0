"""What the running torch can do, for the tests whose subject an older supported torch lacks.

Such a test is skipped there with the reason (reported as skipped, never as passed); CI runs the suite
on the oldest supported torch (2.1) and on the pinned newest, so each of these runs somewhere.
"""
import pytest
import torch
import torch.distributed.fsdp as fsdp
import torch.nn.functional as F

from swinv2_backbone.compat import TORCH_RELEASE
from swinv2_backbone.deploy.tracing import EXPORT_RELEASE


def _cpu_fp16() -> bool:
    """fp16 convolution, matmul and autocast on the CPU (torch 2.1 has none of them)."""
    half = torch.ones(1, 1, 2, 2, dtype=torch.float16)
    try:
        F.conv2d(half, half)
        half.view(2, 2) @ half.view(2, 2)
        with torch.autocast("cpu", dtype=torch.float16):
            pass
    except RuntimeError:
        return False
    return True


def _cpu_fsdp() -> bool:
    """FSDP on CPU processes (``device_id=cpu``); torch 2.1's FSDP needs CUDA streams."""
    return TORCH_RELEASE >= (2, 4)


CPU_FP16 = _cpu_fp16()
needs_cpu_fp16 = pytest.mark.skipif(
    not CPU_FP16, reason=f"torch {torch.__version__} has no fp16 CPU kernels (convolution, matmul, autocast)")
needs_cpu_fsdp = pytest.mark.skipif(
    not _cpu_fsdp(), reason=f"torch {torch.__version__}'s FSDP needs CUDA (Stream() on CPU fails)")
needs_fully_shard = pytest.mark.skipif(
    not hasattr(fsdp, "fully_shard"),
    reason=f"torch {torch.__version__} has no torch.distributed.fsdp.fully_shard (FSDP2, torch 2.6)")
needs_inductor_index_math = pytest.mark.skipif(
    TORCH_RELEASE < (2, 2),
    reason=f"torch {torch.__version__}'s inductor fails on the backbone's window index arithmetic "
           "(sympy PolynomialError: non-commutative expressions); eager works")
needs_dynamo_records = pytest.mark.skipif(
    TORCH_RELEASE < (2, 2),
    reason=f"torch {torch.__version__}'s dynamo cannot build the kernels' frozen dataclass records "
           "(AttentionArgs, BlockParts) in a graph; eager works")
needs_dynamic_export = pytest.mark.skipif(
    TORCH_RELEASE < EXPORT_RELEASE,
    reason=f"torch {torch.__version__}'s torch.export cannot trace a range of sizes (needs "
           f"{'.'.join(map(str, EXPORT_RELEASE))}); test_deploy checks the refusal there")
