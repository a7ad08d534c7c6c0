"""SwinBackbone: the Swin Transformer V1 encoder as a multi-scale dense-prediction backbone, on the
machinery it shares with :class:`~swinv2_backbone.models.backbone_v2.Swinv2Backbone`."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

from torch import nn

from .args import IntOrSeq, per_stage, stage_windows
from .backbone import SwinBackboneBase
from .blocks import PatchMergingV1, SwinBlock, SwinV1Block

#: SwinV2-only arguments and what Swin V1 offers instead.
V2_ONLY_ARGUMENTS: Dict[str, str] = {
    "pretrained_window_sizes": "Swin V1 has no continuous position bias to renormalise: its bias "
                               "tables are resized to the model's window_size (set_window_size, "
                               "or by the checkpoint loader with a warning)",
}


class SwinBackbone(SwinBackboneBase):
    """Swin Transformer V1 backbone returning multi-scale NCHW feature maps.

    Numerically the official Microsoft Swin (for detection) / Hugging Face ``SwinModel`` encoder
    (pre-norm blocks, scaled dot-product window attention with a learned relative-position bias
    table, patch merging V1: LayerNorm(4C) then Linear), with windows and shifts decided from the
    actual feature-map size at every forward, so any input size works. Stages after the last
    selected output are not built (no unused parameters under DDP).

    A stage's bias table is defined for its ``window_size``. When a small-map rule shrinks the
    window at forward (``small_map='official'``/``'hf'``/``'timm'``: the window becomes the map
    side), the table's central crop is used, which is exact (the smaller window's relative offsets
    are a subset). :meth:`set_window_size` resizes the tables bicubically.

    Args:
        arch: Preset ``'tiny' | 'small' | 'base' | 'large'`` (official embed dims, depths, heads).
        embed_dims: Channels of stage 1 (doubled every stage); overrides the preset.
        depths: Blocks per stage; overrides the preset.
        num_heads: Attention heads per stage; overrides the preset.
        in_channels: Input image channels; RGB weights of any format load into another count,
            the patch embedding adapted (see :mod:`swinv2_backbone.checkpoint.channels`).
        patch_size: Patch-embedding stride and kernel.
        window_size: Attention window (and bias-table window), one int for all stages or one per
            stage.
        mlp_ratio: MLP hidden width relative to the channels.
        qkv_bias: Learn q, k and v biases.
        drop_rate: Dropout after the patch embedding, the attention projection and in the MLPs.
        attn_drop_rate: Dropout on the attention probabilities.
        drop_path_rate: Final stochastic-depth rate of the linear schedule over all blocks.
        use_abs_pos_embed: Add a learned absolute position embedding, bicubically interpolated from
            the ``pretrain_img_size`` grid to the actual input.
        pretrain_img_size: Image size the absolute position embedding is defined for.
        patch_norm: LayerNorm after the patch embedding.
        use_mask_token: Hold a learned ``mask_token`` ``(1, 1, embed_dims)`` for masked image
            modeling (``forward(x, mask)``, as :class:`Swinv2Backbone`; HF publishes V1 SimMIM
            weights).
        out_indices: 0-based stage indices to return (default all; negatives count from the end).
        out_features: Alternatively, output names from ``'stem', 'stage1', ..., 'stage4'``.
        out_norm: LayerNorm on each returned stage output (``norm{i}``); ``False`` returns the raw
            stage outputs (equal to HF ``SwinBackbone.feature_maps`` without its stage norms).
        frozen_stages: Freeze the patch embedding (0; with the absolute position embedding and the
            mask token) and additionally stages 1..k with their output norms; -1 freezes nothing.
        with_cp: Activation checkpointing, as :class:`~swinv2_backbone.Swinv2Backbone`'s (every
            block a gradient reaches but the trailing ones that fit in one block's activations).
        small_map: Rule for maps not larger than the window: ``'pad'`` (default) or a peer's rule
            (``'official'``, ``'hf'``, ``'timm'``, ``'mmdet'``: mmdet/mmseg's Swin, which shifts
            even a map of one window), see
            :func:`~swinv2_backbone.models.blocks.window_and_shift`. ``'hf'`` is HF ``SwinModel``'s
            rule, which for V1 is the official one (it looks at ``min(H, W)``). To reproduce a
            checkpoint's writer (an mmdet/mmseg detector: ``'mmdet'``) without naming its rule,
            load with ``small_map='checkpoint'`` (also an ``init_cfg`` key).
        use_sdpa: Attention kernel: ``'auto'`` (fused SDPA on CUDA, explicit matmul elsewhere),
            ``'always'`` or ``'never'``.
        pretrained: Checkpoint path to load at :meth:`init_weights`.
        init_cfg: mmengine initialisation config; ``dict(type='Pretrained', checkpoint=PATH)`` loads
            through the checkpoint adapters (optional ``prefix``, ``format``, ``map_location``,
            ``pretrained_window_sizes='checkpoint'``, ``small_map='checkpoint'``).
        **unknown: Refused: a SwinV2-only argument (``pretrained_window_sizes``) with what V1 offers
            instead, any other keyword with the closest valid one (``TypeError``).
    """

    version = 1
    merging = PatchMergingV1
    continuous_position_bias = False
    release_image_size = 224

    def __init__(
        self,
        arch: Optional[str] = "tiny",
        embed_dims: Optional[int] = None,
        depths: Optional[Sequence[int]] = None,
        num_heads: Optional[Sequence[int]] = None,
        in_channels: int = 3,
        patch_size: int = 4,
        window_size: IntOrSeq = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        use_abs_pos_embed: bool = False,
        pretrain_img_size: int = release_image_size,
        patch_norm: bool = True,
        use_mask_token: bool = False,
        out_indices: Optional[Sequence[int]] = None,
        out_features: Optional[Sequence[str]] = None,
        out_norm: bool = True,
        frozen_stages: int = -1,
        with_cp: bool = False,
        small_map: str = "pad",
        use_sdpa: str = "auto",
        pretrained: Optional[str] = None,
        init_cfg: Optional[Union[dict, List[dict]]] = None,
        **unknown: object,
    ) -> None:
        for name in sorted(set(unknown) & set(V2_ONLY_ARGUMENTS)):
            raise TypeError(f"SwinBackbone (Swin V1) does not take {name!r}, a Swinv2Backbone "
                            f"argument: {V2_ONLY_ARGUMENTS[name]}")
        super().__init__(
            arch=arch, embed_dims=embed_dims, depths=depths, num_heads=num_heads,
            in_channels=in_channels, patch_size=patch_size, window_size=window_size,
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
            use_abs_pos_embed=use_abs_pos_embed, pretrain_img_size=pretrain_img_size,
            patch_norm=patch_norm, use_mask_token=use_mask_token, out_indices=out_indices,
            out_features=out_features, out_norm=out_norm, frozen_stages=frozen_stages,
            with_cp=with_cp, small_map=small_map, use_sdpa=use_sdpa, pretrained=pretrained,
            init_cfg=init_cfg, unknown=unknown)
        self._build_stages()

    def _make_block(self, stage: int, index: int, drop_path: float) -> SwinBlock:
        return SwinV1Block(self.stage_channels[stage], self.num_heads[stage],
                           self.window_size[stage], shifted=bool(index % 2), drop_path=drop_path,
                           **self.block_options)

    def _init_default(self) -> None:
        """The base initialisation, plus truncated-normal (std 0.02) bias tables (the official
        initialisation)."""
        super()._init_default()
        for table in self.bias_tables():
            nn.init.trunc_normal_(table, std=0.02)

    def bias_tables(self) -> List[nn.Parameter]:
        """Every built block's ``relative_position_bias_table``, in stage and block order."""
        return [block.attn.relative_position_bias_table
                for stage in self.stages for block in stage.blocks]

    @property
    def pretrained_window_sizes(self) -> Tuple[int, ...]:
        """0 for every stage: a bias table is defined for its stage's window."""
        return (0,) * self.num_stages

    def set_window_size(self, window_size: Optional[IntOrSeq] = None,
                        pretrained_window_sizes: Optional[IntOrSeq] = None) -> None:
        """Change the attention windows, resizing every built block's bias table to its stage's new
        window (bicubic, :func:`~swinv2_backbone.models.attention.resize_bias_table`). The tables
        become new parameters: build the optimizer afterwards.

        Args:
            window_size: New window, one int or one per stage; ``None`` keeps the current ones.
            pretrained_window_sizes: ``None`` or 0 (one int or one per stage): Swin V1 has no
                pretrained windows; any other value is refused.
        """
        if pretrained_window_sizes is not None and any(
                per_stage(pretrained_window_sizes, self.num_stages, "pretrained_window_sizes")):
            raise ValueError(f"SwinBackbone (Swin V1) takes no pretrained_window_sizes other than 0, "
                             f"got {pretrained_window_sizes!r}: "
                             f"{V2_ONLY_ARGUMENTS['pretrained_window_sizes']}")
        if window_size is None:
            return
        self.window_size = stage_windows(window_size, self.num_stages)
        for stage, window in zip(self.stages, self.window_size):
            for block in stage.blocks:
                block.window_size = window
                block.attn.set_window_size(window)
