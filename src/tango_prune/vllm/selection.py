"""Exact-budget selection: a method's result trimmed or topped up to a fixed token count by saliency.

vLLM needs the kept count before the encoder runs; most methods keep exactly the budget, but Tango (and any
method whose count depends on the video) may keep a few tokens more or fewer. The excess is dropped
lowest-saliency first, the shortfall filled with the highest-saliency tokens the method dropped (their
original features); ties go to the lower grid index, so the choice is exact on every machine.
"""

from __future__ import annotations

import torch

from ..core.dpc import stable_argsort_desc
from ..core.merge import widen
from ..tokens import PruneResult, TokenKind, VideoTokens

__all__ = ["fit_to_budget"]


def fit_to_budget(tokens: VideoTokens, result: PruneResult, budget: int) -> PruneResult:
    """``result`` with exactly ``budget`` tokens (unchanged when it already has that many).

    ``info`` gains ``"budget_fit": {"method_kept": K, "added": a, "dropped": d}``.
    """
    n = tokens.num_tokens
    if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= n:
        raise ValueError(f"budget must be an integer in [1, {n}], got {budget!r}")
    K = result.num_kept
    if K == budget:
        return result
    sal = widen(tokens.require_saliency(result.info.get("method", "pruning")).reshape(-1))
    kept = result.indices
    kinds = result.kinds if result.kinds is not None else torch.full_like(kept, TokenKind.SALIENT)
    if K > budget:
        # rank the kept tokens by saliency (ties: lower index first) and keep the best `budget`
        order = stable_argsort_desc(sal[kept][None])[0][:budget]
        pick = torch.sort(order).values
        idx, feats, kinds = kept[pick], result.features[pick], kinds[pick]
        added, dropped = 0, K - budget
    else:
        free = torch.ones(n, dtype=torch.bool, device=kept.device)
        free[kept] = False
        cand = free.nonzero(as_tuple=True)[0]
        extra = cand[stable_argsort_desc(sal[cand][None])[0][: budget - K]]
        flat = tokens.features.reshape(n, -1)
        idx = torch.cat([kept, extra])
        feats = torch.cat([result.features, flat[extra].to(result.features.dtype)])
        kinds = torch.cat([kinds, torch.full_like(extra, TokenKind.SALIENT)])
        added, dropped = budget - K, 0
    info = dict(result.info, budget_fit={"method_kept": K, "added": added, "dropped": dropped})
    return PruneResult.from_indices(tokens, idx, features=feats, kinds=kinds, info=info)
