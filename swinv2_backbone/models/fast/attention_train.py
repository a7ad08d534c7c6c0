"""Window attention for training, a chunk of windows at a time, with the probabilities recomputed in
the backward pass. Reference: the explicit path of
:func:`swinv2_backbone.models.kernels.attention` (``logits_qk``, scores + mask, softmax, ``@ v``)
under autograd.

Autograd through the reference keeps, per window and head, the heads-first q/k/v copy, the scaled q
and k, and the ``N x N`` probabilities, and its temporaries (scores, probabilities, their gradients)
are map-sized. :class:`_ChunkedAttention` saves the qkv projection output and two per-row norms
only and works ``step`` windows at a time (chunk-sized temporaries, reused by the allocator and
cache-resident: see :mod:`.chunked`): each chunk's q/k/v are copied to heads-first layout there and
its output is written straight into the layout the output projection reads, so no map-sized
heads-first copy or copy back exists.
"""
from __future__ import annotations

from typing import Iterator, Tuple, Union

import torch
from torch.autograd.function import once_differentiable

from ...compat import autocast_enabled
from .. import kernels
from ..kernels import AttentionArgs

#: A chunk holds the scores of at most this many (window, head, query, key) entries (768 KiB in
#: fp32: 16 windows of 64 tokens with 3 heads), whatever the map's size, so that its temporaries
#: (scores, probabilities, their gradients) stay cache-sized and are reused by the allocator.
CHUNK_SCORES = 3 * 64 * 1024

#: Lower bound of a q/k norm, as in :func:`~swinv2_backbone.models.ops.inverse_norm`.
NORM_EPS = 1e-12


def _factor(norm: torch.Tensor, scale: Union[torch.Tensor, float], cap: float
            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(min(scale / max(norm, eps), cap), passes)``: the factor :func:`~swinv2_backbone.models.ops.inverse_norm` multiplies a row
    by, and where a gradient reaches ``norm`` and ``scale`` through it (torch's clamps pass the
    gradient at equality: ``clamp_min`` where ``x >= min``, ``clamp_max`` where ``x <= max``)."""
    raw = scale / norm.clamp_min(NORM_EPS)
    return raw.clamp_max(cap), (norm >= NORM_EPS) & (raw <= cap)


def _heads_first(parts: torch.Tensor) -> torch.Tensor:
    """A contiguous ``(3, windows, heads, N, d)`` copy of ``(windows, N, 3, heads, d)`` (q, k, v).
    One copy per chunk: elementwise ops and reductions over ``d`` run several times faster on the
    contiguous copy than on strided views of the qkv output."""
    return parts.permute(2, 0, 3, 1, 4).contiguous()


def _image_runs(start: int, stop: int, rows: int) -> Iterator[Tuple[int, int, int]]:
    """``(offset, row, count)`` runs of windows ``start:stop`` (flattened ``B * nW``) that read
    consecutive rows ``row:row + count`` of a ``rows``-row mask, ``offset`` counted from ``start``."""
    index = start
    while index < stop:
        row = index % rows
        count = min(stop - index, rows - row)
        yield index - start, row, count
        index += count


def _probabilities(qs: torch.Tensor, ks: torch.Tensor, mask: torch.Tensor, start: int
                   ) -> torch.Tensor:
    """``softmax(qs @ ks^T + mask)`` for the ``(windows, heads, N, d)`` ``qs``, ``ks`` of windows
    ``start:`` (the mask is added image by image, as views of its rows)."""
    scores = torch.matmul(qs, ks.transpose(-2, -1))
    if mask.shape[0] == 1:
        scores.add_(mask)
    else:
        for offset, row, count in _image_runs(start, start + scores.shape[0], mask.shape[0]):
            scores[offset:offset + count].add_(mask[row:row + count])
    return scores.softmax(dim=-1)


class _ChunkedAttention(torch.autograd.Function):
    """``softmax(q' @ k'^T + mask) @ v`` over windows, ``step`` windows at a time, from the qkv
    projection output ``(W, N, 3 * heads * d)`` (q, k, v, each heads x d, per token) to the
    ``(W, N, heads * d)`` input of the output projection.

    ``q' = q * f_q``, ``k' = k * f_k``: with ``cosine``, ``f_q = min(scale / max(|q|, eps), cap)``
    and ``f_k = min(1 / max(|k|, eps), cap)`` per row (SwinV2; ``cap`` the dtype's largest value),
    else ``f_q = scale``, ``f_k = 1`` (Swin V1). ``scale`` is a ``(heads, 1, 1)`` tensor (it gets a
    gradient) or a float. ``mask``: ``(nW or 1, heads, N, N)``, window ``i`` taking row ``i % nW``;
    its gradient is summed over the windows sharing a row.

    Saved for the backward pass: the qkv output and, with ``cosine``, the q and k row norms; the
    scores and probabilities are recomputed chunk by chunk.
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, mask: torch.Tensor, scale: Union[torch.Tensor, float],
                heads: int, cosine: bool, step: int) -> torch.Tensor:
        wins, n, width = qkv.shape
        d = width // (3 * heads)
        parts = qkv.reshape(wins, n, 3, heads, d)
        out = qkv.new_empty(wins, n, heads, d)
        cap = torch.finfo(qkv.dtype).max
        norms = qkv.new_empty(2, wins, heads, n, 1) if cosine else None
        for start in range(0, wins, step):
            stop = min(start + step, wins)
            q, k, v = _heads_first(parts[start:stop]).unbind(0)
            if cosine:
                nq, nk = norms[0, start:stop], norms[1, start:stop]
                nq.copy_(torch.linalg.vector_norm(q, dim=-1, keepdim=True))
                nk.copy_(torch.linalg.vector_norm(k, dim=-1, keepdim=True))
                q.mul_(_factor(nq, scale, cap)[0])
                k.mul_(_factor(nk, 1.0, cap)[0])
            else:
                q.mul_(scale)
            probs = _probabilities(q, k, mask, start)
            out[start:stop].copy_(torch.matmul(probs, v).transpose(1, 2))
        tensor_scale = scale if isinstance(scale, torch.Tensor) else None
        ctx.save_for_backward(qkv, mask, tensor_scale, norms)
        ctx.setting = (scale if tensor_scale is None else None, heads, cosine, step)
        return out.view(wins, n, heads * d)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        qkv, mask, tensor_scale, norms = ctx.saved_tensors
        const_scale, heads, cosine, step = ctx.setting
        scale = const_scale if tensor_scale is None else tensor_scale
        need_qkv, need_mask, need_scale = ctx.needs_input_grad[:3]
        wins, n, width = qkv.shape
        d = width // (3 * heads)
        parts = qkv.reshape(wins, n, 3, heads, d)
        grad_heads = grad_out.reshape(wins, n, heads, d).transpose(1, 2)
        cap = torch.finfo(qkv.dtype).max
        grad_qkv = torch.empty_like(qkv) if need_qkv else None
        grad_parts = None if grad_qkv is None else grad_qkv.view(wins, n, 3, heads, d)
        grad_mask = torch.zeros_like(mask) if need_mask else None
        grad_scale = torch.zeros_like(tensor_scale) if need_scale else None
        for start in range(0, wins, step):
            stop = min(start + step, wins)
            q, k, v = _heads_first(parts[start:stop]).unbind(0)
            if cosine:
                nq, nk = norms[0, start:stop], norms[1, start:stop]
                fq, pass_q = _factor(nq, scale, cap)
                fk, pass_k = _factor(nk, 1.0, cap)
            else:
                fq, fk = scale, 1.0
            qs, ks = q * fq, (k * fk if cosine else k)
            probs = _probabilities(qs, ks, mask, start)
            grad_o = grad_heads[start:stop].contiguous()
            grad_s = torch.ops.aten._softmax_backward_data(
                torch.matmul(grad_o, v.transpose(-2, -1)), probs, -1, probs.dtype)
            if grad_mask is not None:
                _accumulate_mask(grad_mask, grad_s, start)
            if grad_qkv is None and grad_scale is None:
                continue
            grad_qs = torch.matmul(grad_s, ks)
            dot_q = (grad_qs * q).sum(-1, keepdim=True) if cosine else None
            if grad_scale is not None:
                # d q'/d scale = q / max(|q|, eps) where the factor is not capped
                grad_scale.add_(torch.where(pass_q, dot_q / nq.clamp_min(NORM_EPS), 0)
                                .sum((0, 2)).view_as(grad_scale))
            if grad_parts is None:
                continue
            grads = qs.new_empty((3, *qs.shape))  # dq, dk, dv: (3, windows, heads, N, d)
            torch.matmul(probs.transpose(-2, -1), grad_o, out=grads[2])
            grad_ks = torch.matmul(grad_s.transpose(-2, -1), qs)
            if cosine:
                _through_factor(grad_qs, dot_q, q, nq, fq, pass_q, grads[0])
                _through_factor(grad_ks, (grad_ks * k).sum(-1, keepdim=True), k, nk, fk, pass_k,
                                grads[1])
            else:
                torch.mul(grad_qs, fq, out=grads[0])
                grads[1].copy_(grad_ks)
            grad_parts[start:stop].copy_(grads.permute(1, 3, 0, 2, 4))
        return grad_qkv, grad_mask, grad_scale, None, None, None


def _through_factor(grad_scaled: torch.Tensor, dot: torch.Tensor, x: torch.Tensor,
                    norm: torch.Tensor, factor: torch.Tensor, passes: torch.Tensor,
                    out: torch.Tensor) -> None:
    """Write to ``out`` the gradient of ``x`` from that of ``x * factor(|x|)`` (``grad_scaled``, its
    row-wise dot product with ``x`` ``dot``), ``factor = s / |x|`` where ``passes``:
    ``factor * g - x * (g . x) * factor / |x|^2`` (the second term only where the gradient passes
    the clamps; a constant factor elsewhere). Overwrites ``grad_scaled``."""
    coef = torch.where(passes, dot * factor / norm.clamp_min(NORM_EPS).square(), 0)
    torch.addcmul(grad_scaled.mul_(factor), x, coef, value=-1, out=out)


def _accumulate_mask(grad_mask: torch.Tensor, grad_s: torch.Tensor, start: int) -> None:
    """Add the score gradient of the windows ``start:`` to the mask rows they read."""
    rows = grad_mask.shape[0]
    if rows == 1:
        grad_mask[0].add_(grad_s.sum(0))
        return
    for offset, row, count in _image_runs(start, start + grad_s.shape[0], rows):
        grad_mask[row:row + count].add_(grad_s[offset:offset + count])


def applies(windows: torch.Tensor, mask: torch.Tensor, args: AttentionArgs) -> bool:
    """Whether :func:`window_attention` takes over: the explicit (not SDPA) path, a gradient is
    needed, fp32 on CPU without autocast, and no attention dropout active (declined rather than reproduced: the reference draws its
    dropout mask over the map-sized probabilities, which this function never holds)."""
    if args.sdpa or not torch.is_grad_enabled() or autocast_enabled("cpu"):
        return False
    if args.dropout > 0:
        return False
    if windows.device.type != "cpu" or mask.dtype != torch.float32 or any(
            t is not None and t.dtype != torch.float32 for t in (windows, args.qkv.weight, args.qkv_bias)):
        return False
    b, nw, n, c = windows.shape
    if mask.shape not in ((1, args.num_heads, n, n), (nw, args.num_heads, n, n)):
        return False  # another broadcast shape (not one attention_mask builds): the reference
    return any(isinstance(t, torch.Tensor) and t.requires_grad
               for t in (windows, mask, args.qkv.weight, args.qkv_bias, args.q_scale))


def window_attention(windows: torch.Tensor, mask: torch.Tensor, args: AttentionArgs) -> torch.Tensor:
    """:attr:`Kernels.attention <swinv2_backbone.models.kernels.Kernels>`: the qkv projection, then
    :func:`chunked_attention`, where :func:`applies`; else the reference."""
    if not applies(windows, mask, args):
        return kernels.attention(windows, mask, args)
    qkv = kernels.active().linear(windows, args.qkv, args.qkv_bias)
    return chunked_attention(qkv, mask, args)


def chunked_attention(qkv: torch.Tensor, mask: torch.Tensor, args: AttentionArgs) -> torch.Tensor:
    """The attention by :class:`_ChunkedAttention` from the ``(B, nW, N, 3C)`` qkv projection
    output and the ``(nW or 1, heads, N, N)`` mask, as the ``(B, nW, N, C)`` input of the output
    projection."""
    b, nw, n, width = qkv.shape
    step = max(1, CHUNK_SCORES // (args.num_heads * n * n))
    out = _ChunkedAttention.apply(qkv.reshape(b * nw, n, width), mask, args.q_scale, args.num_heads,
                                  args.cosine, step)
    return out.view(b, nw, n, width // 3)
