"""The shared native key vocabulary of the checkpoint adapters (``swinv2_backbone.checkpoint.keys``)
and the ``Mapped`` helpers built on it."""
from __future__ import annotations

import pytest
import torch

from swinv2_backbone.checkpoint.common import Mapped, StageWindow
from swinv2_backbone.checkpoint.keys import OUT_NORM, coords_tables, final_norm_for_export, \
    final_norm_to_native, is_buffer_key, num_stages, per_stage, shift_downsample, split_prefix, \
    stage_of, strip_prefix


def _official_table(window: int, pretrained: int = 0) -> torch.Tensor:
    """The official ``relative_coords_table`` of a stage (``(1, 2w-1, 2w-1, 2)``)."""
    norm = (pretrained or window) - 1
    coords = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(coords, coords, indexing="ij"), -1)[None] / norm * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / 3


def test_stage_and_stage_count():
    assert stage_of("layers.2.blocks.5.attn.qkv.weight") == 2
    assert stage_of("layers.0.downsample.norm.bias") == 0
    assert stage_of("norm2.weight") is None and stage_of("patch_embed.proj.weight") is None
    assert num_stages(["patch_embed.proj.weight", "layers.0.blocks.0.x", "layers.3.blocks.1.x"]) == 4
    assert num_stages(["norm.weight"]) == 0
    assert num_stages(["encoder.layers.1.blocks.0.x"], r"^encoder\.layers\.(\d+)\.") == 2


def test_output_norm_pattern_is_exactly_the_parameters():
    assert OUT_NORM.match("norm3.weight").groups() == ("3", "weight")
    assert OUT_NORM.match("norm0.bias").groups() == ("0", "bias")
    assert not any(OUT_NORM.match(k) for k in ("norm.weight", "norm3.running_mean", "layers.0.norm1.weight"))


def test_buffers_and_coordinate_tables():
    assert is_buffer_key("layers.0.blocks.1.attn.relative_position_index")
    assert is_buffer_key("layers.0.blocks.1.attn_mask")
    assert not is_buffer_key("layers.0.blocks.1.attn.logit_scale")
    first, second = _official_table(8), _official_table(8)
    state = {"layers.1.blocks.0.attn.relative_coords_table": first,
             "layers.1.blocks.1.attn.relative_coords_table": second,
             "layers.1.blocks.0.attn.relative_position_index": torch.zeros(1)}
    tables = coords_tables(state)
    assert list(tables) == [1] and tables[1] is first


def test_mapped_reads_windows_from_native_named_tables():
    mapped = Mapped()
    mapped.read_tables({"layers.0.blocks.0.attn.relative_coords_table": _official_table(16, 12),
                        "layers.3.blocks.0.attn.relative_coords_table": _official_table(8, 6),
                        "layers.3.blocks.0.attn.logit_scale": torch.zeros(2, 1, 1)})
    assert mapped.windows == {0: StageWindow(16, 12), 3: StageWindow(8, 6)}
    assert mapped.windows_from == "relative-coordinate buffers"
    nothing = Mapped()
    nothing.read_tables({"layers.0.blocks.1.attn.relative_coords_table": _official_table(8)})
    assert nothing.windows == {} and nothing.windows_from is None


def test_prefix_split_and_strip():
    state = {"backbone.a": 1, "backbone.b": 2, "neck.c": 3}
    assert split_prefix(state, "backbone.") == ({"a": 1, "b": 2}, {"neck.c": 3})
    assert split_prefix(state, "model.") == ({}, state)
    assert strip_prefix(state, "backbone.") == ["a", "b"]


def test_mapped_take_prefix_drops_known_heads_and_keeps_the_rest():
    mapped = Mapped()
    state = {"swinv2.layers.0.x": torch.zeros(1), "classifier.weight": torch.zeros(1),
             "decoder.0.weight": torch.zeros(1), "embeddings.mask_token": torch.zeros(1),
             "stray.weight": torch.zeros(1)}
    heads = (("classifier.", "classification head"),
             (("decoder.", "embeddings.mask_token"), "masked-image-modeling head"))
    encoder, others = mapped.take_prefix(state, "swinv2.", heads)
    assert list(encoder) == ["layers.0.x"] and list(others) == ["stray.weight"]
    assert mapped.dropped == {"classification head": ["classifier.weight"],
                              "masked-image-modeling head": ["decoder.0.weight", "embeddings.mask_token"]}


def test_shift_downsample_moves_only_patch_merging():
    assert shift_downsample("layers.1.downsample.reduction.weight", -1) == "layers.0.downsample.reduction.weight"
    assert shift_downsample("layers.0.downsample.norm.bias", 1) == "layers.1.downsample.norm.bias"
    assert shift_downsample("layers.1.blocks.0.attn.qkv.weight", -1) == "layers.1.blocks.0.attn.qkv.weight"


def test_final_norm_to_native():
    assert final_norm_to_native("norm.weight", 3) == "norm3.weight"
    assert final_norm_to_native("norm.bias", 1) == "norm1.bias"
    assert final_norm_to_native("norm3.weight", 3) is None
    assert final_norm_to_native("head.weight", 3) is None


def _native_state(out_norms):
    state = {"patch_embed.proj.weight": torch.zeros(8, 3, 4, 4)}
    state.update({f"layers.{i}.blocks.0.mlp.fc1.weight": torch.zeros(1) for i in range(3)})
    for i in out_norms:
        state[f"norm{i}.weight"] = torch.full((8 * 2 ** i,), float(i + 1))
        state[f"norm{i}.bias"] = torch.full((8 * 2 ** i,), -float(i + 1))
    return state


def test_final_norm_for_export_keeps_the_last_stage_norm():
    state = _native_state(range(3))
    rest, final, notes = final_norm_for_export(state, "layernorm", "Swinv2Model", "HF's layernorm")
    assert set(rest) == {k for k in state if not k.startswith("norm")}
    assert final.keys() == {"layernorm.weight", "layernorm.bias"}
    assert final["layernorm.weight"] is state["norm2.weight"] and final["layernorm.bias"] is state["norm2.bias"]
    assert notes == ["left out output norm(s) ['norm0', 'norm1'] (Swinv2Model has one final layernorm, "
                     "after the last stage)"]


def test_final_norm_for_export_fills_a_default_layer_norm():
    _, final, notes = final_norm_for_export(_native_state([0]), "norm", "timm", "timm's final norm")
    assert torch.equal(final["norm.weight"], torch.ones(32)) and torch.equal(final["norm.bias"], torch.zeros(32))
    assert notes == ["left out output norm(s) ['norm0'] (timm has one final norm, after the last stage)",
                     "no norm2 in the state dict: timm's final norm is a default LayerNorm"]


def test_per_stage_broadcasts_one_value_and_checks_the_rest():
    assert per_stage(8, 4, "window_sizes") == (8, 8, 8, 8)
    assert per_stage([8], 4, "window_sizes") == (8, 8, 8, 8)
    assert per_stage([16, 16, 16, 8], 4, "window_sizes") == (16, 16, 16, 8)
    assert per_stage(0, 2, "pretrained_window_sizes") == (0, 0)
    with pytest.raises(ValueError, match="window_sizes"):
        per_stage([8, 8], 4, "window_sizes")
    with pytest.raises(ValueError, match="non-negative"):
        per_stage([8, -1, 8, 8], 4, "window_sizes")


def test_one_window_is_clamped_to_each_stage_map():
    from swinv2_backbone.checkpoint.common import clamped_windows, map_sides, windows_from_name

    assert map_sides(256, 4, 4) == [64, 32, 16, 8]
    assert clamped_windows(16, 256, 4, 4) == [16, 16, 16, 8]
    assert clamped_windows(7, 224, 4, 4) == [7, 7, 7, 7]
    windows = windows_from_name("swinv2_base_patch4_window12to16_192to256", 4)
    assert [(w.window, w.pretrained) for w in windows.values()] == [(16, 12), (16, 12), (16, 12), (8, 6)]


def test_load_pretrained_takes_a_converted_checkpoint_without_reading_it_again(tmp_path):
    import pytest
    import torch

    from swinv2_backbone import Swinv2Backbone
    from swinv2_backbone.checkpoint import convert_checkpoint, load_pretrained

    cfg = dict(arch=None, embed_dims=8, depths=(1, 1), num_heads=(1, 1), window_size=4)
    torch.manual_seed(0)
    source = Swinv2Backbone(**cfg)
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    converted = convert_checkpoint(str(path))
    path.unlink()  # a second read would fail
    model = Swinv2Backbone(**cfg)
    assert load_pretrained(model, converted) is converted
    for name, value in model.state_dict().items():
        assert torch.equal(value, source.state_dict()[name]), name
    with pytest.raises(ValueError, match="converted already"):
        load_pretrained(model, converted, prefix="backbone.")
