"""Swin V1 checkpoints of every peer (timm old and new layouts, torchvision, mmpretrain, mmdet, mmseg,
HF task models) auto-detected as V1 and equal to the peer's features and logits on its own random
weights; the classifier and SimMIM with a V1 backbone; export to HF and timm, round-tripped."""
import json
import os

import pytest
import torch
import transformers  # a test dependency, installed by tools/setup_env.sh

from swinv2_backbone import SwinBackbone, Swinv2Backbone, Swinv2Classifier
from swinv2_backbone.checkpoint import CheckpointError, convert_checkpoint, load_pretrained
from swinv2_backbone.checkpoint.build import build_backbone
from swinv2_backbone.checkpoint.export import from_model, save_hf, save_timm, to_hf, to_hf_classifier, \
    to_hf_mim, to_timm
from swinv2_backbone.checkpoint.mmpretrain import unfold_to_official
from swinv2_backbone.models import SimMIM
from swinv2_backbone.testing import peers, peers_v1
from kit import SMALL, load_tool

TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools",
                    "convert_checkpoint.py")

V = peers_v1.V1_MINI
TOL = dict(rtol=1e-4, atol=1e-4)
#: 224 px (stage 4 is one 7x7 window) and a non-square size that is no window multiple anywhere
SIZES = [(224, 224), (200, 264)]


def image(size, seed=0):
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))


def close(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL)


def loaded(converted, small_map, out_norm=True, **kw) -> SwinBackbone:
    model = peers_v1.ours_v1(V, 7, small_map, out_norm=out_norm, **kw).eval()
    load_pretrained(model, converted)
    return model


def loaded_classifier(converted, small_map) -> Swinv2Classifier:
    model = Swinv2Classifier(num_classes=10, backbone_type="SwinBackbone", small_map=small_map,
                             arch=None, embed_dims=V.embed_dims, depths=V.depths,
                             num_heads=V.num_heads, window_size=7).eval()
    load_pretrained(model, converted)
    return model


@pytest.fixture(scope="module")
def timm_v1():
    return peers_v1.timm_v1_model(V, 7, seed=1)


@pytest.fixture(scope="module")
def tv_v1():
    return peers_v1.torchvision_v1_model(V, 7, seed=2)


@pytest.fixture(scope="module")
def mmdet_v1():
    return peers_v1.mmdet_swin(V, 7, seed=3)


def test_merge_input_permutation_covers_the_v1_norm():
    """The V1 merge norm acts on the 4C unfold input: its vector is reordered like the reduction's
    columns (mmdet's swin_converter documents the forward direction)."""
    c = 3
    official_index = torch.arange(4 * c, dtype=torch.float32)  # (block * C + channel)
    block, channel = official_index // c, official_index % c
    dh, dw = block % 2, block // 2  # official x0..x3: (0,0), (1,0), (0,1), (1,1)
    unfold_order = torch.empty(4 * c)
    unfold_order[(channel * 4 + dh * 2 + dw).long()] = official_index
    assert torch.equal(unfold_to_official(unfold_order), official_index)
    weight = torch.stack([unfold_order, unfold_order + 100])
    assert torch.equal(unfold_to_official(weight), torch.stack([official_index, official_index + 100]))


@pytest.mark.parametrize("size", SIZES)
def test_timm_features_and_logits(timm_v1, size):
    x = image(size)
    if size != (224, 224):  # timm fixes its windows from the construction-time size
        timm_v1 = peers_v1.timm_v1_model(V, 7, seed=1, img_size=size)
    converted = convert_checkpoint(timm_v1.state_dict())
    assert (converted.format, converted.version, converted.window_sizes) == ("timm", 1, (7,) * 4)
    ours = loaded(converted, "timm", out_norm=False)
    classifier = loaded_classifier(converted, "timm")
    with torch.no_grad():
        want = timm_v1.forward_intermediates(x, intermediates_only=True)
        close(ours(x), want)
        torch.testing.assert_close(classifier(x), timm_v1(x), **TOL)


def test_timm_old_layout_is_the_official_one(timm_v1, tmp_path):
    """timm < 0.9 and the V1 files of the timm hub keep the official layout (merge at the end of
    stages, ``head``, ``relative_position_index`` and ``attn_mask`` buffers)."""
    state = peers_v1.official_v1_state(timm_v1)
    assert any(k.endswith("attn_mask") for k in state) and "layers.0.downsample.norm.weight" in state
    converted = convert_checkpoint(peers.save_torch(state, str(tmp_path), "swin_tiny.pth"))
    assert (converted.format, converted.version) == ("official", 1)
    # 8 index buffers and the masks of the shifted blocks of stages 1-3 (stage 4 is one window)
    assert len(converted.dropped["recomputed buffers"]) == 8 + 3
    ours = loaded(converted, "timm")
    x = image((224, 224))
    with torch.no_grad():
        final = timm_v1.forward_features(x).permute(0, 3, 1, 2)
        torch.testing.assert_close(ours(x)[-1], final, **TOL)


@pytest.mark.parametrize("size", SIZES)
def test_torchvision_features_and_logits(tv_v1, size):
    x = image(size)
    converted = convert_checkpoint(tv_v1.state_dict())
    assert (converted.format, converted.version) == ("torchvision", 1)
    assert "unused k third of qkv.bias" not in converted.dropped  # V1 uses its k bias
    ours = loaded(converted, "pad", out_norm=False)
    classifier = loaded_classifier(converted, "pad")
    with torch.no_grad():
        close(ours(x), peers.torchvision_stages(tv_v1, x))
        torch.testing.assert_close(classifier(x), tv_v1(x), **TOL)


@pytest.mark.parametrize("size", SIZES)
def test_mmpretrain_backbone_features(size):
    x = image(size)
    backbone = peers_v1.mmpretrain_v1_backbone(V, 7, seed=4, img_size=size)
    converted = convert_checkpoint(backbone.state_dict())
    assert (converted.format, converted.version) == ("mmpretrain", 1)
    ours = loaded(converted, peers_v1.V1_PEER_RULES["mmpretrain"])
    with torch.no_grad():
        close(ours(x), backbone(x))


def test_mmpretrain_classifier_logits(tmp_path):
    model = peers_v1.mmpretrain_v1_classifier(V, 7, seed=5)
    path = peers.save_torch(peers.mmpretrain_checkpoint(model), str(tmp_path), "cls.pth")
    classifier = Swinv2Classifier(num_classes=10, backbone_type="SwinBackbone", pretrained=path,
                                  arch=None, embed_dims=V.embed_dims, depths=V.depths,
                                  num_heads=V.num_heads, window_size=7)
    classifier.init_weights()
    x = image((224, 224))
    with torch.no_grad():
        want = model(x, mode="tensor")
        torch.testing.assert_close(classifier.eval()(x), want, **TOL)


@pytest.mark.parametrize("size", SIZES)
def test_mmdet_detector_checkpoint_gives_mmdet_features(mmdet_v1, tmp_path, size):
    """A mmdet Swin config switched to SwinBackbone(small_map='mmdet') with the detector's own
    checkpoint gives mmdet's normed stages norm0..3 (also a subset of them)."""
    path = peers.save_torch(peers_v1.mmdet_checkpoint(mmdet_v1, seed=6), str(tmp_path), "det.pth")
    converted = convert_checkpoint(path)
    assert (converted.format, converted.version) == ("mmpretrain", 1)
    assert len(converted.dropped["other modules of a whole model"]) == 3
    cfg = dict(type="SwinBackbone", arch=None, embed_dims=V.embed_dims, depths=V.depths,
               num_heads=V.num_heads, window_size=7, small_map="mmdet", drop_path_rate=0.0,
               init_cfg=dict(type="Pretrained", checkpoint=path))
    ours = build_backbone(cfg).eval()
    subset = build_backbone({**cfg, "out_indices": (1, 3)}).eval()
    pad = build_backbone({**cfg, "small_map": "pad"}).eval()
    x = image(size)
    with torch.no_grad():
        want = mmdet_v1(x)
        close(ours(x), want)
        close(subset(x), [want[1], want[3]])
        # 'pad' does not shift a one-window stage 4 (7x7 at 224, 7x9 padded to 7x14): mmdet does
        assert (pad(x)[3] - want[3]).abs().max() > 1e-2


def test_mmseg_segmentor_checkpoint_gives_mmseg_features(mmdet_v1, tmp_path):
    """mmseg's own Swin V1 (``mmseg.models.backbones.SwinTransformer``, the zoo's UPerNet backbone)
    has mmdet's key layout; a segmentor checkpoint with its weights gives its features too."""
    from mmseg.models.backbones import SwinTransformer

    mmseg_v1 = SwinTransformer(embed_dims=V.embed_dims, depths=V.depths, num_heads=V.num_heads,
                               window_size=7, out_indices=(0, 1, 2, 3), drop_path_rate=0.0)
    mmseg_v1.load_state_dict(mmdet_v1.state_dict())  # the same names and shapes, seeded values
    mmseg_v1.eval()
    state = {f"backbone.{k}": v for k, v in mmseg_v1.state_dict().items()}
    state["decode_head.conv_seg.weight"] = torch.randn(4, 8, 1, 1)
    path = peers.save_torch({"meta": {"mmseg_version": "1.2.2"}, "state_dict": state},
                            str(tmp_path), "seg.pth")
    ours = build_backbone(dict(type="SwinBackbone", arch=None, embed_dims=V.embed_dims,
                               depths=V.depths, num_heads=V.num_heads, window_size=7,
                               small_map="mmdet", drop_path_rate=0.0,
                               init_cfg=dict(type="Pretrained", checkpoint=path))).eval()
    x = image((200, 264))
    with torch.no_grad():
        close(ours(x), mmseg_v1(x))


def test_every_v1_format_says_which_class_to_use(timm_v1, tv_v1, mmdet_v1, tmp_path):
    files = {
        "timm": timm_v1.state_dict(),
        "official": peers_v1.official_v1_state(timm_v1),
        "torchvision": tv_v1.state_dict(),
        "mmpretrain": peers_v1.mmdet_checkpoint(mmdet_v1, seed=6),
    }
    for fmt, state in files.items():
        converted = convert_checkpoint(state)
        assert (converted.format, converted.model_type) == (fmt, "SwinBackbone")
        with pytest.raises(CheckpointError, match="Swin V1 checkpoint.*use SwinBackbone"):
            load_pretrained(Swinv2Backbone(**SMALL), converted)
    v2 = peers.timm_model(peers.MINI, peers.W8, seed=0)
    with pytest.raises(CheckpointError, match="Swin V2 checkpoint.*use Swinv2Backbone"):
        load_pretrained(SwinBackbone(arch=None, embed_dims=32, depths=(1, 1, 2, 1),
                                     num_heads=(1, 2, 4, 8)), v2.state_dict())


def test_hf_classifier_and_simmim_with_a_v1_backbone(tmp_path):
    x = image((224, 224))
    hf_cls = peers_v1.hf_v1_model("SwinForImageClassification", V, 7, seed=7, num_labels=5)
    hf_cls.save_pretrained(tmp_path / "cls")
    classifier = Swinv2Classifier(num_classes=5, backbone_type="SwinBackbone", small_map="hf",
                                  pretrained=str(tmp_path / "cls"), arch=None,
                                  embed_dims=V.embed_dims, depths=V.depths, num_heads=V.num_heads,
                                  window_size=7)
    classifier.init_weights()
    hf_mim = peers_v1.hf_v1_model("SwinForMaskedImageModeling", V, 7, seed=8)
    hf_mim.save_pretrained(tmp_path / "mim")
    simmim = SimMIM(dict(type="SwinBackbone", arch=None, embed_dims=V.embed_dims, depths=V.depths,
                         num_heads=V.num_heads, window_size=7, small_map="hf"),
                    pretrained=str(tmp_path / "mim"))
    simmim.init_weights()
    assert type(simmim.backbone) is SwinBackbone
    mask = torch.rand(1, 56, 56, generator=torch.Generator().manual_seed(0)) < 0.6
    with torch.no_grad():
        torch.testing.assert_close(classifier.eval()(x), hf_cls(x).logits, **TOL)
        want = hf_mim(x, bool_masked_pos=mask.flatten(1)).reconstruction
        torch.testing.assert_close(simmim.eval()(x, mask), want, **TOL)
    with pytest.raises(ValueError, match="backbone_type must be one of"):
        Swinv2Classifier(backbone_type="SwinTransformer")


def test_export_to_hf_and_timm_round_trips(tmp_path):
    torch.manual_seed(0)
    classifier = Swinv2Classifier(num_classes=4, class_names=list("abcd"), backbone_type="SwinBackbone",
                                  small_map="hf", arch=None, embed_dims=V.embed_dims, depths=V.depths,
                                  num_heads=V.num_heads, window_size=7)
    peers.randomize_(classifier, 9).eval()
    converted = from_model(classifier)
    save_hf(to_hf_classifier(converted), tmp_path / "cls")
    config = json.loads((tmp_path / "cls" / "config.json").read_text())
    assert (config["model_type"], config["architectures"], config["image_size"]) == (
        "swin", ["SwinForImageClassification"], 224)
    assert "pretrained_window_sizes" not in config
    save_hf(to_hf(converted), tmp_path / "enc")
    exported = to_timm(converted)
    assert exported.config["window_size"] == 7 and "pretrained_window_sizes" not in exported.config
    save_timm(exported, tmp_path / "timm.safetensors")
    from safetensors.torch import load_file
    from timm.models.swin_transformer import SwinTransformer

    timm_model = SwinTransformer(**exported.config).eval()
    timm_model.load_state_dict(load_file(tmp_path / "timm.safetensors"))
    hf_cls = transformers.SwinForImageClassification.from_pretrained(tmp_path / "cls").eval()
    hf_enc = transformers.SwinModel.from_pretrained(tmp_path / "enc").eval()
    x = image((224, 224))
    with torch.no_grad():
        want = classifier(x)
        final = classifier.backbone(x)[0]
        torch.testing.assert_close(hf_cls(x).logits, want, **TOL)
        tokens = hf_enc(x).last_hidden_state
        torch.testing.assert_close(tokens.transpose(1, 2).reshape(final.shape), final, **TOL)
        torch.testing.assert_close(timm_model.forward_features(x).permute(0, 3, 1, 2), final, **TOL)
    assert hf_cls.config.id2label == dict(enumerate("abcd"))


def test_export_simmim_to_hf_and_the_cli(tmp_path, capsys):
    torch.manual_seed(0)
    simmim = SimMIM(dict(type="SwinBackbone", arch=None, embed_dims=V.embed_dims, depths=V.depths,
                         num_heads=V.num_heads, window_size=6, small_map="hf"))
    peers.randomize_(simmim, 10).eval()
    save_hf(to_hf_mim(from_model(simmim), image_size=192), tmp_path / "mim")
    hf_mim = transformers.SwinForMaskedImageModeling.from_pretrained(tmp_path / "mim").eval()
    x = image((192, 192))
    mask = torch.rand(1, 48, 48, generator=torch.Generator().manual_seed(1)) < 0.6
    with torch.no_grad():
        want = simmim(x, mask)
        torch.testing.assert_close(hf_mim(x, bool_masked_pos=mask.flatten(1)).reconstruction, want,
                                   **TOL)
    torch.save({"state_dict": simmim.state_dict()}, tmp_path / "simmim.pth")
    convert_tool = load_tool("convert_checkpoint")
    assert convert_tool.main([str(tmp_path / "simmim.pth"), str(tmp_path / "cli"), "--to", "hf",
                              "--image-size", "192"]) == 0
    out = capsys.readouterr().out
    assert "hf SwinForMaskedImageModeling" in out and "Swin V1" in out
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["model_type"] == "swin"


def test_feature_extractor_and_classify_take_v1_checkpoints(tv_v1, tmp_path):
    """tools/extract_features.py and tools/classify.py build the checkpoint's version."""
    from swinv2_backbone.features import FeatureExtractor
    from swinv2_backbone.features.classify import load_classifier

    path = peers.save_torch(tv_v1.state_dict(), str(tmp_path), "swin_t.pth")
    extractor = FeatureExtractor(checkpoint=path, out_features=("stage2",), mean=(0, 0, 0),
                                 std=(1, 1, 1))
    classifier, converted = load_classifier(path)
    assert type(extractor.model) is SwinBackbone and type(classifier.backbone) is SwinBackbone
    assert converted.window_sizes == (7,) * 4
    x = image((224, 224))
    with torch.no_grad():
        raw = peers.torchvision_stages(tv_v1, x)[1]  # torchvision keeps no stage-2 norm: defaults
        want = torch.nn.functional.layer_norm(raw.permute(0, 2, 3, 1), raw.shape[1:2])
        want = want.permute(0, 3, 1, 2)
        torch.testing.assert_close(extractor(x)["stage2"], want, **TOL)
        torch.testing.assert_close(classifier(x), tv_v1(x), **TOL)
