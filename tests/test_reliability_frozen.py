"""Reliability of ``frozen_stages``: frozen parts receive no update across real optimizer steps
(weights bit-equal, momentum and weight decay included), stay in eval mode (no dropout, no stochastic
depth) through ``train()`` / ``eval()`` switches, and the rest of the model does train."""
from __future__ import annotations

from typing import Callable, Dict, List

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from torch import nn

from swinv2_backbone import Swinv2Backbone
from kit import TINY

NUM_STAGES = 4
#: Stochastic layers on, so a frozen part that is not in eval mode shows up as changing outputs.
CFG = dict(TINY, depths=(2, 2, 2, 2), drop_rate=0.2, attn_drop_rate=0.2, drop_path_rate=0.3,
           use_abs_pos_embed=True, pretrain_img_size=32,
           out_features=("stem", "stage1", "stage2", "stage3", "stage4"))
FROZEN = [-1, 0, 1, 2, 3, 4]


pytestmark = pytest.mark.usefixtures("one_thread")


def build(frozen_stages: int) -> Swinv2Backbone:
    """The stochastic tiny backbone with ``frozen_stages``, same initialisation every time."""
    torch.manual_seed(0)
    return Swinv2Backbone(**CFG, frozen_stages=frozen_stages)


def frozen_prefixes(frozen_stages: int) -> List[str]:
    """Names of what ``frozen_stages`` freezes: the stem (patch embedding, absolute position
    embedding and the dropout after it, as mmdet's Swin does) for >= 0, then stages 1..k with their
    output norms."""
    if frozen_stages < 0:
        return []
    stem = ["patch_embed", "absolute_pos_embed", "pos_drop"]
    return stem + [n for i in range(frozen_stages) for n in (f"layers.{i}", f"norm{i}")]


def is_frozen(name: str, frozen_stages: int) -> bool:
    """Whether the parameter or module ``name`` belongs to the frozen part."""
    return any(name == p or name.startswith(p + ".") for p in frozen_prefixes(frozen_stages))


def sgd(params) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum and weight decay (both move weights without fresh gradients)."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)


def adamw(params) -> torch.optim.Optimizer:
    """AdamW with decoupled weight decay."""
    return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.05)


def mmengine_adamw(model: nn.Module):
    """The mmdet/mmseg Swin recipe: mmengine OptimWrapper, AdamW, no decay on norms / position embed."""
    return build_optim_wrapper(model, dict(
        optimizer=dict(type="AdamW", lr=1e-2, weight_decay=0.05),
        paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={"absolute_pos_embed": dict(decay_mult=0.0)})))


class WithHead(nn.Module):
    """The backbone under a trainable 1x1-conv head per output, as in a detector or segmentor (so a
    fully frozen backbone still has a loss to optimise).

    Args:
        backbone: The backbone under test.
    """

    def __init__(self, backbone: Swinv2Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in backbone.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(head(o).square().mean() for head, o in zip(self.heads, self.backbone(x)))


def train_steps(backbone: Swinv2Backbone, make_optim: Callable, steps: int = 3) -> None:
    """``steps`` optimizer steps of backbone + head, toggling ``eval()`` / ``train()`` in between."""
    model = WithHead(backbone)
    if make_optim is mmengine_adamw:
        step = mmengine_adamw(model).update_params
    else:
        optim = make_optim(model.parameters())

        def step(loss: torch.Tensor) -> None:
            optim.zero_grad()
            loss.backward()
            optim.step()
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        model.train()
        step(model(torch.randn(2, 3, 45, 37, generator=gen)))
        model.eval()
        model.train()


@pytest.mark.parametrize("make_optim", [sgd, adamw, mmengine_adamw], ids=["sgd", "adamw", "mmengine"])
@pytest.mark.parametrize("frozen_stages", FROZEN)
def test_frozen_weights_are_bit_equal_after_optimizer_steps(frozen_stages, make_optim):
    model = build(frozen_stages)
    before: Dict[str, torch.Tensor] = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(model, make_optim)
    unchanged: List[str] = []
    for name, p in model.named_parameters():
        if is_frozen(name, frozen_stages):
            assert torch.equal(p, before[name]), f"frozen {name} was updated"
            assert not p.requires_grad and p.grad is None, name
        elif torch.equal(p, before[name]):
            unchanged.append(name)
    assert not unchanged, f"trainable parameters that did not train: {unchanged[:5]}"


@pytest.mark.parametrize("frozen_stages", FROZEN)
def test_frozen_modules_stay_in_eval_mode_through_train_and_eval(frozen_stages):
    model = build(frozen_stages)
    for mode in (True, False, True):
        model.train(mode)
        for name, module in model.named_modules():
            if is_frozen(name, frozen_stages):
                assert not module.training, f"frozen {name} in training mode"
            else:
                assert module.training == mode, f"trainable {name or 'backbone'}: training != {mode}"
        assert all(p.requires_grad != is_frozen(n, frozen_stages) for n, p in model.named_parameters())


@pytest.mark.parametrize("frozen_stages", FROZEN)
def test_frozen_outputs_are_deterministic_in_training_mode(frozen_stages):
    """With dropout and stochastic depth on, the outputs computed only by frozen parts (the stem for
    frozen_stages >= 0, stage k for k <= frozen_stages) are identical across training forwards;
    the first trainable stage's output is not (control: the stochastic layers are active)."""
    model = build(frozen_stages).train()
    x = torch.randn(2, 3, 45, 37)
    first, second = model(x), model(x)
    frozen_outputs = frozen_stages + 1  # stem, stage1 .. stage{frozen_stages}
    for i in range(frozen_outputs):
        assert torch.equal(first[i], second[i]), f"frozen output {CFG['out_features'][i]} is stochastic"
    if frozen_outputs < len(first):
        assert not torch.equal(first[frozen_outputs], second[frozen_outputs])


def test_frozen_stages_beyond_the_built_stages_freeze_everything_built():
    torch.manual_seed(0)
    model = Swinv2Backbone(**{**CFG, "out_features": None}, out_indices=(0,), frozen_stages=NUM_STAGES)
    model.train()
    assert len(model.layers) == 1
    assert not any(p.requires_grad for p in model.parameters())
    assert not any(m.training for m in (model.patch_embed, model.layers[0], model.norm0))
