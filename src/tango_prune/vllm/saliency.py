"""Saliency of vLLM's Qwen vision towers, the same quantity as :func:`tango_prune.models.qwen2_5_vl.qwen_frame_saliency`.

A forward pre-hook on the last block's attention module (``visual.blocks[-1].attn``; a hook on the block
itself never fires when vLLM compiles the block) captures its normalised input and rotary tables; the
saliency is then computed for that block only, in fp32, from its own weights: per temporal step, the mean
query of the step's patches attends over the merge-averaged keys of its merged tokens; softmax over the
step's merged tokens, averaged over heads.

Tensor parallelism: with the default ``mm_encoder_tp_mode="weights"`` each rank holds a slice of the heads;
the per-head probabilities are summed locally, all-reduced across the tensor-parallel group and divided by
the total head count, so every rank gets the same saliency (and the same kept tokens).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import torch

__all__ = ["capture_attention_input", "vit_saliency", "all_reduce_heads"]


@contextlib.contextmanager
def capture_attention_input(attn: Any) -> Iterator[dict[str, torch.Tensor]]:
    """While active, the last call of ``attn`` stores its input ``x`` and rotary ``cos``/``sin`` in the
    yielded dict."""
    cap: dict[str, torch.Tensor] = {}

    def hook(_module: Any, args: tuple, kwargs: dict) -> None:
        cap["x"] = args[0] if args else kwargs["x"]
        cap["cos"] = kwargs["rotary_pos_emb_cos"]
        cap["sin"] = kwargs["rotary_pos_emb_sin"]

    handle = attn.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield cap
    finally:
        handle.remove()


def _rotate(attn: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """vLLM's own rotary formula (``ApplyRotaryEmb.forward_static``) on fp32 inputs (n, heads, hd)."""
    rot = attn.apply_rotary_emb
    return type(rot).forward_static(x[None], cos.float(), sin.float(), rot.is_neox_style, True)[0]


def vit_saliency(
    attn: Any,
    cap: dict[str, torch.Tensor],
    grids: list[list[int]],
    merge: int,
    reverse: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Per-video saliency (t, h/merge, w/merge) fp32 from a capture of the last block's attention input.

    ``reverse`` maps merge units of the captured layout back to raster order (Qwen2.5-VL's window
    permutation); None when the tower keeps raster order."""
    x = cap["x"].reshape(cap["x"].shape[0], -1)
    unit = merge * merge
    seq, C = x.shape
    nh = attn.num_attention_heads_per_partition
    hd = attn.hidden_size_per_attention_head
    tp = getattr(attn, "tp_size", 1)
    h_r = x.reshape(seq // unit, unit, C)
    cos_r = cap["cos"].reshape(seq // unit, unit, -1)
    sin_r = cap["sin"].reshape(seq // unit, unit, -1)
    if reverse is not None:
        h_r, cos_r, sin_r = h_r[reverse], cos_r[reverse], sin_r[reverse]
    out, pos = [], 0
    for t, h, w_ in grids:
        u = (h // merge) * (w_ // merge)
        sal = torch.empty(t, u, dtype=torch.float32, device=x.device)
        for step in range(t):  # one temporal step at a time: memory stays at one frame's q/k
            sl = slice(pos + step * u, pos + (step + 1) * u)
            # why: the layer itself, not its weight (vLLM's CPU GEMM dispatch repacks and drops the weight)
            qkv, _ = attn.qkv(h_r[sl].reshape(u * unit, C))
            q, k, _ = qkv.float().reshape(u * unit, 3, nh, hd).unbind(1)
            cos, sin = cos_r[sl].reshape(u * unit, -1), sin_r[sl].reshape(u * unit, -1)
            q, k = _rotate(attn, q, cos, sin), _rotate(attn, k, cos, sin)
            q_mean = q.mean(dim=0)  # (nh, hd): the step's mean query
            k_unit = k.reshape(u, unit, nh, hd).mean(dim=1)  # (u, nh, hd): key of each merged token
            probs = torch.softmax(torch.einsum("hd,uhd->hu", q_mean, k_unit) / math.sqrt(hd), dim=-1)
            sal[step] = probs.mean(dim=0) if tp == 1 else probs.sum(dim=0)
        out.append(sal.reshape(t, h // merge, w_ // merge))
        pos += t * u
    if tp > 1:
        flat = all_reduce_heads(torch.cat([s.reshape(-1) for s in out]), nh * tp)
        out = [f.reshape(s.shape) for f, s in zip(flat.split([s.numel() for s in out]), out)]
    return out


def all_reduce_heads(per_rank_sum: torch.Tensor, heads: int) -> torch.Tensor:
    """Sum the per-rank head sums over the tensor-parallel group and divide by the total head count."""
    from vllm.distributed import tensor_model_parallel_all_reduce

    return tensor_model_parallel_all_reduce(per_rank_sum) / heads
