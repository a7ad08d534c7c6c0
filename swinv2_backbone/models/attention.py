"""Window attention of Swin Transformer V2: scaled cosine attention with a log-spaced continuous
position bias (CPB)."""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..compat import is_compiling
from .fast import active
from .ops import (MASK_VALUE, autocast_off, relative_coords_table, relative_position_index,
                  shift_window_mask)

#: Upper bound of the learned attention temperature, ``exp(logit_scale) <= 100`` (the paper's clamp).
LOGIT_SCALE_MAX = math.log(1.0 / 0.01)

_MASK_CACHE_SIZE = 8


def _inverse_norm(x: torch.Tensor, scale: Optional[torch.Tensor] = None,
                  range_of: Optional[torch.dtype] = None) -> torch.Tensor:
    """``scale / max(||x||, 1e-12)`` over the last dim, computed in fp32, capped at the range of
    ``range_of`` (default ``x``'s dtype) and returned in ``x``'s dtype. For the all-zero rows of
    padded tokens the factor would overflow fp16 (in the forward, or in the gradient once cast
    back); a capped factor still gives the zero row ``F.normalize`` gives."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32)
    inv = (1.0 if scale is None else scale.float()) / norm.clamp_min(1e-12)
    return inv.clamp_max(torch.finfo(range_of or x.dtype).max).to(x.dtype)


class WindowAttentionV2(nn.Module):
    """Multi-head self-attention inside non-overlapping windows, SwinV2 style.

    ``attn = softmax(normalize(q) @ normalize(k)^T * exp(min(logit_scale, log 100)) + bias + mask) @ v``
    with ``bias = 16 * sigmoid(cpb_mlp(log-spaced relative coordinates))``. The window size is a
    forward argument: the coordinate tables are rebuilt for whatever window a feature map needs.

    Args:
        dim: Input and output channels.
        num_heads: Number of attention heads; ``dim`` must be divisible by it.
        pretrained_window_size: Window the weights were trained with; its ``size - 1`` normalises the
            relative coordinates. 0 normalises by the current window instead.
        qkv_bias: Learn q and v biases (the k bias is always zero, as in the paper).
        attn_drop: Dropout on the attention probabilities.
        proj_drop: Dropout after the output projection.
        cpb_hidden: Hidden width of the continuous position bias MLP.
        use_sdpa: ``'auto'`` (fused SDPA on CUDA, explicit matmul-softmax-matmul elsewhere, which is
            faster on CPU for small windows), ``'always'`` or ``'never'``.
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
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if use_sdpa not in ("auto", "always", "never"):
            raise ValueError(f"use_sdpa must be 'auto', 'always' or 'never', got {use_sdpa!r}")
        self.dim = dim
        self.num_heads = num_heads
        self.pretrained_window_size = pretrained_window_size
        self.use_sdpa = use_sdpa
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(
            nn.Linear(2, cpb_hidden, bias=True),
            nn.ReLU(inplace=True),
            nn.Linear(cpb_hidden, num_heads, bias=False),
        )
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.register_parameter("q_bias", None)
            self.register_parameter("v_bias", None)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # Cache of the combined (position bias + shift) masks where no gradient is needed:
        # key -> (snapshot of the position-bias MLP's parameters, mask).
        self._mask_cache: "OrderedDict[tuple, Tuple[Tuple[torch.Tensor, ...], torch.Tensor]]" = \
            OrderedDict()

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, "
                f"pretrained_window_size={self.pretrained_window_size}")

    def position_bias(self, window: int) -> torch.Tensor:
        """``(heads, N, N)`` continuous position bias for a ``window x window`` window."""
        device = self.logit_scale.device
        table = relative_coords_table(window, self.pretrained_window_size).to(device)
        index = relative_position_index(window).to(device)
        bias = self.cpb_mlp(table.to(self.cpb_mlp[0].weight.dtype))  # ((2w-1)^2, heads)
        n = window * window
        bias = bias[index.view(-1)].view(n, n, self.num_heads).permute(2, 0, 1)
        return 16.0 * torch.sigmoid(bias)

    def attention_mask(
        self, window: int, padded_hw: Tuple[int, int], shift: Tuple[int, int], dtype: torch.dtype
    ) -> torch.Tensor:
        """Additive ``(nW or 1, heads, N, N)`` mask: position bias plus the shifted-window mask.

        Cached where no gradient is needed (outside ``torch.compile``), per window, shift (and
        padded size when shifted), dtype and device. An entry is served only while the position-bias MLP's parameters still hold the
        values it was built from: compared by value (a few thousand numbers), so no update path can
        leave it stale (in-place edits through ``.data``, ``load_state_dict(assign=True)`` reusing
        freed storage, EMA parameter swaps).
        """
        params = tuple(self.cpb_mlp.parameters())
        key = None
        if not (torch.is_grad_enabled() and any(p.requires_grad for p in params)
                or params[0].is_meta  # meta tensors (shape/FLOP analysis) have no values
                or is_compiling()):  # compiled graphs hold no Python-side state
            key = (window, self.pretrained_window_size, shift, padded_hw if shift != (0, 0) else None,
                   dtype, self.logit_scale.device)
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
        b, nw, n, c = windows.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        # One copy to heads-first layout makes q, k and v contiguous, so no later reshape copies;
        # the Linear's own output is not kept past it.
        h, d = self.num_heads, c // self.num_heads
        q, k, v = kernels.linear(windows, self.qkv.weight, bias).view(b * nw, n, 3, h, d).permute(
            2, 0, 3, 1, 4).contiguous().unbind(0)
        # Cosine attention with the temperature applied to q (N*d values, not N*N): one multiply
        # each, so training keeps no normalised copy of q or k besides the scaled ones.
        scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()
        if self._sdpa(windows):
            q = q * _inverse_norm(q, scale)  # (B*nW, heads, N, d)
            k = k * _inverse_norm(k)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask.to(q.dtype).expand(b, nw, -1, -1, -1).flatten(0, 1),
                dropout_p=self.attn_drop.p if self.training else 0.0, scale=1.0)
        else:
            # Normalisation, logits and softmax in fp32 whatever the input dtype (only the
            # probabilities go back to v's dtype): in bf16 a logit of up to 116 (cosine x 100 plus
            # a bias of up to 16) keeps 8 significant bits, an error of up to 0.25 before the
            # exponential. At fp32 the casts are no-ops.
            with autocast_off(windows):
                in_dtype = q.dtype
                q, k = q.float(), k.float()
                q = q * _inverse_norm(q, scale, in_dtype)
                k = k * _inverse_norm(k, None, in_dtype)
                attn = kernels.scores(q.view(b, nw, h, n, d), k.view(b, nw, h, n, d), mask.float())
                attn = self.attn_drop(attn.softmax(dim=-1)).to(v.dtype)
                out = torch.matmul(attn.view(b * nw, h, n, n), v)
        out = out.view(b, nw, h, n, d).transpose(2, 3).reshape(b, nw, n, c)
        return self.proj_drop(kernels.linear(out, self.proj.weight, self.proj.bias))

    def _sdpa(self, x: torch.Tensor) -> bool:
        if self.use_sdpa == "auto":
            return x.is_cuda
        return self.use_sdpa == "always"

    def mask_dtype(self, x: torch.Tensor) -> torch.dtype:
        """The dtype :meth:`forward` wants the mask in for input ``x``: fp32 on the explicit path
        (whose logits are fp32), ``x``'s dtype for SDPA."""
        return x.dtype if self._sdpa(x) else torch.float32

