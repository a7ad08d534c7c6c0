"""Swinv2Classifier: loads the classification checkpoints of every format with their heads and
reproduces the peer's logits (max abs diff <= 1e-4, fp32, random non-trivial weights at 256 px),
keeps the plain backbone's loading (heads dropped and named), refuses a missing or differently sized
head unless a fresh one is asked for, and exports to HF ``Swinv2ForImageClassification``."""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict, Tuple

import pytest
import torch
from torch import nn

from swinv2_backbone import Swinv2Backbone, Swinv2Classifier
from swinv2_backbone.checkpoint import (CheckpointError, convert_checkpoint, from_model, load_pretrained,
                                        save_hf, to_hf_classifier)
from swinv2_backbone.testing import peers

TOL = 1e-4
NUM_CLASSES = 10
#: Each peer's own rule for small stage maps (equal at these sizes; see Swinv2Classifier).
RULES = {"hf": "hf", "official": "official", "timm": "timm", "torchvision": "pad", "mmpretrain": "official"}
LABELS = tuple(f"class {i}" for i in range(NUM_CLASSES))


def classifier_kwargs(variant: peers.Variant, windows: peers.Windows, **kwargs: Any) -> Dict[str, Any]:
    """``Swinv2Classifier`` keyword arguments for ``variant`` at ``windows``."""
    backbone = peers.ours(variant, windows, out_norm=True)
    del backbone["out_norm"]
    return dict(num_classes=NUM_CLASSES, **backbone, **kwargs)


def loaded(variant: peers.Variant, windows: peers.Windows, checkpoint: Any, source: str,
           **kwargs: Any) -> Swinv2Classifier:
    """Our classifier with ``checkpoint`` loaded through ``init_cfg`` (the config route)."""
    model = Swinv2Classifier(**classifier_kwargs(
        variant, windows, small_map=RULES[source],
        init_cfg=dict(type="Pretrained", checkpoint=checkpoint), **kwargs))
    model.init_weights()
    return model.eval()


def peer_classifier(source: str, variant: peers.Variant, windows: peers.Windows, seed: int, directory: str
                    ) -> Tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """A randomised peer classifier of ``source`` (its logits function) and its checkpoint written in
    its own format."""
    if source == "hf":
        model = peers.hf_model("Swinv2ForImageClassification", variant, windows, seed,
                               num_labels=NUM_CLASSES)
        model.save_pretrained(f"{directory}/hf")
        return lambda x: model(x).logits, f"{directory}/hf"
    if source in ("timm", "official"):
        model = peers.timm_model(variant, windows, seed, num_classes=NUM_CLASSES)
        state = model.state_dict() if source == "timm" else peers.official_checkpoint(model)
        return model, peers.save_torch(state, directory, f"{source}.pth")
    if source == "torchvision":
        model = peers.torchvision_model(variant, windows.window, seed, num_classes=NUM_CLASSES)
        return model, peers.save_torch(model.state_dict(), directory, "tv.pth")
    model = peers.mmpretrain_classifier(variant, windows, seed)
    return (lambda x: model(x, mode="tensor")), peers.save_torch(
        peers.mmpretrain_checkpoint(model), directory, "mmpretrain.pth")


def windows_for(source: str, windows: peers.Windows) -> peers.Windows:
    """torchvision has one window for all stages and no pretrained windows."""
    return peers.single_window(windows.window) if source == "torchvision" else windows


def max_logit_diff(ours: nn.Module, theirs: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert a.shape == b.shape == (x.shape[0], NUM_CLASSES), (a.shape, b.shape)
    assert float(b.abs().max()) > 0.1, "peer logits are trivially small"
    return float((a - b).abs().max())


# ------------------------------------------------------------------------------------ parity
CASES = [(s, v, w) for s in RULES for v, w in ((peers.TINY, peers.W16), (peers.MINI, peers.W8))]


@pytest.mark.parametrize("source,variant,windows", CASES,
                         ids=[f"{s}-{v.name}-{w.name}" for s, v, w in CASES])
def test_logits_equal_the_peer(source, variant, windows, tmp_path):
    windows = windows_for(source, windows)
    theirs, checkpoint = peer_classifier(source, variant, windows, 61, str(tmp_path))
    ours = loaded(variant, windows, checkpoint, source)
    x = torch.cat([peers.image(1), peers.image(2)])
    diff = max_logit_diff(ours, theirs, x)
    print(f"PARITY classifier {source} {variant.name} {windows.name}: {diff:.2e}")
    assert diff <= TOL, diff
    assert convert_checkpoint(checkpoint).format == source


def test_hf_class_names_are_loaded(tmp_path):
    hf = peers.hf_model("Swinv2ForImageClassification", peers.MINI, peers.W8, 62,
                        num_labels=NUM_CLASSES, id2label=dict(enumerate(LABELS)))
    hf.save_pretrained(tmp_path)
    assert loaded(peers.MINI, peers.W8, str(tmp_path), "hf").class_names == list(LABELS)
    placeholder = tmp_path / "placeholder"
    peers.hf_model("Swinv2ForImageClassification", peers.MINI, peers.W8, 62,
                   num_labels=NUM_CLASSES).save_pretrained(placeholder)
    assert loaded(peers.MINI, peers.W8, str(placeholder), "hf").class_names is None  # LABEL_i


# ------------------------------------------------------------------------------------ policy
@pytest.fixture(scope="module")
def timm_classification(tmp_path_factory) -> Tuple[nn.Module, str]:
    model = peers.timm_model(peers.MINI, peers.W8, 63, num_classes=NUM_CLASSES)
    return model, peers.save_torch(peers.official_checkpoint(model), str(tmp_path_factory.mktemp("o")),
                                   "official.pth")


def test_plain_backbone_still_drops_the_head(timm_classification, caplog):
    _, path = timm_classification
    backbone = Swinv2Backbone(**peers.ours(peers.MINI, peers.W8, out_norm=True, out_indices=(3,)))
    with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
        converted = load_pretrained(backbone, path)
    assert "classification head" in converted.dropped
    assert set(converted.heads["classification head"]) == {"head.weight", "head.bias"}
    assert "dropped classification head (2 keys)" in caplog.text
    assert "head" not in dict(backbone.named_parameters())


def test_classifier_summary_says_the_head_was_loaded(timm_classification):
    _, path = timm_classification
    model = Swinv2Classifier(**classifier_kwargs(peers.MINI, peers.W8))
    converted = load_pretrained(model, path)
    assert "classification head" not in converted.summary(taken=("classification head",))


def test_wrong_class_count_is_a_clear_error(timm_classification):
    _, path = timm_classification
    model = Swinv2Classifier(**{**classifier_kwargs(peers.MINI, peers.W8), "num_classes": 7})
    with pytest.raises(CheckpointError, match=r"classifier has 10 classes, the model num_classes=7; "
                                              r"set num_classes=10, or new_head=True"):
        load_pretrained(model, path)


def test_new_head_keeps_a_fresh_head(timm_classification, caplog):
    timm_model, path = timm_classification
    model = Swinv2Classifier(**{**classifier_kwargs(peers.MINI, peers.W8), "num_classes": 7},
                             new_head=True, pretrained=path)
    fresh = model.head.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="swinv2_backbone"):
        model.init_weights()
    assert torch.equal(model.head.weight, fresh)
    assert torch.equal(model.backbone.norm3.weight, timm_model.norm.weight)
    assert "new_head=True: head (7 classes) keeps its initialisation, the checkpoint's 10-class " \
           "classifier left out" in caplog.text


def test_backbone_checkpoint_needs_new_head(tmp_path):
    timm_model = peers.timm_model(peers.MINI, peers.W8, 64, num_classes=0)
    path = peers.save_torch(timm_model.state_dict(), str(tmp_path), "headless.pth")
    with pytest.raises(CheckpointError, match="has no classification head.*new_head=True"):
        load_pretrained(Swinv2Classifier(**classifier_kwargs(peers.MINI, peers.W8)), path)
    load_pretrained(Swinv2Classifier(**classifier_kwargs(peers.MINI, peers.W8), new_head=True), path)


def test_fixed_backbone_arguments_are_refused():
    with pytest.raises(TypeError, match="fixes \\['out_indices'\\]"):
        Swinv2Classifier(out_indices=(0,))
    with pytest.raises(ValueError, match="class_names must be 3 names"):
        Swinv2Classifier(num_classes=3, class_names=["a"])


# ------------------------------------------------------------------------------------ own format, export
def test_own_state_dict_round_trip(timm_classification, tmp_path):
    timm_model, path = timm_classification
    model = loaded(peers.MINI, peers.W8, path, "official")
    saved = peers.save_torch(model.state_dict(), str(tmp_path), "ours.pth")
    again = loaded(peers.MINI, peers.W8, saved, "official")
    x = peers.image(3)
    assert max_logit_diff(again, model, x) == 0.0
    assert max_logit_diff(again, timm_model, x) <= TOL


def test_hf_export_round_trip(timm_classification, tmp_path):
    from transformers import Swinv2ForImageClassification

    _, path = timm_classification
    model = loaded(peers.MINI, peers.W8, path, "official")
    model.set_class_names(LABELS)
    save_hf(to_hf_classifier(from_model(model)), tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["Swinv2ForImageClassification"]
    assert config["id2label"]["3"] == "class 3"
    hf = Swinv2ForImageClassification.from_pretrained(tmp_path / "hf").eval()
    x = peers.image(4)
    diff = max_logit_diff(model, lambda t: hf(t).logits, x)
    print(f"PARITY classifier -> HF export: {diff:.2e}")
    assert diff <= TOL
    back = loaded(peers.MINI, peers.W8, str(tmp_path / "hf"), "hf")
    assert back.class_names == list(LABELS) and max_logit_diff(back, model, x) <= TOL


# ------------------------------------------------------------------------------------ configs
def test_built_from_a_config_dict(timm_classification):
    from mmengine.registry import MODELS

    _, path = timm_classification
    cfg = dict(type="Swinv2Classifier", **classifier_kwargs(peers.MINI, peers.W8),
               init_cfg=dict(type="Pretrained", checkpoint=path))
    model = MODELS.build(cfg)
    assert isinstance(model, Swinv2Classifier)
    model.init_weights()
    x = peers.image(5)
    assert max_logit_diff(model.eval(), timm_classification[0], x) <= TOL


def test_mmpretrain_image_classifier_around_our_backbone(timm_classification, tmp_path):
    """An mmpretrain ``ImageClassifier`` config with ``Swinv2Backbone`` (last stage), global average
    pooling and a linear head gives the classifier's logits; its checkpoint loads into ours."""
    _, path = timm_classification
    backbone = peers.ours(peers.MINI, peers.W8, out_norm=True, out_indices=(3,), small_map="official")
    net = peers.mmpretrain_image_classifier(
        backbone=dict(type="Swinv2Backbone", **backbone,
                      init_cfg=dict(type="Pretrained", checkpoint=path)),
        neck=dict(type="GlobalAveragePooling"),
        head=dict(type="LinearClsHead", num_classes=NUM_CLASSES, in_channels=peers.MINI.embed_dims * 8))
    net.init_weights()
    ours = loaded(peers.MINI, peers.W8, path, "official")
    net.head.fc.load_state_dict(ours.head.state_dict())
    x = peers.image(6)
    assert max_logit_diff(ours, lambda t: net(t, mode="tensor"), x) <= TOL
    saved = peers.save_torch({"state_dict": net.state_dict()}, str(tmp_path), "mmpretrain_ours.pth")
    assert convert_checkpoint(saved).format == "native"
    assert max_logit_diff(loaded(peers.MINI, peers.W8, saved, "official"), ours, x) <= TOL
