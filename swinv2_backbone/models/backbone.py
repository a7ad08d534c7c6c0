"""The machinery both Swin backbones share (:class:`SwinBackboneBase`): argument checks, patch
embedding, stages, outputs, freezing, weight loading and the forward. The versions are
:class:`~swinv2_backbone.models.backbone_v2.Swinv2Backbone` and
:class:`~swinv2_backbone.models.backbone_v1.SwinBackbone`."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .args import (IntOrSeq, check_flag, check_int, check_number, check_stage_ints, stage_windows,
                   unknown_arguments_message)
from .base_module import BaseModule
from .blocks import (SMALL_MAP_RULES, PatchEmbed, SwinBlock, SwinStage, recompute_plan,
                     stochastic_depth_schedule, traced_input_floor)
from .ops import dense, stage_sizes
from .outputs import FeatureInfo, output_records, resolve_outputs
from .presets import ARCH_SETTINGS
from .weights import adapt_loaded_state, load_registered_weights, pretrained_init_cfg


def check_patch_mask(mask: object, batch: int, grid: Tuple[int, int]) -> torch.Tensor:
    """``mask`` as a bool tensor ``(batch, *grid)`` (True = masked), or a TypeError/ValueError saying
    what is expected.

    Args:
        mask: ``(N, rows, cols)`` bool tensor, or integers / floats that are all 0 or 1.
        batch: The images' batch size ``N``.
        grid: Patch rows and columns, ``ceil(H / patch_size), ceil(W / patch_size)``.
    """
    expected = f"(N, ceil(H/patch_size), ceil(W/patch_size)) = {(batch, *grid)}"
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor {expected}, got {type(mask).__name__}")
    if tuple(mask.shape) != (batch, *grid):
        raise ValueError(f"mask must have the shape of the patch grid {expected} (batch, rows, "
                         f"cols), got {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise TypeError(f"mask must be bool, or integers / floats of 0 and 1, got {mask.dtype}")
    # a value check reads the mask (a device sync on accelerators); a wrong mask would silently
    # mix the token into the embeddings
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask values must be 0 (visible) or 1 (masked)")
    return mask != 0


class SwinBackboneBase(BaseModule):
    """The backbone machinery both Swin versions share: argument checks, patch embedding, absolute
    position embedding, mask token, stages, output records and norms, freezing and the forward.

    A version (:class:`~swinv2_backbone.models.backbone_v2.Swinv2Backbone`,
    :class:`~swinv2_backbone.models.backbone_v1.SwinBackbone`)
    declares its constructor signature and defaults, passes the common arguments here, sets its own
    settings and then calls :meth:`_build_stages`, which builds its blocks through
    :meth:`_make_block` and its patch merging from :attr:`merging`.

    Args:
        arch, embed_dims, depths, num_heads, in_channels, patch_size, window_size, mlp_ratio,
        qkv_bias, drop_rate, attn_drop_rate, drop_path_rate, use_abs_pos_embed, pretrain_img_size,
        patch_norm, use_mask_token, out_indices, out_features, out_norm, frozen_stages, with_cp,
        small_map, use_sdpa, pretrained, init_cfg: As documented at
            :class:`~swinv2_backbone.models.backbone_v2.Swinv2Backbone` (every
            version takes them with the same meaning).
        unknown: The keywords the version's constructor did not take: refused with a
            ``TypeError`` naming the closest valid one.
    """

    #: The Swin version (1 or 2); the checkpoint adapters match it against a checkpoint's.
    version: int
    #: Patch-merging module class, built with the stage's channels.
    merging: type
    #: Whether the relative position bias is continuous, evaluated for any window with coordinates
    #: normalised by :attr:`pretrained_window_sizes` (SwinV2), rather than a learned table per
    #: window, sized by ``window_size`` (Swin V1).
    continuous_position_bias: bool
    #: Input size of the version's official releases (SwinV2 256, Swin V1 224): the default
    #: ``pretrain_img_size``.
    release_image_size: int
    #: Per stage, the window that normalises the position-bias coordinates (0: the stage's own
    #: window; always 0 for bias tables).
    pretrained_window_sizes: Tuple[int, ...]

    def __init__(self, *, arch: Optional[str], embed_dims: Optional[int],
                 depths: Optional[Sequence[int]], num_heads: Optional[Sequence[int]],
                 in_channels: int, patch_size: int, window_size: IntOrSeq, mlp_ratio: float,
                 qkv_bias: bool, drop_rate: float, attn_drop_rate: float, drop_path_rate: float,
                 use_abs_pos_embed: bool, pretrain_img_size: int, patch_norm: bool,
                 use_mask_token: bool, out_indices: Optional[Sequence[int]],
                 out_features: Optional[Sequence[str]], out_norm: bool, frozen_stages: int,
                 with_cp: bool, small_map: str, use_sdpa: str, pretrained: Optional[str],
                 init_cfg: Optional[Union[dict, List[dict]]], unknown: Dict[str, object]) -> None:
        if unknown:
            raise TypeError(unknown_arguments_message(type(self), unknown))
        super().__init__(init_cfg=pretrained_init_cfg(pretrained, init_cfg))
        self._register_load_state_dict_pre_hook(adapt_loaded_state, with_module=True)

        if arch is not None and arch not in ARCH_SETTINGS:
            raise ValueError(f"unknown arch {arch!r}: choose from {sorted(ARCH_SETTINGS)} or give "
                             "embed_dims, depths and num_heads")
        preset = ARCH_SETTINGS.get(arch) if arch is not None else None
        if preset is None and None in (embed_dims, depths, num_heads):
            raise ValueError("arch=None needs embed_dims, depths and num_heads")
        embed_dims = check_int("embed_dims", preset.embed_dims if embed_dims is None else embed_dims, 1)
        depths = check_stage_ints("depths", preset.depths if depths is None else depths, 1)
        num_heads = check_stage_ints("num_heads", preset.num_heads if num_heads is None else num_heads,
                                     1)
        num_stages = len(depths)
        if num_stages == 0 or len(num_heads) != num_stages:
            raise ValueError(f"depths {depths} and num_heads {num_heads} must be non-empty and of "
                             "equal length (one entry per stage)")
        dims = tuple(embed_dims * 2 ** i for i in range(num_stages))
        for i, (dim, heads) in enumerate(zip(dims, num_heads)):
            if dim % heads:
                raise ValueError(f"stage {i + 1}: channels {dim} (embed_dims {embed_dims} * 2**{i}) "
                                 f"not divisible by num_heads {heads}")
        windows = stage_windows(window_size, num_stages)
        for name, rate in (("drop_rate", drop_rate), ("attn_drop_rate", attn_drop_rate),
                           ("drop_path_rate", drop_path_rate)):
            check_number(name, rate, "in [0, 1)", lambda r: 0.0 <= r < 1.0)
        check_number("mlp_ratio", mlp_ratio, f"a finite number >= {1 / embed_dims:g} (at least "
                      f"one MLP channel with embed_dims {embed_dims})",
                      lambda r: math.isfinite(r) and int(embed_dims * r) >= 1)
        if small_map not in SMALL_MAP_RULES:
            raise ValueError(f"small_map must be one of {SMALL_MAP_RULES}, got {small_map!r}")
        check_int("frozen_stages", frozen_stages, -1, num_stages,
                   " (-1: nothing, 0: patch embedding, k: also stages 1..k)")
        check_int("patch_size", patch_size, 1)
        check_int("in_channels", in_channels, 1)
        check_int("pretrain_img_size", pretrain_img_size, patch_size, note=" (the patch size)")
        for name, flag in (("qkv_bias", qkv_bias), ("use_abs_pos_embed", use_abs_pos_embed),
                           ("patch_norm", patch_norm), ("use_mask_token", use_mask_token),
                           ("out_norm", out_norm), ("with_cp", with_cp)):
            check_flag(name, flag)

        #: One record per returned map, in order; the attributes below are views of it.
        self.feature_info: Tuple[FeatureInfo, ...] = output_records(
            resolve_outputs(out_indices, out_features, num_stages), num_stages, embed_dims, patch_size)
        self.out_features = tuple(f.name for f in self.feature_info)
        self.out_indices = tuple(f.stage for f in self.feature_info if f.stage is not None)
        self.out_channels = [f.channels for f in self.feature_info]
        self.strides = [f.stride for f in self.feature_info]
        self.arch = arch
        self.embed_dims = embed_dims
        self.depths = depths
        self.num_heads = num_heads
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.patch_norm = patch_norm
        self.qkv_bias = qkv_bias
        self.window_size = windows
        self.small_map = small_map
        self.frozen_stages = frozen_stages
        self.out_norm = out_norm
        self.num_stages = num_stages
        self.stage_channels = dims
        self.drop_path_rate = drop_path_rate
        self.with_cp = with_cp
        #: Keyword arguments every block of either version takes.
        self.block_options = dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                                  attn_drop=attn_drop_rate, small_map=small_map, use_sdpa=use_sdpa)

        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size, patch_norm)
        self.pretrain_grid = pretrain_img_size // patch_size
        if use_abs_pos_embed:
            self.absolute_pos_embed = nn.Parameter(
                torch.zeros(1, self.pretrain_grid ** 2, embed_dims))
        else:
            self.register_parameter("absolute_pos_embed", None)
        if use_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        else:
            self.register_parameter("mask_token", None)
        self.pos_drop = nn.Dropout(drop_rate)

    def _make_block(self, stage: int, index: int, drop_path: float) -> SwinBlock:
        """Block ``index`` of stage ``stage`` (0-based), with stochastic depth ``drop_path``."""
        raise NotImplementedError

    def _build_stages(self) -> None:
        """The stages up to the last selected output (patch merging at the end of every stage but
        the last built), the output norms, the default initialisation and the freezing."""
        stage_count = max(self.out_indices) + 1 if self.out_indices else 0
        schedule = stochastic_depth_schedule(self.depths, self.drop_path_rate)
        # registered as 'layers', the official name, which parameter names and state-dict keys keep
        self.layers = nn.ModuleList([
            SwinStage([self._make_block(i, j, schedule[i][j]) for j in range(self.depths[i])],
                      self.merging(self.stage_channels[i]) if i < stage_count - 1 else None)
            for i in range(stage_count)
        ])
        if self.out_norm:
            for i in self.out_indices:
                self.add_module(f"norm{i}", nn.LayerNorm(self.stage_channels[i]))
        self._init_default()
        self._freeze_stages()

    @property
    def stages(self) -> nn.ModuleList:
        """The built stages (:class:`~swinv2_backbone.models.blocks.SwinStage`), in order: those up to
        the last selected output. Registered as ``layers``, so parameter names and state-dict keys
        are the official ``layers.<i>.blocks.<j>.*``."""
        return self.layers

    @property
    def num_built_stages(self) -> int:
        """How many stages are built (those up to the last selected output; ``num_stages`` when the
        last stage is returned)."""
        return len(self.stages)

    @property
    def mlp_hidden(self) -> Tuple[int, ...]:
        """Hidden width of the MLP of every built stage."""
        return tuple(stage.blocks[0].mlp.fc1.out_features for stage in self.stages)

    @property
    def pos_embed_grid(self) -> Optional[int]:
        """Side of the absolute position embedding's patch grid, or ``None`` without one."""
        return self.pretrain_grid if self.absolute_pos_embed is not None else None

    @property
    def out_norm_stages(self) -> Tuple[int, ...]:
        """The built stages (0-based) with an output LayerNorm ``norm{i}``."""
        return tuple(i for i in range(self.num_built_stages) if hasattr(self, f"norm{i}"))

    @property
    def traced_input_floor(self) -> Tuple[int, int]:
        """The smallest input ``(H, W)`` a traced graph of this backbone (an export for any size)
        serves, by its ``small_map`` rule (:func:`~swinv2_backbone.models.blocks.traced_input_floor`):
        ``(1, 1)`` for the rules that never shrink the window."""
        rule = self.stages[0].blocks[0].layout_rule
        return traced_input_floor(rule, self.window_size[:self.num_built_stages], self.patch_size)

    def set_small_map(self, rule: str) -> None:
        """Make ``rule`` (one of ``SMALL_MAP_RULES``) the ``small_map`` rule of every block, as if
        the model had been built with it (the checkpoint loader's ``small_map='checkpoint'``)."""
        if rule not in SMALL_MAP_RULES:
            raise ValueError(f"small_map must be one of {SMALL_MAP_RULES}, got {rule!r}")
        self.small_map = rule
        self.block_options["small_map"] = rule
        for stage in self.stages:
            for block in stage.blocks:
                block.small_map = rule

    # ------------------------------------------------------------------ windows
    @property
    def bias_window_argument(self) -> str:
        """The argument that holds the window each stage's position bias is defined for:
        ``'pretrained_window_sizes'`` (continuous position bias) or ``'window_size'`` (bias
        tables)."""
        return "pretrained_window_sizes" if self.continuous_position_bias else "window_size"

    def set_window_size(self, window_size: Optional[IntOrSeq] = None,
                        pretrained_window_sizes: Optional[IntOrSeq] = None) -> None:
        """Change the attention windows and/or the windows that normalise the position-bias
        coordinates (``None``: keep), on every built block; each version says what it takes."""
        raise NotImplementedError

    def bias_windows(self) -> Tuple[int, ...]:
        """Per built stage, the window its position bias is defined for: the pretrained window, or
        the stage's own window where that is 0 (always, for bias tables)."""
        return tuple(p or w for p, w in zip(self.pretrained_window_sizes[:self.num_built_stages],
                                            self.window_size))

    def set_bias_windows(self, windows: Sequence[int]) -> None:
        """Make ``windows`` (one per stage, from the first; the others keep theirs) the windows the
        position bias is defined for: the :attr:`bias_window_argument` setting, as trained weights
        need it (a checkpoint's training windows)."""
        current = getattr(self, self.bias_window_argument)
        self.set_window_size(**{self.bias_window_argument: tuple(windows) + tuple(current[len(windows):])})

    # ------------------------------------------------------------------ weights
    def _init_default(self) -> None:
        """The official initialisation: truncated normal (std 0.02) Linear weights, zero biases,
        unit LayerNorms, ``logit_scale = log 10``, zero-mean absolute position embedding and mask
        token (truncated normal, std 0.02)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for token in (self.absolute_pos_embed, self.mask_token):
            if token is not None:
                nn.init.trunc_normal_(token, std=0.02)

    def init_weights(self) -> None:
        """Load the checkpoint named by ``init_cfg``/``pretrained`` (any supported format, strict),
        or re-apply the default initialisation (and any other mmengine ``init_cfg``)."""
        if load_registered_weights(self):
            return
        self._init_default()
        if self.init_cfg is not None:
            super().init_weights()

    # ------------------------------------------------------------------ freezing
    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        modules: List[nn.Module] = [self.patch_embed, self.pos_drop]
        for i in range(min(self.frozen_stages, len(self.stages))):
            modules.append(self.stages[i])
            if hasattr(self, f"norm{i}"):
                modules.append(getattr(self, f"norm{i}"))
        return modules

    def _freeze_stages(self) -> None:
        # the position embedding and the mask token belong to the patch embedding (stage 0)
        if self.frozen_stages >= 0:
            for token in (self.absolute_pos_embed, self.mask_token):
                if token is not None:
                    token.requires_grad_(False)
        for module in self._frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "SwinBackboneBase":
        super().train(mode)
        self._freeze_stages()
        return self

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor (N, {self.in_channels}, H, W), "
                            f"got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects a 4-D (N, C, H, W) tensor, got shape "
                             f"{tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_channels} input channels, got "
                             f"{x.shape[1]} (shape {tuple(x.shape)})")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a floating-point tensor, got {x.dtype}")
        if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
            raise ValueError(f"{type(self).__name__} expects a non-empty batch and spatial size, got "
                             f"shape {tuple(x.shape)}")

    def _abs_pos_embed(self, hw: Tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        g = self.pretrain_grid
        pos = self.absolute_pos_embed.view(1, g, g, -1)
        if hw != (g, g):
            pos = F.interpolate(pos.permute(0, 3, 1, 2), size=hw, mode="bicubic",
                                align_corners=False).permute(0, 2, 3, 1)
        return pos.to(dtype)

    def _masked(self, x: torch.Tensor, mask: object) -> torch.Tensor:
        """Patch embeddings ``x`` (channels last) with the masked ones replaced by the token."""
        if self.mask_token is None:
            raise ValueError(f"a mask needs {type(self).__name__}(use_mask_token=True); this "
                             "backbone has no mask token")
        masked = check_patch_mask(mask, x.shape[0], (x.shape[1], x.shape[2]))
        return torch.where(masked.unsqueeze(-1), self.mask_token.to(x.dtype), x)

    def _recompute_plan(self, x: torch.Tensor) -> List[List[bool]]:
        """Per stage and block, whether ``with_cp`` checkpoints it (:func:`recompute_plan`) for
        the stem output ``x`` (channels last): a block's activations are sized as its map's
        tokens times channels, and it records a graph once ``x`` or any parameter up to it needs a
        gradient."""
        maps = stage_sizes(tuple(x.shape[1:3]), 1, len(self.stages))  # x is stage 1's map
        needs_grad = x.requires_grad
        sizes: List[float] = []
        recorded: List[bool] = []
        for i, (stage, (h, w)) in enumerate(zip(self.stages, maps)):
            for block in stage.blocks:
                needs_grad = needs_grad or any(p.requires_grad for p in block.parameters())
                sizes.append(float(h * w * self.stage_channels[i]))
                recorded.append(needs_grad)
            if stage.downsample is not None:
                needs_grad = needs_grad or any(p.requires_grad for p in stage.downsample.parameters())
        flat = iter(recompute_plan(sizes, recorded))
        return [[next(flat) for _ in stage.blocks] for stage in self.stages]

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, ...]:
        """Returns the selected maps, NCHW, in stage order; stage i has ``ceil(H / (4 * 2**(i-1)))``
        rows (likewise columns).

        Args:
            x: ``(N, C, H, W)`` float images.
            mask: Optional ``(N, ceil(H / patch_size), ceil(W / patch_size))`` patch mask, bool or
                0/1 (1 = masked), for masked image modeling: the masked patch embeddings become the
                mask token (needs ``use_mask_token=True``).
        """
        self._check_input(x)
        # each stage's map size from the input's (see stage_sizes): the merges pad to them
        sizes = stage_sizes(tuple(x.shape[2:]), self.patch_size, len(self.stages) + 1)
        x = self.patch_embed(x)
        if mask is not None:
            x = self._masked(x, mask)
        if self.absolute_pos_embed is not None:
            x = x + self._abs_pos_embed(tuple(x.shape[1:3]), x.dtype)
        x = self.pos_drop(x)
        outs = []
        if self.feature_info[0].stage is None:  # the stem comes first when selected
            outs.append(dense(x.permute(0, 3, 1, 2)))
        plan = self._recompute_plan(x) if self.with_cp and torch.is_grad_enabled() else None
        for i, stage in enumerate(self.stages):
            out, x = stage(x, plan[i] if plan is not None else (), sizes[i + 1])
            if i in self.out_indices:
                if self.out_norm:
                    out = getattr(self, f"norm{i}")(out)
                outs.append(dense(out.permute(0, 3, 1, 2)))
            del out  # the channels-last map is not needed while the next stage runs
        return tuple(outs)
