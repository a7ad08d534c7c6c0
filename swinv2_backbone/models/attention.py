"""Window attention: the shared machinery (:class:`WindowAttention`), Swin Transformer V2's scaled
cosine attention with a log-spaced continuous position bias (:class:`WindowAttentionV2`) and Swin V1's
scaled dot-product attention with a learned relative-position bias table
(:class:`WindowAttentionV1`, with the table's crop and resize functions)."""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..compat import tracing
from .kernels import AttentionArgs, active
from .ops import (MASK_VALUE, relative_coords_table, relative_position_index,
                  shift_window_mask)

#: Upper bound of the learned attention temperature, ``exp(logit_scale) <= 100`` (the paper's clamp).
LOGIT_SCALE_MAX = math.log(1.0 / 0.01)

_MASK_CACHE_SIZE = 8


class QKVLinear(nn.Linear):
    """The qkv projection: an ``nn.Linear`` whose call may be given the bias to add in place of its
    own (``qkv(x, bias)``), since SwinV2 builds that bias from q and v biases that are parameters of
    the attention module. Being called as a module lets FLOP counters attribute its product to it."""

    def forward(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias if bias is None else bias)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows: the machinery both Swin versions
    share. ``attn = softmax(logits(q, k) + bias + mask) @ v``; a subclass defines the position
    bias (:meth:`position_bias`, from the parameters :meth:`bias_parameters`), the qkv bias
    (:meth:`qkv_bias_vector`) and how q and k make the logits (:attr:`cosine`, :meth:`query_scale`). The window size is
    a forward argument (the mask is built for it by :meth:`attention_mask`).

    Args:
        dim: Input and output channels.
        num_heads: Number of attention heads; ``dim`` must be divisible by it.
        attn_drop: Dropout on the attention probabilities.
        proj_drop: Dropout after the output projection.
        use_sdpa: ``'auto'`` (fused SDPA on CUDA, explicit matmul-softmax-matmul elsewhere, which is
            faster on CPU for small windows), ``'always'`` or ``'never'``.
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 use_sdpa: str = "auto") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if use_sdpa not in ("auto", "always", "never"):
            raise ValueError(f"use_sdpa must be 'auto', 'always' or 'never', got {use_sdpa!r}")
        self.dim = dim
        self.num_heads = num_heads
        self.use_sdpa = use_sdpa
        # Cache of the combined (position bias + shift) masks where no gradient is needed:
        # key -> (snapshot of the position-bias parameters, mask).
        self._mask_cache: "OrderedDict[tuple, Tuple[Tuple[torch.Tensor, ...], torch.Tensor]]" = \
            OrderedDict()

    def _build_projections(self, qkv_bias: bool, attn_drop: float, proj_drop: float) -> None:
        """The qkv Linear (without bias: :meth:`qkv_bias_vector` gives it), the dropouts and the
        output projection; a subclass calls it after creating its position-bias parameters (the
        order of creation is the order of the default initialisation's random draws)."""
        self.qkv = QKVLinear(self.dim, self.dim * 3, bias=False)
        self._build_qkv_bias(qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(self.dim, self.dim)
        self.proj_drop = nn.Dropout(proj_drop)

    # ------------------------------------------------------------------ the version's parts
    def _build_qkv_bias(self, qkv_bias: bool) -> None:
        raise NotImplementedError

    def qkv_bias_vector(self) -> Optional[torch.Tensor]:
        """The ``(3 * dim,)`` bias of the qkv projection, or ``None``."""
        raise NotImplementedError

    def position_bias(self, window: int) -> torch.Tensor:
        """``(heads, N, N)`` position bias for a ``window x window`` window."""
        raise NotImplementedError

    def bias_parameters(self) -> Tuple[torch.Tensor, ...]:
        """The parameters :meth:`position_bias` is computed from (the mask cache compares them)."""
        raise NotImplementedError

    def bias_setting(self) -> Tuple[int, ...]:
        """The settings besides the window that :meth:`position_bias` depends on (a cache key)."""
        raise NotImplementedError

    #: Whether the logits are cosine similarities (q and k normalised before q is scaled by
    #: :meth:`query_scale`) rather than dot products of q scaled and k.
    cosine: bool = False

    def query_scale(self) -> Union[float, torch.Tensor]:
        """The factor q is multiplied by before ``q @ k^T``: a float, or a ``(heads, 1, 1)`` tensor."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def attention_mask(
        self, window: int, padded_hw: Tuple[int, int], shift: Tuple[int, int], dtype: torch.dtype
    ) -> torch.Tensor:
        """Additive ``(nW or 1, heads, N, N)`` mask: position bias plus the shifted-window mask.

        Cached where no gradient is needed (outside ``torch.compile``), per window, shift (and
        padded size when shifted), dtype and device. An entry is served only while the position-bias
        parameters still hold the values it was built from: compared by value (a few thousand
        numbers), so no update path can leave it stale (in-place edits through ``.data``,
        ``load_state_dict(assign=True)`` reusing freed storage, EMA parameter swaps).
        """
        params = self.bias_parameters()
        key = None
        if not (torch.is_grad_enabled() and any(p.requires_grad for p in params)
                or params[0].is_meta  # meta tensors (shape/FLOP analysis) have no values
                or tracing()):  # graphs hold no Python-side state (and sizes may be symbolic)
            key = (window, self.bias_setting(), shift, padded_hw if shift != (0, 0) else None,
                   dtype, params[0].device)
            entry = self._mask_cache.get(key)
            if entry is not None and all(torch.equal(s, p) for s, p in zip(entry[0], params)):
                self._mask_cache.move_to_end(key)
                return entry[1]
        mask = self.position_bias(window).to(dtype).unsqueeze(0)  # (1, heads, N, N)
        shift_mask = shift_window_mask(*padded_hw, window, shift, mask.device)
        if shift_mask is not None:
            mask = mask + shift_mask.unsqueeze(1).to(dtype) * MASK_VALUE
        if key is not None:
            self._mask_cache[key] = (tuple(p.detach().clone() for p in params), mask.detach())
            self._mask_cache.move_to_end(key)
            while len(self._mask_cache) > _MASK_CACHE_SIZE:
                self._mask_cache.popitem(last=False)
        return mask

    def forward(self, windows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``windows``: ``(B, nW, N, C)``; ``mask``: additive, broadcastable to ``(B, nW, heads, N, N)``
        (see :meth:`attention_mask`). Returns ``(B, nW, N, C)``."""
        kernels = active()
        out = kernels.attention(windows, mask, self.attention_args(windows))
        return self.proj_drop(kernels.linear(out, self.proj))

    def attention_args(self, x: torch.Tensor) -> AttentionArgs:
        """The attention kernel's settings for the input ``x`` (:class:`AttentionArgs`)."""
        return AttentionArgs(qkv=self.qkv, qkv_bias=self.qkv_bias_vector(),
                             num_heads=self.num_heads, cosine=self.cosine, q_scale=self.query_scale(),
                             dropout=self.attn_drop.p if self.training else 0.0, sdpa=self._sdpa(x))

    def _sdpa(self, x: torch.Tensor) -> bool:
        if self.use_sdpa == "auto":
            return x.is_cuda
        return self.use_sdpa == "always"

    def mask_dtype(self, x: torch.Tensor) -> torch.dtype:
        """The dtype :meth:`forward` wants the mask in for input ``x``: fp32 on the explicit path
        (whose logits are fp32), ``x``'s dtype for SDPA."""
        return x.dtype if self._sdpa(x) else torch.float32



class WindowAttentionV2(WindowAttention):
    """Window attention of Swin Transformer V2: scaled cosine attention with a log-spaced continuous
    position bias.

    ``attn = softmax(normalize(q) @ normalize(k)^T * exp(min(logit_scale, log 100)) + bias + mask) @ v``
    with ``bias = 16 * sigmoid(cpb_mlp(log-spaced relative coordinates))``, evaluated for any
    window.

    Args:
        dim: Input and output channels.
        num_heads: Number of attention heads; ``dim`` must be divisible by it.
        pretrained_window_size: Window the weights were trained with; its ``size - 1`` normalises the
            relative coordinates. 0 normalises by the current window instead.
        qkv_bias: Learn q and v biases (the k bias is always zero, as in the paper).
        attn_drop: Dropout on the attention probabilities.
        proj_drop: Dropout after the output projection.
        cpb_hidden: Hidden width of the continuous position bias MLP.
        use_sdpa: See :class:`WindowAttention`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        pretrained_window_size: int = 0,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        cpb_hidden: int = 512,
        use_sdpa: str = "auto",
    ) -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop, use_sdpa)
        self.pretrained_window_size = pretrained_window_size
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(
            nn.Linear(2, cpb_hidden, bias=True),
            nn.ReLU(inplace=True),
            nn.Linear(cpb_hidden, num_heads, bias=False),
        )
        self._build_projections(qkv_bias, attn_drop, proj_drop)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, "
                f"pretrained_window_size={self.pretrained_window_size}")

    def _build_qkv_bias(self, qkv_bias: bool) -> None:
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(self.dim))
            self.v_bias = nn.Parameter(torch.zeros(self.dim))
        else:
            self.register_parameter("q_bias", None)
            self.register_parameter("v_bias", None)

    def qkv_bias_vector(self) -> Optional[torch.Tensor]:
        if self.q_bias is None:
            return None
        return torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))

    def position_bias(self, window: int) -> torch.Tensor:
        """``(heads, N, N)`` continuous position bias for a ``window x window`` window."""
        device = self.logit_scale.device
        table = relative_coords_table(window, self.pretrained_window_size).to(device)
        index = relative_position_index(window).to(device)
        bias = self.cpb_mlp(table.to(self.cpb_mlp[0].weight.dtype))  # ((2w-1)^2, heads)
        n = window * window
        bias = bias[index.view(-1)].view(n, n, self.num_heads).permute(2, 0, 1)
        return 16.0 * torch.sigmoid(bias)

    def bias_parameters(self) -> Tuple[torch.Tensor, ...]:
        return tuple(self.cpb_mlp.parameters())

    def bias_setting(self) -> Tuple[int, ...]:
        return (self.pretrained_window_size,)

    cosine = True

    def query_scale(self) -> torch.Tensor:
        """The temperature ``exp(min(logit_scale, log 100))``, ``(heads, 1, 1)``."""
        return torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()


def central_bias_table(table: torch.Tensor, window: int) -> torch.Tensor:
    """The ``((2w-1)^2, heads)`` part of a ``((2W-1)^2, heads)`` relative-position bias table for a
    window ``w <= W``: the central ``(2w-1) x (2w-1)`` crop of its offset grid. Exact: the offsets
    ``-(w-1)..w-1`` of the smaller window are a subset of the larger window's, and the table holds
    one entry per offset.

    Raises:
        ValueError: ``w`` is larger than the table's window (the table has no such offsets).
    """
    side = math.isqrt(table.shape[0])
    big = (side + 1) // 2
    if window > big:
        raise ValueError(f"window {window} is larger than the bias table's window {big}; "
                         "SwinBackbone.set_window_size resizes the tables to a larger window")
    if window == big:
        return table
    start = big - window
    grid = table.view(side, side, -1)[start:start + 2 * window - 1, start:start + 2 * window - 1]
    return grid.reshape((2 * window - 1) ** 2, -1)


def resize_bias_table(table: torch.Tensor, window: int) -> torch.Tensor:
    """A ``((2W-1)^2, heads)`` relative-position bias table resized to a window ``w``: each head's
    ``(2W-1) x (2W-1)`` offset grid bicubically interpolated to ``(2w-1) x (2w-1)``
    (``align_corners=False``, as the official Swin fine-tuning code and timm do), computed in fp32
    and returned in the table's dtype; the table itself when the window is unchanged."""
    side = math.isqrt(table.shape[0])
    if side * side != table.shape[0] or table.ndim != 2:
        raise ValueError(f"a bias table has shape ((2w-1)^2, heads), got {tuple(table.shape)}")
    new = 2 * window - 1
    if new == side:
        return table
    grid = table.float().t().reshape(1, -1, side, side)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return grid.reshape(-1, new * new).t().contiguous().to(table.dtype)


class WindowAttentionV1(WindowAttention):
    """Window attention of Swin Transformer V1: scaled dot-product attention with a learned
    relative-position bias table.

    ``attn = softmax((q * head_dim**-0.5) @ k^T + table[relative index] + mask) @ v``. The table has
    one ``heads``-vector per relative offset of the construction window (``(2w-1)^2`` rows,
    truncated normal init, std 0.02). A smaller window at forward (a small-map rule) uses the
    table's central crop (:func:`central_bias_table`); :meth:`set_window_size` resizes the table.

    Args:
        dim: Input and output channels.
        num_heads: Number of attention heads; ``dim`` must be divisible by it.
        window_size: The window the bias table is defined for.
        qkv_bias: Learn a bias for q, k and v (one ``3 * dim`` vector).
        attn_drop: Dropout on the attention probabilities.
        proj_drop: Dropout after the output projection.
        use_sdpa: See :class:`WindowAttention`.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, use_sdpa: str = "auto") -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop, use_sdpa)
        self.window_size = window_size
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self._build_projections(qkv_bias, attn_drop, proj_drop)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}"

    def _build_qkv_bias(self, qkv_bias: bool) -> None:
        if qkv_bias:
            self.qkv.bias = nn.Parameter(torch.zeros(3 * self.dim))

    def qkv_bias_vector(self) -> Optional[torch.Tensor]:
        return self.qkv.bias

    def set_window_size(self, window: int) -> None:
        """Resize the bias table to ``window`` (:func:`resize_bias_table`), keeping its
        ``requires_grad``."""
        if window != self.window_size:
            old = self.relative_position_bias_table
            self.relative_position_bias_table = nn.Parameter(
                resize_bias_table(old.detach(), window), requires_grad=old.requires_grad)
            self.window_size = window

    def position_bias(self, window: int) -> torch.Tensor:
        """``(heads, N, N)`` bias of a ``window x window`` window, from the table (its central crop
        for a window smaller than the table's)."""
        table = central_bias_table(self.relative_position_bias_table, window)
        index = relative_position_index(window).to(table.device)
        n = window * window
        return table[index.view(-1)].view(n, n, self.num_heads).permute(2, 0, 1)

    def bias_parameters(self) -> Tuple[torch.Tensor, ...]:
        return (self.relative_position_bias_table,)

    def bias_setting(self) -> Tuple[int, ...]:
        return (self.window_size,)

    def query_scale(self) -> float:
        return self.scale
