"""Intra-LLM FastV stage of LLaVA-Video (docs/algorithm.md §4), as forward pre-hooks on the upstream decoder layers.

Configured by its own object, :class:`FastVConfig` (``tango_prune.apply(model, config, stages=[FastVConfig()])``),
never by a method config, so it combines with any method. With 1-based ``layer`` K (published: 18 of 28; it
must be below the checkpoint's own layer count, read from its config) and keep fraction ``keep`` (0.5):

- at the input of 0-based layer K-1 the attention of the **last prompt token** over the visual tokens (newlines
  included) is computed for that one query row only, in fp32, causally (the published code ran this layer
  without a causal mask: fixed), averaged over heads;
- before 0-based layer K, per video the top ``round(n * keep)`` tokens (ties: lower index) are kept;
  every other visual token is assigned to the kept token of highest cosine similarity and the kept token
  becomes ``0.6 h + 0.4 (h + sum assigned) / (1 + count)``; the sequence is gathered, every token keeps its
  original rotary position, and layers >= K see the shorter sequence (their KV cache holds only it);
- decoding continues from the unpruned pre-LLM length; layers >= K get a mask sized for their shorter cache.

The last prompt token (not the last token of every forward) is the query so that decoding with or without a
KV cache gives the same tokens. Only ``sdpa`` and ``eager`` attention are supported (both need a 4-D mask
here).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, ClassVar

import torch

from .base import Stage, StageConfig
from .common import right_aligned_columns

__all__ = ["FastV", "FastVConfig", "FastVPlan"]


@dataclasses.dataclass(frozen=True)
class FastVConfig(StageConfig):
    """The intra-LLM FastV stage: prune the visual tokens once more at the input of LLM layer ``layer``.

    - ``layer`` (18): 1-based decoder layer before which the stage prunes; the scores come from the layer
      before it. It must be in [1, n - 1] for an n-layer language model (checked at ``apply``).
    - ``keep`` (0.5): fraction of each video's visual tokens kept from that layer on, in (0, 1].

    The defaults are the published LLaVA-Video run (layer 18 of 28, half the tokens).
    """

    stage_name: ClassVar[str] = "FastV"
    layer: int = 18
    keep: float = 0.5

    def __post_init__(self) -> None:
        from ..validate import check_int, check_unit_interval

        check_int("fastv.layer", self.layer, 1)
        check_unit_interval("fastv.keep", self.keep, low_open=True, high_open=False)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class FastVPlan:
    """What the adapter tells the stage about one pruned call before the LLM runs."""

    #: the encoder output object passed to the LLM (identifies the prefill forward of this call)
    video: Any
    #: (row, start, length) of every video's visual sequence in the compacted prompt
    spans: list[tuple[int, int, int]]
    #: length of the compacted prompt and its attention mask (None: no padding)
    prompt_len: int
    prompt_mask: torch.Tensor | None


class FastV(Stage):
    """The FastV stage of one model instance: its hooks and its per-call state (typed attributes)."""

    def __init__(self, model: Any, state: Any, layer: int, keep: float) -> None:
        lm = model.model.language_model
        n = len(lm.layers)
        if not 1 <= layer < n:
            raise ValueError(f"fastv.layer must be in [1, {n - 1}] for this {n}-layer language model, got {layer}")
        impl = lm.config._attn_implementation
        if impl not in ("sdpa", "eager"):
            raise ValueError(f"fastv needs attn_implementation 'sdpa' or 'eager', got {impl!r}")
        self.K, self.keep, self.state, self.impl = layer, keep, state, impl
        self.plan: FastVPlan | None = None
        #: "prefill" / "decode" while a forward of a pruned call runs, else None
        self.mode: str | None = None
        self.cache: Any = None
        self.scores: torch.Tensor | None = None
        #: (B, L) attention of the last prompt token at layer K-1 in the last prefill (for inspection)
        self.last_scores: torch.Tensor | None = None
        self.run: dict[str, Any] = {}
        self.handles = [
            lm.layers[i].register_forward_pre_hook(self._hook(i), with_kwargs=True) for i in range(layer - 1, n)
        ]

    def remove(self) -> None:
        """Remove the hooks."""
        for h in self.handles:
            h.remove()
        self.handles = []

    def _plan(self) -> FastVPlan:
        if self.plan is None:  # the hooks run only in a pruned call's forward, after rewrite() planned it
            raise RuntimeError("FastV stage ran outside a pruned call")
        return self.plan

    # -- the stage protocol ------------------------------------------------------------------------------
    def enter(self, kwargs: dict[str, Any], rewritten: bool) -> None:
        """Decide whether this forward is the prefill of a pruned call, one of its decoding steps, or
        unrelated (then the hooks do nothing)."""
        video = (kwargs.get("mm_encoder_outputs") or {}).get("video")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))  # the deprecated name is still accepted
        if self.plan is not None and (rewritten or (video is not None and video is self.plan.video)):
            self.mode = "prefill"
        elif cache is not None and cache is self.cache:
            self.mode = "decode"
        else:
            self.mode = None

    def exit(self, out: Any) -> None:
        """After the forward: remember the prefill's cache so the decoding steps are recognised."""
        if self.mode == "prefill" and out is not None:
            self.cache = getattr(out, "cache", None)
        self.mode = None

    # -- hooks -----------------------------------------------------------------------------------------
    def _hook(self, idx: int):
        def hook(module, args, kwargs):
            if self.mode is None:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            cache = kwargs.get("cache")
            past = cache.get_seq_length(idx) if cache is not None else 0
            if past == 0:
                if idx == self.K - 1:
                    self.scores = self._scores(module, hidden, kwargs)
                    return None
                if idx == self.K:
                    hidden = self._prune(hidden, kwargs)
                return self._replace(args, kwargs, hidden, self.run["prefill"])
            if idx >= self.K:
                return self._replace(args, kwargs, hidden, self._decode_kwargs(kwargs, hidden, past))
            return None

        return hook

    @staticmethod
    def _replace(args, kwargs, hidden, new_kwargs):
        kwargs = dict(kwargs)
        kwargs.update(new_kwargs)
        if args:
            return (hidden, *args[1:]), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs

    def _query_cols(self, B: int, device: torch.device) -> torch.Tensor:
        """Column of the last prompt token of every row."""
        plan = self._plan()
        pm = plan.prompt_mask
        if pm is None:
            return torch.full((B,), plan.prompt_len - 1, dtype=torch.long, device=device)
        cols = torch.arange(pm.shape[1], device=device)
        return torch.where(pm.to(device).bool(), cols, torch.full_like(cols, -1)).amax(dim=1)

    def _valid(self, B: int, L: int, device: torch.device) -> torch.Tensor:
        """(B, L) bool: real (non-padding) tokens of the current full-length forward."""
        pm = self._plan().prompt_mask
        valid = torch.ones(B, L, dtype=torch.bool, device=device)
        if pm is not None:
            valid[:, : pm.shape[1]] = pm.to(device).bool()
        return valid

    def _scores(self, layer: Any, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """(B, L) fp32 head-averaged attention of the last prompt token, one query row per sample."""
        attn = layer.self_attn
        rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        B, L, _ = hidden.shape
        x = layer.input_layernorm(hidden)
        qcol = self._query_cols(B, hidden.device)
        xq = x[torch.arange(B, device=x.device), qcol][:, None]  # (B, 1, D)
        hd = attn.head_dim
        q = attn.q_proj(xq).view(B, 1, -1, hd).transpose(1, 2)
        k = attn.k_proj(x).view(B, L, -1, hd).transpose(1, 2)
        cos, sin = (t.expand(B, -1, -1) for t in kwargs["position_embeddings"])
        idx = qcol[:, None, None].expand(B, 1, cos.shape[-1])
        q, _ = rope(q, q, torch.gather(cos, 1, idx), torch.gather(sin, 1, idx))
        _, k = rope(k, k, cos, sin)
        k = k.repeat_interleave(attn.num_key_value_groups, dim=1)
        logits = (q.float() @ k.float().transpose(-1, -2))[:, :, 0] * attn.scaling  # (B, nh, L)
        cols = torch.arange(L, device=x.device)
        allowed = self._valid(B, L, x.device) & (cols[None] <= qcol[:, None])  # causal + padding
        logits = logits.masked_fill(~allowed[:, None], float("-inf"))
        return torch.softmax(logits, dim=-1).mean(dim=1)

    def _prune(self, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """Select, merge and gather before layer K; records the shorter layout for the later layers."""
        scores, self.scores = self.scores, None
        if scores is None:  # layer K-1's hook always runs first in a prefill
            raise RuntimeError("FastV stage: no scores from layer K-1 in this prefill")
        self.last_scores = scores
        B, L, D = hidden.shape
        dev = hidden.device
        keep = torch.ones(B, L, dtype=torch.bool, device=dev)
        out = hidden.clone()  # why: the merge writes kept rows; the caller's tensor stays untouched
        for row, start, n in self._plan().spans:
            k = max(1, round(n * self.keep))
            order = torch.sort(scores[row, start : start + n], descending=True, stable=True).indices
            top, rest = order[:k].sort().values, order[k:]
            keep[row, start + rest] = False
            if rest.numel():
                h = hidden[row, start : start + n].float()
                hn = torch.nn.functional.normalize(h, dim=-1)
                assign = (hn[rest] @ hn[top].T).argmax(dim=1)
                sums = h[top].clone().index_add_(0, assign, h[rest])
                counts = torch.ones(k, device=dev).index_add_(0, assign, torch.ones(rest.numel(), device=dev))
                merged = 0.6 * h[top] + 0.4 * sums / counts[:, None]
                out[row, start + top] = merged.to(hidden.dtype)
        spans = self._plan().spans
        self.state.stats["visual_tokens_after_fastv"] = sum(max(1, round(n * self.keep)) for _, _, n in spans)
        # Rows keep different numbers of tokens: right-align them (left padding) so that the tokens generate
        # appends follow every row's prompt directly; positions travel with the gathered rotary embeddings.
        cols = right_aligned_columns(keep & self._valid(B, L, dev))
        Lp = cols.shape[1]
        valid = cols >= 0  # padding of the input was dropped with the pruned tokens
        safe = cols.clamp(min=0)
        new_hidden = torch.gather(out, 1, safe[..., None].expand(B, Lp, D))
        cos, sin = (t.expand(B, -1, -1) for t in kwargs["position_embeddings"])
        pe = tuple(torch.gather(t, 1, safe[..., None].expand(B, Lp, t.shape[-1])) for t in (cos, sin))
        prefill = {"position_embeddings": pe, "attention_mask": self._mask(valid, Lp, Lp, hidden.dtype)}
        if kwargs.get("position_ids") is not None:
            pos = kwargs["position_ids"]
            prefill["position_ids"] = torch.gather(pos.expand(B, -1), 1, safe) if pos.dim() == 2 else pos
        self.run = {"valid": valid, "prefill": prefill, "kept_tokens": int(valid.sum())}
        return new_hidden

    def _decode_kwargs(self, kwargs: dict, hidden: torch.Tensor, past: int) -> dict:
        valid = self.run["valid"]
        B, q = hidden.shape[:2]
        kv = past + q
        if kwargs.get("attention_mask") is None and bool(valid.all()):
            return {}
        ext = torch.ones(B, kv, dtype=torch.bool, device=hidden.device)
        ext[:, : valid.shape[1]] = valid
        return {"attention_mask": self._mask(ext, q, kv, hidden.dtype)}

    def _mask(self, valid_kv: torch.Tensor, q: int, kv: int, dtype: torch.dtype) -> torch.Tensor:
        """(B, 1, q, kv) causal + padding mask in the format of the attention implementation."""
        dev = valid_kv.device
        qpos = torch.arange(kv - q, kv, device=dev)
        allowed = (torch.arange(kv, device=dev)[None] <= qpos[:, None])[None] & valid_kv[:, None]
        allowed = allowed | (torch.arange(kv, device=dev)[None] == qpos[:, None])[None]  # padded rows: no NaN
        allowed = allowed[:, None]
        if self.impl == "sdpa":
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill(~allowed, torch.finfo(dtype).min)
