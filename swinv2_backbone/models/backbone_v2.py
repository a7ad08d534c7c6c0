"""Swinv2Backbone: the Swin Transformer V2 encoder as a multi-scale dense-prediction backbone, on the
machinery it shares with Swin V1 (:class:`~swinv2_backbone.models.backbone.SwinBackboneBase`)."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

from .args import IntOrSeq, per_stage, stage_windows
from .backbone import SwinBackboneBase
from .blocks import PatchMergingV2, SwinBlock, SwinV2Block


def _stage_pretrained_windows(sizes: IntOrSeq, num_stages: int) -> Tuple[int, ...]:
    windows = per_stage(sizes, num_stages, "pretrained_window_sizes")
    if any(w < 0 for w in windows):
        raise ValueError(f"pretrained_window_sizes must be >= 0 (0: none), got {sizes!r}")
    return windows


class Swinv2Backbone(SwinBackboneBase):
    """Swin Transformer V2 backbone returning multi-scale NCHW feature maps.

    Numerically the official Microsoft SwinV2 / Hugging Face ``Swinv2Model`` encoder (res-post-norm,
    scaled cosine attention, log-spaced continuous position bias, patch merging V2), with windows and
    shifts decided from the actual feature-map size at every forward, so any input size works.
    Stages after the last selected output are not built (no unused parameters under DDP).

    Args:
        arch: Preset ``'tiny' | 'small' | 'base' | 'large'`` (official embed dims, depths, heads).
        embed_dims: Channels of stage 1 (doubled every stage); overrides the preset.
        depths: Blocks per stage; overrides the preset.
        num_heads: Attention heads per stage; overrides the preset.
        in_channels: Input image channels; RGB weights of any format load into another count,
            the patch embedding adapted (see :mod:`swinv2_backbone.checkpoint.channels`).
        patch_size: Patch-embedding stride and kernel.
        window_size: Attention window, one int for all stages or one per stage.
        pretrained_window_sizes: Window each stage's weights were trained with (0: none); they
            normalise the position-bias coordinates. The ``*window12to16/24*`` checkpoints need
            ``(12, 12, 12, 6)``.
        mlp_ratio: MLP hidden width relative to the channels.
        qkv_bias: Learn q and v biases.
        drop_rate: Dropout after the patch embedding, the attention projection and in the MLPs.
        attn_drop_rate: Dropout on the attention probabilities.
        drop_path_rate: Final stochastic-depth rate of the linear schedule over all blocks.
        use_abs_pos_embed: Add a learned absolute position embedding, bicubically interpolated from
            the ``pretrain_img_size`` grid to the actual input.
        pretrain_img_size: Image size the absolute position embedding is defined for.
        patch_norm: LayerNorm after the patch embedding.
        use_mask_token: Hold a learned ``mask_token`` ``(1, 1, embed_dims)`` for masked image
            modeling: ``forward(x, mask)`` replaces the masked patch embeddings by it (after the
            patch LayerNorm, before the absolute position embedding, as HF and the official SimMIM
            code do). Without it the parameter does not exist (no unused parameter under DDP) and a
            mask is refused.
        out_indices: 0-based stage indices to return (``(0, 1, 2, 3)`` = stage1..stage4, the
            default; negatives count from the end).
        out_features: Alternatively, output names from ``'stem', 'stage1', ..., 'stage4'``
            (``'stem'`` is the patch-embedding output, stride 4). If both are given they must agree.
        out_norm: LayerNorm on each returned stage output (``norm{i}``); ``False`` returns the raw
            stage outputs (equal to HF ``Swinv2Backbone.feature_maps``).
        frozen_stages: Freeze the patch embedding (0; with the absolute position embedding and the
            mask token) and additionally the first k stages with
            their output norms (k = 1..num_stages); -1 freezes nothing. Frozen parts stay in eval
            mode and without gradients after ``train()``.
        with_cp: Activation checkpointing: only a block's input is kept and the backward pass
            recomputes the rest. Every block a gradient reaches is checkpointed except the trailing
            ones whose activations together are no larger than one block's
            (:func:`~swinv2_backbone.models.blocks.recompute_plan`): the peak memory is that of
            checkpointing every block, without recomputing those.
        small_map: Rule for maps not larger than the window: ``'pad'`` (default, for dense
            prediction) or a peer's rule for its features (``'official'``, ``'hf'``, ``'timm'``,
            ``'mmdet'``). The rules are defined at :func:`~swinv2_backbone.models.blocks.window_and_shift`.
        use_sdpa: Attention kernel: ``'auto'`` (fused SDPA on CUDA, explicit matmul elsewhere),
            ``'always'`` or ``'never'``.
        pretrained: Checkpoint path to load at :meth:`init_weights` (any supported format).
        init_cfg: mmengine initialisation config. ``dict(type='Pretrained', checkpoint=PATH)``
            loads through the checkpoint adapters (any supported format, strictly); optional keys
            ``prefix`` (take only keys under it, e.g. ``'backbone.'``), ``format`` (force a source
            format), ``pretrained_window_sizes='checkpoint'`` (take the training windows from the
            checkpoint), ``small_map='checkpoint'`` (take the rule of its writer) and
            ``map_location``.
        **unknown: Refused: any other keyword raises a ``TypeError`` naming the closest valid one.
    """

    version = 2
    merging = PatchMergingV2
    continuous_position_bias = True
    release_image_size = 256

    def __init__(
        self,
        arch: Optional[str] = "tiny",
        embed_dims: Optional[int] = None,
        depths: Optional[Sequence[int]] = None,
        num_heads: Optional[Sequence[int]] = None,
        in_channels: int = 3,
        patch_size: int = 4,
        window_size: IntOrSeq = 8,
        pretrained_window_sizes: IntOrSeq = 0,
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
        self.pretrained_window_sizes = _stage_pretrained_windows(pretrained_window_sizes,
                                                                 self.num_stages)
        self._build_stages()

    def _make_block(self, stage: int, index: int, drop_path: float) -> SwinBlock:
        return SwinV2Block(self.stage_channels[stage], self.num_heads[stage],
                           self.window_size[stage], shifted=bool(index % 2),
                           pretrained_window_size=self.pretrained_window_sizes[stage],
                           drop_path=drop_path, **self.block_options)

    @property
    def cpb_hidden(self) -> Optional[int]:
        """Hidden width of the blocks' continuous-position-bias MLP (``None`` when no stage is
        built)."""
        return self.stages[0].blocks[0].attn.cpb_mlp[0].out_features if self.stages else None

    # ------------------------------------------------------------------ windows
    def set_window_size(self, window_size: Optional[IntOrSeq] = None,
                        pretrained_window_sizes: Optional[IntOrSeq] = None) -> None:
        """Change the attention windows and/or the windows that normalise the position-bias
        coordinates (see the constructor's arguments of the same names), on every built block.
        No parameter changes shape: the continuous position bias is evaluated for any window.

        Args:
            window_size: New window, one int or one per stage; ``None`` keeps the current ones.
            pretrained_window_sizes: New training windows, one int or one per stage (0: none);
                ``None`` keeps the current ones.
        """
        if window_size is not None:
            self.window_size = stage_windows(window_size, self.num_stages)
        if pretrained_window_sizes is not None:
            self.pretrained_window_sizes = _stage_pretrained_windows(pretrained_window_sizes,
                                                                     self.num_stages)
        for stage, window, pretrained in zip(self.stages, self.window_size,
                                             self.pretrained_window_sizes):
            for block in stage.blocks:
                block.window_size = window
                block.attn.pretrained_window_size = pretrained
