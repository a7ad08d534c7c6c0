"""Reliability: bad configurations fail at construction, with the error type and a message that says
what is allowed, whether the backbone is built directly or from an mmengine config dict."""
from __future__ import annotations

from typing import Any, Callable, Dict

import pytest
from mmengine.registry import MODELS

import swinv2_backbone  # noqa: F401  (registers Swinv2Backbone in mmengine's MODELS)
from swinv2_backbone import Swinv2Backbone
from kit import TINY


def build_direct(kwargs: Dict[str, Any]) -> Swinv2Backbone:
    """Construct the backbone from keyword arguments."""
    return Swinv2Backbone(**kwargs)


def build_registry(kwargs: Dict[str, Any]) -> Swinv2Backbone:
    """Construct the backbone the way mmdet/mmseg configs do."""
    return MODELS.build(dict(type="Swinv2Backbone", **kwargs))


BUILDERS = pytest.mark.parametrize("build", [build_direct, build_registry], ids=["direct", "registry"])

#: (case id, overrides of TINY, exception, regex the message must match: what is wrong and allowed)
BAD_CONFIGS = [
    ("depths_shorter", dict(depths=(1, 1, 1)), ValueError, r"equal length \(one entry per stage\)"),
    ("heads_longer", dict(num_heads=(1, 1, 2, 2, 4)), ValueError, r"equal length"),
    ("depths_empty", dict(depths=(), num_heads=()), ValueError, r"non-empty"),
    ("dims_not_divisible_stage1", dict(num_heads=(3, 1, 2, 2)), ValueError,
     r"stage 1: channels 8 .*not divisible by num_heads 3"),
    ("dims_not_divisible_stage4", dict(num_heads=(1, 1, 2, 5)), ValueError,
     r"stage 4: channels 64 .*not divisible by num_heads 5"),
    ("window_zero", dict(window_size=0), ValueError, r"window_size must be >= 1"),
    ("window_negative", dict(window_size=-3), ValueError, r"window_size must be >= 1"),
    ("window_zero_in_one_stage", dict(window_size=(4, 4, 0, 4)), ValueError,
     r"window_size must be >= 1"),
    ("unknown_arch", dict(arch="huge"), ValueError,
     r"unknown arch 'huge': choose from \['base', 'large', 'small', 'tiny'\]"),
    ("arch_wrong_case", dict(arch="Tiny"), ValueError, r"choose from \['base', 'large', 'small', 'tiny'\]"),
    ("index_too_large", dict(out_indices=(0, 4)), ValueError, r"valid stage indices are \[0, 1, 2, 3\]"),
    ("index_too_negative", dict(out_indices=(-5,)), ValueError, r"valid stage indices are \[0, 1, 2, 3\]"),
    ("unknown_feature", dict(out_features=("stage5",)), ValueError,
     r"valid names are \['stem', 'stage1', 'stage2', 'stage3', 'stage4'\]"),
    ("negative_drop_path", dict(drop_path_rate=-0.1), ValueError, r"drop_path_rate must be in \[0, 1\)"),
    ("drop_path_one", dict(drop_path_rate=1.0), ValueError, r"drop_path_rate must be in \[0, 1\)"),
    ("frozen_too_large", dict(frozen_stages=5), ValueError, r"frozen_stages must be an int in \[-1, 4\]"),
    ("frozen_too_small", dict(frozen_stages=-2), ValueError, r"frozen_stages must be an int in \[-1, 4\]"),
]


@BUILDERS
@pytest.mark.parametrize("kwargs, exc, match", [c[1:] for c in BAD_CONFIGS],
                         ids=[c[0] for c in BAD_CONFIGS])
def test_bad_configuration_fails_at_construction_saying_what_is_allowed(
        build: Callable, kwargs: Dict[str, Any], exc: type, match: str):
    overrides = dict(kwargs)
    if overrides.get("arch") is not None:
        overrides.update(embed_dims=None, depths=None, num_heads=None)
    with pytest.raises(exc, match=match):
        build({**TINY, **overrides})


@BUILDERS
@pytest.mark.parametrize("typo, meant", [("windw_size", "window_size"), ("out_indexes", "out_indices"),
                                         ("drop_path", "drop_path_rate"),
                                         ("frozen_stage", "frozen_stages")])
def test_unknown_keyword_is_refused_naming_it_and_the_valid_keyword(build: Callable, typo: str,
                                                                    meant: str):
    with pytest.raises(TypeError) as info:
        build({**TINY, typo: 1})
    message = str(info.value)
    assert typo in message
    assert meant in message, f"the error should say what is allowed (e.g. {meant!r}): {message}"


@BUILDERS
def test_the_base_configuration_is_valid(build: Callable):
    """Each bad case changes only the arguments it names in this working configuration."""
    assert build(dict(TINY)).out_channels == [8, 16, 32, 64]
