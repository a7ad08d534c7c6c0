"""``torch.compile`` captures the backbone as one graph (no breaks) and gives eager's outputs and
gradients, in inference and in training.

The four-stage model goes through ``aot_eager`` (Dynamo capture and AOTAutograd tracing, seconds);
inductor's C++ code generation costs minutes per stage on two cores, so it runs on a one-stage
model with padded, shifted windows.
"""
import pytest
import torch

from swinv2_backbone import Swinv2Backbone
from capabilities import needs_dynamo_records, needs_inductor_index_math
from kit import SMALL

ONE_STAGE = dict(SMALL, depths=(2,), num_heads=(2,))


def _model(**kwargs) -> Swinv2Backbone:
    torch.manual_seed(0)
    model = Swinv2Backbone(**kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _check_inference(model: Swinv2Backbone, x: torch.Tensor, backend: str) -> None:
    model.eval()
    # fullgraph: a graph break is an error; static shapes: each test compiles its own size.
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    with torch.no_grad():
        want = model(x)
        got = compiled(x)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _check_training(model: Swinv2Backbone, x: torch.Tensor, backend: str) -> None:
    model.train()
    sum(o.square().mean() for o in model(x)).backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    sum(o.square().mean() for o in compiled(x)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, want[name], rtol=1e-3, atol=1e-5, msg=name)


@needs_dynamo_records
@pytest.mark.parametrize("size", [(64, 64), (52, 76)])  # padded maps and shifted windows
def test_aot_eager_inference_equals_eager(size):
    _check_inference(_model(**SMALL), torch.randn(2, 3, *size), "aot_eager")


@needs_dynamo_records
def test_aot_eager_training_step_equals_eager():
    _check_training(_model(**SMALL), torch.randn(2, 3, 52, 76), "aot_eager")


@needs_inductor_index_math
def test_inductor_inference_and_training_equal_eager():
    x = torch.randn(2, 3, 40, 40)  # 10x10 tokens: padded to 12x12, shifted
    _check_inference(_model(**ONE_STAGE), x, "inductor")
    _check_training(_model(**ONE_STAGE), x, "inductor")
