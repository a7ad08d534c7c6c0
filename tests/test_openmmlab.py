"""OpenMMLab integration: registry lookups from mmdet and mmseg, configs with custom_imports, and
mmengine training checkpoints that resume with weights-only loading left on."""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import swinv2_backbone
from swinv2_backbone import Swinv2Backbone
from swinv2_backbone.compat import load_weights_only
from kit import SMALL

ROOT = Path(__file__).resolve().parents[1]
BACKBONE = dict(SMALL, type="Swinv2Backbone", depths=(1, 1, 2, 1), out_indices=(1, 2, 3))


@pytest.mark.parametrize("scope", ["mmdet", "mmseg"])
def test_registries_of_mmdet_and_mmseg_build_the_backbone(scope):
    registry = __import__(f"{scope}.registry", fromlist=["MODELS"]).MODELS
    model = registry.build(dict(BACKBONE))
    assert isinstance(model, Swinv2Backbone)
    assert model.out_channels == [32, 64, 128] and model.strides == [8, 16, 32]


def test_config_with_custom_imports_builds_in_a_fresh_interpreter(tmp_path):
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        "custom_imports = dict(imports=['swinv2_backbone'], allow_failed_imports=False)\n"
        f"model = dict(backbone={BACKBONE!r})\n")
    code = (
        "from mmengine.config import Config\n"
        "from mmdet.registry import MODELS as D\n"
        "from mmseg.registry import MODELS as S\n"
        f"cfg = Config.fromfile({str(cfg)!r})\n"  # custom_imports is applied here
        "for reg in (D, S):\n"
        "    m = reg.build(cfg.model.backbone)\n"
        "    print(type(m).__module__, m.out_channels)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    assert out.count("swinv2_backbone.models.backbone_v2 [32, 64, 128]") == 2


def test_model_code_imports_without_mmengine():
    # None in sys.modules makes the OpenMMLab packages look uninstalled (find_spec -> None, import
    # -> ImportError): the model must still import, build and run with torch alone.
    code = ("import sys\n"
            "for name in ('mmengine', 'mmcv', 'mmdet', 'mmseg'):\n"
            "    sys.modules[name] = None\n"
            "import torch, swinv2_backbone as s\n"
            "for cls in (s.Swinv2Backbone, s.SwinBackbone):\n"
            "    m = cls(arch=None, embed_dims=8, depths=(1,1,1,1), num_heads=(1,1,1,1))\n"
            "    base = next(c for c in type(m).__mro__ if c.__name__ == 'BaseModule')\n"
            "    print(base.__module__, [tuple(o.shape) for o in m(torch.randn(1,3,32,32))])\n"
            "print(sorted(k for k, v in sys.modules.items() if v is not None and k.split('.')[0] in ('mmengine', 'mmcv', 'mmdet', 'mmseg')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # the torch-only stand-in for mmengine's BaseModule, under both backbones
    assert all(line.startswith("swinv2_backbone.models.base_module [(1, 8, 8, 8), (1, 16, 4, 4)")
               for line in lines[:2]), lines
    assert lines[2] == "[]"


def _toy_model():
    from mmengine.model import BaseModel

    class ToyModel(BaseModel):
        def __init__(self):
            super().__init__()
            self.backbone = Swinv2Backbone(arch=None, embed_dims=8, depths=(1, 1),
                                           num_heads=(1, 2), window_size=4)
            self.head = nn.Linear(16, 1)

        def forward(self, inputs, labels=None, mode="loss"):
            feat = self.backbone(inputs)[-1].mean((2, 3))  # default_collate stacks the batch
            pred = self.head(feat).squeeze(-1)
            if mode == "loss":
                return dict(loss=(pred - labels).square().mean())
            return pred

    return ToyModel()


class _ToyData(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(3, 16, 16, generator=g), labels=torch.tensor(float(i % 2)))


def _runner(work_dir, max_iters, resume=False):
    from mmengine.runner import Runner

    return Runner(
        model=_toy_model(), work_dir=str(work_dir), experiment_name=f"toy{max_iters}{resume}",
        train_dataloader=dict(dataset=_ToyData(), batch_size=2, collate_fn=dict(type="default_collate"),
                              sampler=dict(type="DefaultSampler", shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type="AdamW", lr=1e-3)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=2, by_epoch=False),
                           logger=dict(type="LoggerHook", interval=1)),
        resume=resume, randomness=dict(seed=0))


def test_runner_checkpoint_resumes_with_weights_only_loading(tmp_path):
    _runner(tmp_path, max_iters=2).train()
    ckpt = tmp_path / "iter_2.pth"
    assert ckpt.is_file()
    # the file holds mmengine/numpy objects; it passes the weights-only loader (nothing switched off)
    state = load_weights_only(ckpt)
    assert state["meta"]["iter"] == 2 and "message_hub" in state
    resumed = _runner(tmp_path, max_iters=4, resume=True)
    resumed.train()
    assert resumed.iter == 4
    log = (Path(resumed.log_dir) / f"{resumed.timestamp}.log").read_text()
    assert "resumed epoch: 0, iter: 2" in log  # continued from the checkpoint, not from scratch
    assert (tmp_path / "iter_4.pth").is_file()


def test_a_runner_formats_each_config_text_once_and_it_reads_the_same(monkeypatch):
    import mmengine.config.config as mmengine_config
    from mmengine.config import Config

    from swinv2_backbone.openmmlab import launch

    cfg = Config(dict(model=dict(type="Toy", depths=[2, 2, 6, 2], norm=dict(type="LN"))))
    calls = []
    yapf_format = mmengine_config.FormatCode
    monkeypatch.setattr(mmengine_config, "FormatCode",
                        lambda text, **kw: calls.append(text) or yapf_format(text, **kw))
    want = cfg.pretty_text  # formatted as mmengine does
    launch.format_configs_once()
    launch.format_configs_once()  # idempotent: one wrapper
    calls.clear()
    assert [cfg.pretty_text for _ in range(3)] == [want] * 3 and len(calls) == 1
    cfg.model.depths = [2, 2, 18, 2]  # another text is formatted anew
    assert "depths=[\n" in want and "18," in cfg.pretty_text and len(calls) == 2


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_weights_only_loading_still_refuses_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": _Exploit()}, path)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        torch.load(path, weights_only=True)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        load_weights_only(path)


def test_the_getattr_stand_in_only_resolves_history_buffer_statistics():
    from mmengine.logging import HistoryBuffer

    from swinv2_backbone.openmmlab.safe_globals import _history_buffer_getattr

    assert _history_buffer_getattr(HistoryBuffer, "mean") is HistoryBuffer.mean
    for obj, name in ((os, "system"), (HistoryBuffer, "__init__"), (HistoryBuffer, "__class__"),
                      (HistoryBuffer.mean, "__globals__")):
        with pytest.raises(pickle.UnpicklingError, match="refusing getattr"):
            _history_buffer_getattr(obj, name)


def test_registration_is_idempotent():
    """Every name the package registers resolves to its object, after import and after each
    further ``register()``."""
    from mmengine.fileio.backends.registry_utils import backends
    from mmengine.registry import (DATASETS, HOOKS, METRICS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS,
                                   TRANSFORMS)

    from swinv2_backbone.models import SwinBackbone, Swinv2Classifier
    from swinv2_backbone.openmmlab import checkpointing, optim, simmim

    expected = {
        MODELS: [Swinv2Backbone, SwinBackbone, Swinv2Classifier, simmim.Swinv2SimMIM],
        TRANSFORMS: [simmim.SimMIMRandomResizedCrop, simmim.SimMIMMaskGenerator,
                     simmim.PackSimMIMInputs],
        METRICS: [simmim.SimMIMReconstructionMetric],
        DATASETS: [simmim.UnlabeledImageFolder],
        HOOKS: [checkpointing.AtomicCheckpointHook],
        OPTIM_WRAPPER_CONSTRUCTORS: [optim.Swinv2LayerDecayOptimWrapperConstructor],
    }
    for again in (False, True, True):  # as imported, then registered twice more
        if again:
            swinv2_backbone.openmmlab.register()
        for registry, objects in expected.items():
            for obj in objects:
                assert registry.get(obj.__name__) is obj, f"{registry.name}: {obj.__name__}"
        assert backends[checkpointing.ATOMIC_BACKEND] is checkpointing.AtomicLocalBackend


def test_classes_serving_both_versions_are_built_by_their_former_names_too():
    from mmengine.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

    from swinv2_backbone import SwinClassifier, Swinv2Classifier
    from swinv2_backbone.openmmlab.optim import SwinLayerDecayOptimWrapperConstructor
    from swinv2_backbone.openmmlab.simmim import SwinSimMIM, Swinv2SimMIM

    assert Swinv2Classifier is SwinClassifier and Swinv2SimMIM is SwinSimMIM
    for names, cls in ((("SwinClassifier", "Swinv2Classifier"), SwinClassifier),
                       (("SwinSimMIM", "Swinv2SimMIM"), SwinSimMIM)):
        assert [MODELS.get(name) for name in names] == [cls, cls]
    assert [OPTIM_WRAPPER_CONSTRUCTORS.get(name) for name in (
        "SwinLayerDecayOptimWrapperConstructor", "Swinv2LayerDecayOptimWrapperConstructor")] == [
        SwinLayerDecayOptimWrapperConstructor] * 2
    model = MODELS.build(dict(type="Swinv2Classifier", num_classes=3, arch=None, embed_dims=8,
                              depths=(1, 1), num_heads=(1, 1), window_size=4))
    assert type(model) is SwinClassifier and model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.slow
def test_smoke_script_builds_and_runs_a_detector_and_a_segmentor():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "smoke.py"), "--size", "128"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "mmdet Mask R-CNN + Swinv2Backbone(tiny)" in out.stdout
    assert "mmseg UPerNet + Swinv2Backbone(tiny): segmentation map (1, 128, 128)" in out.stdout
    assert out.stdout.rstrip().endswith("smoke: OK")
