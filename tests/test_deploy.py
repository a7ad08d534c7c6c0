"""Deployment (:mod:`swinv2_backbone.deploy`, ``tools/export.py``): one exported file serves every
input size in its range, in onnxruntime, OpenVINO and torch, equal to eager PyTorch; the small-map
rules that shrink windows refuse the sizes they cannot serve; whole segmentors, one-stage detectors
(with NMS) and backbone + neck export from mmseg/mmdet configs; bad input is refused with one line and no partial file;
``torch.compile(dynamic=True)`` does not recompile across sizes."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch

from capabilities import needs_dynamic_export
from kit import SHALLOW, SMALL, run_tool, save_backbone
from swinv2_backbone import SwinClassifier, Swinv2Backbone
from swinv2_backbone.compat import TORCH_RELEASE
from swinv2_backbone.deploy import (ExportError, export, load_exported, size_oblivious, size_range,
                                    trace)
from swinv2_backbone.deploy import targets as targets_module
from swinv2_backbone.deploy.detectors import DenseDetections, meshgrid_by_repeat
from swinv2_backbone.deploy import tracing as trace_module
from swinv2_backbone.deploy.rewrites import GRAPH, PoolByMatrices, TokenLayerNorm, traceable
from swinv2_backbone.deploy.targets import onnx_to_openvino, write
from swinv2_backbone.models import kernels
from swinv2_backbone.models.attention import WindowAttentionV1, WindowAttentionV2
from swinv2_backbone.testing import randomize_

#: Sizes none of which an export traces at (those trace batch 2 at 69 x 117 and up): not multiples
#: of the window or of 32, maps smaller than the window, one side long, the smallest allowed.
SIZES = [(1, 32, 32), (3, 33, 47), (1, 64, 64), (2, 100, 37), (1, 129, 200), (1, 224, 224),
         (1, 256, 320), (3, 57, 300), (1, 41, 33), (1, 128, 96), (2, 97, 161), (1, 200, 35),
         (1, 512, 384)]
TOLERANCE = 1e-4  # max abs difference per output, fp32


def max_difference(got: Tuple[torch.Tensor, ...], want: Tuple[torch.Tensor, ...]) -> float:
    assert [g.shape for g in got] == [w.shape for w in want]
    return max((g - w).abs().max().item() for g, w in zip(got, want))


def eager(model: torch.nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, tuple) else (out,)


@pytest.fixture(scope="module")
def v2_files(tmp_path_factory) -> Tuple[torch.nn.Module, Dict[str, Path]]:
    """A random SwinV2 backbone (fast paths on, as users run it) and one trace of it written as
    ONNX and as a torch.export archive."""
    torch.manual_seed(0)
    model = randomize_(Swinv2Backbone(**SMALL), seed=1).eval()
    folder = tmp_path_factory.mktemp("export")
    sizes = size_range(model, 3)
    program = trace(model, sizes)
    names = [f.name for f in model.feature_info]
    files = {"onnx": folder / "backbone.onnx", "torch-export": folder / "backbone.pt2"}
    for target, path in files.items():
        write(program, target, path, sizes, names)
    return model, files


@needs_dynamic_export
@pytest.mark.slow
@pytest.mark.parametrize("runtime, target", [("onnxruntime", "onnx"), ("openvino", "onnx"),
                                             ("torch", "torch-export")])
def test_one_file_serves_every_size(v2_files, runtime, target):
    model, files = v2_files
    exported = load_exported(files[target], runtime)
    assert exported.outputs == ["stage1", "stage2", "stage3", "stage4"]
    assert (exported.sizes.min_height, exported.sizes.max_side) == (32, 4096)
    traced = trace_module.SizeRange(3).example_shape()
    assert all((h, w) != traced[2:] for _, h, w in SIZES) and len(SIZES) >= 12
    for n, h, w in SIZES:
        x = torch.randn(n, 3, h, w)
        assert max_difference(exported(x), eager(model, x)) < TOLERANCE, (runtime, n, h, w)


@needs_dynamic_export
@pytest.mark.slow
def test_exported_files_refuse_inputs_outside_their_range(v2_files):
    model, files = v2_files
    exported = load_exported(files["onnx"], "onnxruntime")
    for shape, what in [((1, 4, 64, 64), "expected 3 input channels, got 4"),
                        ((1, 3, 31, 64), "outside the exported range"),
                        ((1, 3, 64, 4097), "outside the exported range"),
                        ((65, 3, 32, 32), "outside the exported range"),
                        ((3, 64, 64), "4-D")]:
        with pytest.raises(ExportError, match=what):
            exported(torch.zeros(shape))
    with pytest.raises(ExportError, match="floating-point"):
        exported(torch.zeros(1, 3, 32, 32, dtype=torch.int64))
    # the torch program checks its own range (torch.export's input constraints)
    program = torch.export.load(str(files["torch-export"])).module()
    with pytest.raises(Exception, match="height|32|range|constraint|Expected"):
        program(torch.zeros(1, 3, 31, 64))


@needs_dynamic_export
@pytest.mark.slow
def test_an_onnx_file_converts_to_openvino_ir_with_its_record(v2_files, tmp_path):
    """The IR that ``write`` gives for a program, from its ONNX file (no second trace): the same
    record (sizes, outputs) and the same outputs; an ONNX file without the record is refused."""
    import onnx

    _, files = v2_files
    xml = onnx_to_openvino(files["onnx"], tmp_path / "backbone.xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.bin", "backbone.xml"]
    ir, source = load_exported(xml), load_exported(files["onnx"], "openvino")
    assert (ir.runtime, ir.sizes, ir.outputs) == ("openvino", source.sizes, source.outputs)
    x = torch.randn(2, 3, 45, 70)
    assert max_difference(ir(x), source(x)) == 0.0
    proto = onnx.load(str(files["onnx"]))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(ExportError, match="has no swinv2_backbone metadata"):
        onnx_to_openvino(tmp_path / "bare.onnx", tmp_path / "bare.xml")
    assert not (tmp_path / "bare.xml").exists()


@needs_dynamic_export
def test_a_trace_holds_each_stage_size_as_one_rounding_of_the_input_size():
    """Stage i's map is ``ceil(H / 2**(i+2))`` written once (``stage_sizes``), not ``ceil`` of the
    previous stage's ``ceil`` nested i deep: torch.export, its ONNX conversion and loading a .pt2
    spend their time on such expressions."""
    model = Swinv2Backbone(**dict(SHALLOW, embed_dims=8, window_size=2)).eval()
    program = trace(model, size_range(model, 3))
    outputs = [node for node in program.graph.nodes if node.op == "output"][0].args[0]
    for i, out in enumerate(outputs):
        height = out.meta["val"].shape[2].node.expr  # (N, C, H, W)
        assert str(height).count("//") == 1 and f"//{4 * 2 ** i}" in str(height), (i, height)


@needs_dynamic_export
@pytest.mark.slow
def test_onnx_written_without_the_quadratic_rewrite_equals_torchs_default():
    """The ONNX optimizer without onnxscript's SlicesSplit rule (:func:`lean_onnx_rewrites`)
    writes the graph torch's default optimizer writes. The backbone is cut to its first two
    stages of one block each (padding, masks, patch merging: 339 nodes): the default's time grows
    with the square of the graph (all four stages: 98 s of this test on the AVX2 EPYC, two: 36 s)."""
    import onnx

    model = randomize_(Swinv2Backbone(**SHALLOW, out_indices=(0, 1)), seed=1).eval()
    assert model.num_built_stages == 2  # stages past the last selected one are not built
    program = trace(model, size_range(model, 3))
    names = ["stage1", "stage2"]
    default = torch.onnx.export(program, (), dynamo=True, opset_version=18,
                                input_names=[targets_module.INPUT_NAME],
                                output_names=names, verbose=False).model_proto
    ours = onnx.load_from_string(targets_module._onnx_bytes(program, {"outputs": names}, 18))
    assert ours.graph == default.graph and len(ours.graph.node) > 100


def test_the_rule_list_swap_nests_and_leaves_an_onnxscript_without_it_alone(monkeypatch):
    """Inside :func:`lean_onnx_rewrites` onnxscript's rule list lacks exactly the skipped rules,
    nested swaps restore in order, the list is restored after, and an onnxscript without that
    list is left as it is."""
    rewriter = pytest.importorskip("onnxscript.rewriter")
    rules = rewriter._DEFAULT_REWRITE_RULES
    with targets_module.lean_onnx_rewrites():
        lean = rewriter._DEFAULT_REWRITE_RULES
        with targets_module.lean_onnx_rewrites():
            assert rewriter._DEFAULT_REWRITE_RULES == lean
        assert rewriter._DEFAULT_REWRITE_RULES is lean
    assert rewriter._DEFAULT_REWRITE_RULES is rules and len(lean) == len(rules) - 1
    assert {rule.name for rule in rules} - {rule.name for rule in lean} == \
        targets_module.SKIPPED_ONNX_REWRITES
    monkeypatch.delattr(rewriter, "_DEFAULT_REWRITE_RULES")
    with targets_module.lean_onnx_rewrites():
        assert not hasattr(rewriter, "_DEFAULT_REWRITE_RULES")


@needs_dynamic_export
@pytest.mark.slow
def test_a_v1_classifier_with_a_window_shrinking_rule_serves_from_its_floor(tmp_path):
    """A Swin V1 classifier (its default rule 'official' shrinks the window on maps smaller than
    it): a traced graph keeps its windows, so the file serves inputs whose every stage map holds a
    window (stage 4 of a 97-px side has 4 rows = the window, which the rule leaves unshifted) and
    refuses smaller ones."""
    torch.manual_seed(0)
    # the rule acts in stage 4 alone at these sizes (stages 1-3 hold 25+ rows): shifted there only
    arch = dict(SMALL, depths=(1, 1, 1, 2))
    model = randomize_(SwinClassifier(num_classes=5, backbone_type="SwinBackbone", **arch),
                       seed=2).eval()
    assert model.backbone.traced_input_floor == (97, 97)  # 4 * 8 * (4 - 1) + 1
    sizes = export(model, tmp_path / "cls.pt2", "torch-export", outputs=["logits"])
    assert (sizes.min_height, sizes.min_width) == (97, 97)
    exported = load_exported(tmp_path / "cls.pt2")
    assert exported.outputs == ["logits"]
    for n, h, w in [(1, 97, 97), (2, 128, 140), (1, 200, 97), (1, 161, 300)]:
        x = torch.randn(n, 3, h, w)
        assert max_difference(exported(x), eager(model, x)) < TOLERANCE, (n, h, w)
    with pytest.raises(ExportError, match="outside the exported range"):
        exported(torch.zeros(1, 3, 96, 200))


@needs_dynamic_export
@pytest.mark.slow
def test_a_simmim_encoder_in_pre_training_exports_its_inference_graph(tmp_path):
    """The encoder of a SimMIM model in the middle of pre-training (train mode, drop path,
    activation checkpointing): the file holds its eval forward without a mask (the features a user
    extracts), equal to eager eval, and the model is left in train mode."""
    from swinv2_backbone.models.simmim import SimMIM

    torch.manual_seed(0)
    model = randomize_(SimMIM(dict(SHALLOW, drop_path_rate=0.3, with_cp=True)), seed=4).train()
    encoder = model.backbone
    export(encoder, tmp_path / "encoder.onnx", max_side=512)
    assert encoder.training and model.training
    exported = load_exported(tmp_path / "encoder.onnx")
    assert exported.outputs == [encoder.feature_info[-1].name]
    encoder.eval()
    for n, h, w in [(1, 64, 64), (2, 90, 131)]:
        x = torch.randn(n, 3, h, w)
        assert max_difference(exported(x), eager(encoder, x)) < TOLERANCE, (n, h, w)


@needs_dynamic_export
@pytest.mark.slow
def test_the_tool_exports_a_checkpoint_to_openvino_ir_and_checks_it(tmp_path, capsys):
    arch = SHALLOW  # the tool's path, not the attention math (v2_files covers that)
    state = save_backbone(tmp_path / "backbone.pth", arch, seed=3)
    out = tmp_path / "backbone.xml"
    status, stdout, stderr = run_tool(capsys, "export", tmp_path / "backbone.pth", "--to", "openvino",
                                      "--output", out, "--min-side", 48, "--max-side", 640)
    assert status == 0, stderr
    assert "inputs (1..64) x 3 x (48..640) x (48..640)" in stdout
    assert out.is_file() and out.with_suffix(".bin").is_file()
    model = Swinv2Backbone(**arch).eval()
    model.load_state_dict(state)
    exported = load_exported(out)
    assert exported.runtime == "openvino"
    for n, h, w in [(1, 48, 48), (2, 75, 130), (1, 640, 333)]:
        x = torch.randn(n, 3, h, w)
        assert max_difference(exported(x), eager(model, x)) < TOLERANCE
    status, stdout, _ = run_tool(capsys, "export", "--check", out)
    assert status == 0 and "serves (1..64) x 3 x (48..640) x (48..640)" in stdout
    assert "stage4 (1, 128, 2, 2)" in stdout  # 48 px: stage 4 is ceil(48 / 32) = 2 on a side


def _built(config: str, scope: str, seed: int) -> torch.nn.Module:
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    init_default_scope(scope)
    torch.manual_seed(seed)
    return MODELS.build(Config.fromfile(config).model).eval()


@needs_dynamic_export
@pytest.mark.slow
def test_a_whole_segmentor_exports_and_equals_mmseg_inference(tmp_path, capsys):
    """The demo UPerNet (its pyramid pooling included) from its config and a checkpoint, one
    ONNX file, against mmseg's own ``encode_decode`` at sizes it was not traced at."""
    config = "configs/demo/upernet_swinv2-compact_toy-shapes.py"
    model = randomize_(_built(config, "mmseg", 5), seed=5)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "seg.pth")
    out = tmp_path / "seg.onnx"
    status, stdout, stderr = run_tool(capsys, "export", config, "--checkpoint", tmp_path / "seg.pth",
                                      "--what", "model", "--output", out)
    assert status == 0, stderr
    exported = load_exported(out, "onnxruntime")
    assert exported.outputs == ["seg_logits"]
    for n, h, w in [(1, 64, 64), (2, 77, 130), (1, 33, 40), (1, 256, 200)]:
        x = torch.randn(n, 3, h, w)
        with torch.no_grad():
            want = model.encode_decode(x, [dict(img_shape=(h, w))] * n)
        assert max_difference(exported(x), (want,)) < TOLERANCE, (n, h, w)


@needs_dynamic_export
@pytest.mark.slow
def test_backbone_and_neck_of_a_detector_export_and_a_whole_detector_is_refused(tmp_path, capsys):
    config = "configs/demo/mask-rcnn_swinv2-compact_fpn_toy-shapes.py"
    model = randomize_(_built(config, "mmdet", 6), seed=6)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "det.pth")
    out = tmp_path / "fpn.pt2"
    status, _, stderr = run_tool(capsys, "export", config, "--checkpoint", tmp_path / "det.pth",
                                 "--what", "neck", "--to", "torch-export", "--output", out)
    assert status == 0, stderr
    exported = load_exported(out)
    for n, h, w in [(1, 64, 64), (2, 90, 150)]:
        x = torch.randn(n, 3, h, w)
        with torch.no_grad():
            want = tuple(model.neck(model.backbone(x)))
        assert max_difference(exported(x), want) < TOLERANCE
    status, _, stderr = run_tool(capsys, "export", config, "--what", "model", "--output",
                                 tmp_path / "det.onnx")
    assert status == 2 and "a whole MaskRCNN does not export: it is not a one-stage" in stderr
    assert "--what neck" in stderr and not (tmp_path / "det.onnx").exists()


#: Compact one-stage detectors: the shipped SwinV2-T RetinaNet config, and mmdet's FCOS (with its
#: centerness score factors) and ATSS (centerness too, its own anchors) with the same small backbone,
#: FPN and head; per head, its classifier (whose bias is lowered so that scores straddle the
#: threshold).
_COMPACT = """_base_ = ['{base}']
custom_imports = dict(imports=['swinv2_backbone'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='Swinv2Backbone', arch=None, embed_dims=16,
                  depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=4, drop_path_rate=0.0,
                  out_indices=(1, 2, 3), init_cfg=None),
    neck=dict(in_channels=[32, 64, 128], out_channels=32),
    bbox_head=dict(num_classes=3, in_channels=32, feat_channels=64, stacked_convs=1))
"""
ONE_STAGE = {
    "retinanet": ("{root}/configs/det/retinanet_swinv2-t-p4-w16_fpn_1x_coco.py", "retina_cls", 5.0),
    "atss": ("mmdet::atss/atss_r50_fpn_1x_coco.py", "atss_cls", 1.0),
    "fcos": ("mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py", "conv_cls", 1.0),
}


@needs_dynamic_export
@pytest.mark.slow
@pytest.mark.parametrize("head", list(ONE_STAGE))
def test_a_whole_one_stage_detector_exports_with_its_nms_and_equals_mmdet(head, tmp_path, capsys):
    """A one-stage detector from its config and a checkpoint, one ONNX file (NMS as
    NonMaxSuppression), in onnxruntime and OpenVINO against mmdet's own
    ``predict(rescale=False)``, at sizes it was not traced at (the smallest with a 1 x 1 top
    level); batches above 1 are refused."""
    from mmdet.structures import DetDataSample

    base, classifier, lowered = ONE_STAGE[head]
    config = tmp_path / f"{head}.py"
    config.write_text(_COMPACT.format(base=base.format(root=Path(__file__).resolve().parents[1])))
    model = randomize_(_built(str(config), "mmdet", 7), seed=7)
    with torch.no_grad():  # scores around the 0.05 threshold: some pass it, some do not
        getattr(model.bbox_head, classifier).bias.sub_(lowered)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "det.pth")
    out = tmp_path / "det.onnx"
    status, stdout, stderr = run_tool(capsys, "export", config, "--checkpoint", tmp_path / "det.pth",
                                      "--what", "model", "--output", out)
    assert status == 0, stderr
    counts = set()
    for runtime in ("onnxruntime", "openvino"):
        exported = load_exported(out, runtime)
        assert exported.outputs == ["boxes", "scores", "labels"]
        for h, w in [(64, 64), (300, 520), (517, 389)]:
            torch.manual_seed(h)
            x = torch.randn(1, 3, h, w)
            sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                                 scale_factor=(1.0, 1.0)))
            with torch.no_grad():
                want = model.predict(x, [sample], rescale=False)[0].pred_instances
            boxes, scores, labels = exported(x)
            assert len(want.scores) == len(scores) <= 100, (runtime, h, w, len(want.scores))
            counts.add(len(scores))
            assert torch.equal(labels.long(), want.labels)
            if len(scores):
                assert (scores - want.scores).abs().max() < 1e-5
                # each box is one of mmdet's of the same label and score (boxes of scores tied
                # within float rounding may come in either order)
                same = ((scores[:, None] - want.scores[None]).abs() < 1e-5) & \
                    (labels.long()[:, None] == want.labels[None])
                gap = (boxes[:, None] - want.bboxes[None]).abs().amax(-1)
                assert gap.masked_fill(~same, float("inf")).amin(1).max() < 1e-3 * max(h, w)
        with pytest.raises(ExportError, match="outside the exported range"):
            exported(torch.randn(2, 3, 64, 64))
    # the threshold and the max_per_img cut both at work
    assert min(counts) < 100 == max(counts), counts
    status, _, stderr = run_tool(capsys, "export", config, "--what", "model", "--max-batch", "2",
                                 "--output", tmp_path / "two.onnx")
    assert status == 2 and "takes batches of at most 1, not 2" in stderr
    assert not (tmp_path / "two.onnx").exists()


def test_point_priors_by_repeat_equal_mmdets_meshgrid_and_leave_the_detector_alone():
    """FCOS's point generator flattens ``torch.meshgrid`` views, which a trace guards on (no level
    side may be 1); the exported detector's copy of it repeats instead, with the same priors."""
    from mmdet.models.task_modules.prior_generators import MlvlPointGenerator

    config = ONE_STAGE["retinanet"][0].format(root=Path(__file__).resolve().parents[1])
    model = _built(config, "mmdet", 0)
    generator = MlvlPointGenerator([8, 16, 32, 64], offset=0.5)
    model.bbox_head.prior_generator = generator
    wrapped = DenseDetections(model)
    assert model.bbox_head.prior_generator is generator and "_meshgrid" not in vars(generator)
    sizes = [(1, 1), (1, 7), (5, 1), (13, 9)]
    for with_stride in (False, True):
        want = generator.grid_priors(sizes, device="cpu", with_stride=with_stride)
        got = wrapped.prior_generator.grid_priors(sizes, device="cpu", with_stride=with_stride)
        for w, g in zip(want, got):
            assert torch.equal(w, g)
    for row_major in (False, True):
        x, y = torch.arange(3.0), torch.arange(4.0) * 10
        for w, g in zip(generator._meshgrid(x, y, row_major), meshgrid_by_repeat(x, y, row_major)):
            assert torch.equal(w, g)


@pytest.mark.parametrize("version", [1, 2])
def test_the_exported_attention_equals_the_reference(version):
    """:data:`GRAPH`'s attention (q, k, v projected apart, rank-4 products) against the reference,
    run eagerly: unshifted and shifted masks, a batch of 2, V1's own qkv bias and V2's q/v biases;
    a bf16 input is handed to the reference itself."""
    torch.manual_seed(0)
    module = (WindowAttentionV2(32, 4, pretrained_window_size=4) if version == 2
              else WindowAttentionV1(32, 4, window_size=4))
    randomize_(module, seed=2).eval()
    windows = torch.randn(2, 6, 16, 32)
    for shift in [(0, 0), (2, 2)]:
        mask = module.attention_mask(4, (8, 12), shift, torch.float32)
        assert mask.shape[0] == (1 if shift == (0, 0) else 6)
        with torch.no_grad(), kernels.using(kernels.REFERENCE):
            want = module(windows, mask)
        with torch.no_grad(), kernels.using(GRAPH):
            got = module(windows, mask)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    half = windows.bfloat16()
    args = module.bfloat16().attention_args(half)
    with torch.no_grad():
        assert torch.equal(GRAPH.attention(half, mask, args), kernels.attention(half, mask, args))


@needs_dynamic_export
def test_an_export_traces_rank_4_attention_and_rank_3_layer_norms_and_leaves_eager_alone():
    """The graph OpenVINO runs fastest (docs/speed.md): attention products and softmax on
    ``(B*nW, heads, N, ·)`` tensors, every LayerNorm on ``(B, tokens, C)`` rows; eager forwards
    inside :func:`traceable` keep the selected kernels and the model gets its LayerNorms back."""
    model = Swinv2Backbone(**dict(SHALLOW, embed_dims=8, window_size=2)).eval()
    selected = kernels.active()
    with traceable(model) as swapped:
        assert kernels.active() is selected
        assert swapped == sum(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert not any(isinstance(m, TokenLayerNorm) for m in model.modules())
    program = trace(model, size_range(model, 3))
    ranks: Dict[str, set] = {}
    for node in program.graph.nodes:
        val = node.meta.get("val")
        if node.op == "call_function" and isinstance(val, torch.Tensor):
            op = getattr(node.target, "__name__", str(node.target)).split(".")[0]  # softmax.int
            ranks.setdefault(op, set()).add(val.dim())
            if op == "layer_norm":
                ranks.setdefault("layer_norm input", set()).add(node.args[0].meta["val"].dim())
    assert ranks["softmax"] == ranks["matmul"] == {4}, ranks
    assert ranks["layer_norm input"] == {3}, ranks
    # rank 5 only where the mask is copied out to the batch's windows
    assert {op for op, r in ranks.items() if 5 in r} == {"expand", "clone"}, ranks


def test_adaptive_pooling_stand_in_equals_torch():
    for size in [(1, 1), (2, 2), (3, 7), (13, 5), (40, 33)]:
        for out in (1, 2, 3, 6, (2, None)):
            x = torch.randn(2, 4, *size)
            torch.testing.assert_close(PoolByMatrices(out)(x), torch.nn.AdaptiveAvgPool2d(out)(x),
                                       rtol=1e-6, atol=1e-6)


@needs_dynamic_export
@pytest.mark.slow
def test_compile_with_dynamic_shapes_does_not_recompile_across_sizes():
    """``torch.compile(model, dynamic=True)`` with sizes 0/1 traced obliviously (a stage can hold a
    single window): the first size compiles (the trace takes the reference kernels and no guard on H
    or W), the others reuse it; outputs equal eager."""
    torch.manual_seed(0)
    two_stages = dict(SMALL, depths=(2, 2), num_heads=(1, 2))  # shifted blocks and a merge
    model = randomize_(Swinv2Backbone(**two_stages), seed=7).eval()
    compiled_graphs = []

    def counting_backend(gm, example_inputs):
        compiled_graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counting_backend, dynamic=True)
    # the first size is not square: dynamo's duck sizing would make H == W a guard
    for i, (n, h, w) in enumerate([(2, 45, 77), (1, 64, 64), (1, 129, 200), (1, 32, 300)]):
        x = torch.randn(n, 3, h, w)
        with torch.no_grad(), size_oblivious():
            got = compiled(x)
        if i == 0:
            first = len(compiled_graphs)
            assert first >= 1
        assert max_difference(got, eager(model, x)) < TOLERANCE
    assert len(compiled_graphs) == first, "recompiled for a new size"
    torch._dynamo.reset()


def test_bad_targets_paths_and_runtimes_are_refused_without_a_file(tmp_path, capsys):
    model = Swinv2Backbone(**SMALL)
    for kwargs, what in [(dict(output=tmp_path / "m.onnx", target="tflite"), "unknown target"),
                         (dict(output=tmp_path / "m.pt2", target="onnx"), r"named \*\.onnx"),
                         (dict(output=tmp_path / "no" / "m.onnx"), "does not exist"),
                         (dict(output=tmp_path / "m.onnx", opset=9), "opset 9 is not supported"),
                         (dict(output=tmp_path / "m.onnx", min_side=5000), "is empty")]:
        with pytest.raises(ExportError, match=what):
            export(model, **kwargs)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "m.onnx").write_bytes(b"")
    for args, what in [((tmp_path / "none.onnx",), "no exported file"),
                       ((tmp_path / "m.onnx", "torch"), "torch cannot run a onnx file"),
                       ((tmp_path / "m.onnx", "tensorrt"), "unknown runtime"),
                       ((tmp_path / "m.onnx", "onnxruntime", None, "int8"), "precision must be"),
                       ((tmp_path / "m.onnx", "onnxruntime", None, "bf16"), "OpenVINO setting")]:
        with pytest.raises(ExportError, match=what):
            load_exported(*args)
    status, _, stderr = run_tool(capsys, "export", tmp_path / "missing.pth", "--output",
                                 tmp_path / "x.onnx")
    assert status == 2 and stderr.strip() == f"error: no checkpoint or config at '{tmp_path / 'missing.pth'}'"
    status, _, stderr = run_tool(capsys, "export", tmp_path / "m.onnx")
    assert status == 2 and "give SOURCE and --output" in stderr


def test_a_missing_runtime_package_names_its_install_command(tmp_path, monkeypatch):
    real = targets_module.importlib.import_module

    def without_onnxruntime(name, *args):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real(name, *args)

    monkeypatch.setattr(targets_module.importlib, "import_module", without_onnxruntime)
    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(ExportError, match=r"pip install 'swinv2-backbone\[deploy\]'"):
        load_exported(tmp_path / "m.onnx", "onnxruntime")


def test_exporting_refuses_a_torch_without_dynamic_export(tmp_path, monkeypatch):
    """On torch < 2.6 (CI's oldest stack runs this for real) the export says why, before tracing."""
    if TORCH_RELEASE >= trace_module.EXPORT_RELEASE:
        monkeypatch.setattr(trace_module, "TORCH_RELEASE", (2, 1))
    with pytest.raises(ExportError, match=r"exporting needs torch >= 2\.6"):
        export(Swinv2Backbone(**SMALL), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@needs_dynamic_export
@pytest.mark.slow
def test_a_fixed_size_export_serves_that_size_alone(tmp_path, capsys):
    """``--fixed-size H W``: the graph traced with one static height and width, any batch
    up to the range's; other sizes and a fixed size beside a side range are refused."""
    state = save_backbone(tmp_path / "backbone.pth", SMALL, seed=8)
    out = tmp_path / "fixed.onnx"
    status, stdout, stderr = run_tool(capsys, "export", tmp_path / "backbone.pth", "--fixed-size",
                                      "70", "90", "--max-batch", "3", "--output", out)
    assert status == 0, stderr
    assert "inputs (1..3) x 3 x 70 x 90" in stdout
    model = Swinv2Backbone(**SMALL).eval()
    model.load_state_dict(state)
    exported = load_exported(out)
    for n in (1, 3, 1):  # OpenVINO compiles a one-size file for each batch it meets
        x = torch.randn(n, 3, 70, 90)
        assert max_difference(exported(x), eager(model, x)) < TOLERANCE
    for shape in [(1, 3, 70, 91), (1, 3, 69, 90), (4, 3, 70, 90)]:
        with pytest.raises(ExportError, match="outside the exported range"):
            exported(torch.zeros(shape))
    status, _, stderr = run_tool(capsys, "export", tmp_path / "backbone.pth", "--fixed-size", "70",
                                 "90", "--max-side", "512", "--output", tmp_path / "both.onnx")
    assert status == 2 and "either a fixed size or min_side/max_side" in stderr
    assert not (tmp_path / "both.onnx").exists()
