"""DivPrune's bounded (triangle-inequality) path against the dense greedy it replaces at length."""

from __future__ import annotations

import pytest
import torch

from tango_prune.core.dpc import first_copies
from tango_prune.core.strope import normalize
from tango_prune.methods.divprune import _copies, _distinct_normalized, max_min_select


def reference_max_min_select(x: torch.Tensor, k: int) -> torch.Tensor:
    """The greedy max-min selection as it was before the bounded path (commit d4e53ccb), one full pass
    over every row per pick: the oracle."""
    B, n, _ = x.shape
    out = torch.empty(B, k, dtype=torch.long)
    d = 1.0 - torch.matmul(x, x.transpose(1, 2))
    d[:, torch.arange(n), torch.arange(n)] = float("inf")
    out[:, 0] = d.amin(-1).argmax(-1)
    batch = torch.arange(B)
    mind = 1.0 - torch.einsum("bnd,bd->bn", x, x[batch, out[:, 0]])
    mind[batch, out[:, 0]] = -float("inf")
    for i in range(1, k):
        pick = mind.argmax(-1)
        out[:, i] = pick
        mind = torch.minimum(mind, 1.0 - torch.einsum("bnd,bd->bn", x, x[batch, pick]))
        mind[batch, pick] = -float("inf")
    return out


def _cases():
    g = torch.Generator().manual_seed(0)
    for trial in range(10):
        n = int(torch.randint(2, 160, (1,), generator=g))
        D = int(torch.randint(2, 48, (1,), generator=g))
        k = int(torch.randint(1, n + 1, (1,), generator=g))
        yield trial, n, D, k, torch.randn(1, n, D, generator=g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bounded_and_dense_paths_pick_what_the_reference_picks(dtype):
    for _, n, D, k, raw in _cases():
        x = normalize(raw.to(dtype))
        ref = reference_max_min_select(x, k)
        assert torch.equal(max_min_select(x, k, path="dense"), ref), (n, D, k)
        assert torch.equal(max_min_select(x, k, path="bounded", stride=7), ref), (n, D, k)


def test_clustered_rows_are_skipped_exactly():
    # Tight clusters are where the bound skips most rows: the picks must not change.
    g = torch.Generator().manual_seed(3)
    centres = torch.randn(30, 64, generator=g)
    raw = centres[torch.randint(30, (600,), generator=g)] + 0.05 * torch.randn(600, 64, generator=g)
    x = normalize(raw)[None]
    for k in (1, 30, 31, 120):
        assert torch.equal(max_min_select(x, k, path="bounded", stride=50), reference_max_min_select(x, k))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_copies_are_one_token_and_come_last_in_index_order(dtype):
    g = torch.Generator().manual_seed(1)
    for trial in range(12):
        distinct = int(torch.randint(4, 40, (1,), generator=g))
        n = int(torch.randint(distinct, 200, (1,), generator=g))
        base = torch.randn(distinct, 24, generator=g)
        # The first quarter of the base rows occur once: with copies everywhere the reference's first
        # pick would be decided by rounding noise (every nearest distance is 0 up to rounding).
        single = distinct // 4
        rows = torch.cat([torch.arange(distinct), torch.randint(single, distinct, (n - distinct,), generator=g)])
        rows = rows[torch.randperm(n, generator=g)]
        x = normalize(base[rows].to(dtype))[None]
        canon = first_copies(x)[0]
        u = int((canon == torch.arange(n)).sum())
        for k in (1, u // 2 + 1, u, min(n, u + 5), n):
            ref = reference_max_min_select(x, k)[0]
            dense = max_min_select(x, k, path="dense")[0]
            assert torch.equal(max_min_select(x, k, path="bounded", stride=5)[0], dense), (trial, k)
            head = min(k, u)
            # The reference picks the same distinct tokens, but which copy its BLAS rounding favours
            # varies; here a distinct token is always its first copy.
            assert torch.equal(canon[ref[:head]], dense[:head]), (trial, k)
            assert torch.equal(canon[dense[:head]], dense[:head])
            later = (canon != torch.arange(n)).nonzero()[:, 0]
            assert torch.equal(dense[head:], later[: k - head])


def test_zero_rows_stay_distinct_tokens():
    g = torch.Generator().manual_seed(2)
    raw = torch.randn(1, 60, 16, generator=g)
    raw[0, [3, 17, 40]] = 0.0
    x = normalize(raw)
    for k in (10, 60):
        ref = reference_max_min_select(x, k)
        assert torch.equal(max_min_select(x, k, path="bounded", stride=6), ref)
        assert torch.equal(max_min_select(x, k, path="dense"), ref)


def test_many_sets_take_the_dense_path_per_set():
    g = torch.Generator().manual_seed(4)
    x = normalize(torch.randn(5, 80, 12, generator=g))
    out = max_min_select(x, 9)
    for b in range(5):
        assert torch.equal(out[b], max_min_select(x[b : b + 1], 9, path="bounded")[0])
    with pytest.raises(ValueError, match="path"):
        max_min_select(x, 9, path="bounded")
    with pytest.raises(ValueError, match="path"):
        max_min_select(x, 9, path="fast")


def test_a_long_video_takes_the_bounded_path_with_the_dense_picks():
    import tango_prune as tp
    from tango_prune.methods.divprune import BOUNDED_MIN_ROWS
    from tango_prune.synthetic import synthetic_tokens

    tok = synthetic_tokens(21, grid=14, dim=16, seed=0, cut_every=8)  # 4116 tokens, static backgrounds
    assert tok.features.shape[0] * 196 >= BOUNDED_MIN_ROWS
    res = tp.prune(tok, "divprune", retention=0.1)
    x = normalize(tok.features.reshape(1, -1, 16))
    dense = max_min_select(x, res.num_kept, path="dense")[0]
    assert torch.equal(res.indices, torch.sort(dense).values)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_copies_found_on_the_raw_features_give_the_picks_of_the_normalised_video(dtype):
    # The video path detects copies before normalising. Rows that differ bitwise but are equal once
    # normalised (a frame times 2 or 0.5, exact in every dtype) must stay one token, as they are when
    # the whole video is normalised first; zero rows stay distinct.
    import tango_prune as tp
    from tango_prune.methods.divprune import BOUNDED_MIN_ROWS
    from tango_prune.synthetic import synthetic_tokens

    tok = synthetic_tokens(21, grid=14, dim=16, seed=0, cut_every=8)
    feats = tok.features.clone()
    feats[3] = feats[2] * 2.0  # bitwise different, equal after normalisation
    feats[11] = feats[10] * 0.5
    feats[5, :, :, :] = 0.0  # a frame of zero rows
    feats = feats.to(dtype)
    assert feats.shape[0] * 196 >= BOUNDED_MIN_ROWS
    raw = feats.reshape(-1, 16)
    assert not torch.equal(raw[3 * 196], raw[2 * 196])
    x = normalize(raw)[None]
    canon = _copies(x)[0]  # first_copies, zero rows excepted
    assert int(canon[3 * 196]) <= 2 * 196  # a copy once normalised
    xu, canon_new, _ = _distinct_normalized(raw)
    assert torch.equal(canon_new, canon)
    assert torch.equal(xu, x[0, canon == torch.arange(canon.numel())])
    res = tp.prune(tp.VideoTokens(feats, tok.saliency, tok.timestamps), "divprune", retention=0.1)
    dense = max_min_select(x, res.num_kept, path="dense")[0]
    assert torch.equal(res.indices, torch.sort(dense).values)


def test_normalising_in_blocks_gives_the_bits_of_normalising_at_once(monkeypatch):
    from tango_prune.methods import divprune

    g = torch.Generator().manual_seed(5)
    raw = torch.randn(37, 24, generator=g) * torch.logspace(-30, 30, 37)[:, None]  # both branches
    rows = torch.tensor([0, 2, 3, 5, 8, 13, 21, 34, 36])
    for block in (24, 48, 72, 1 << 20):  # one-row steps (merged), two-row blocks, a single block
        monkeypatch.setattr(divprune, "DEFAULT_BLOCK_ELEMS", block)
        assert torch.equal(divprune._normalize_rows(raw, rows), normalize(raw)[rows]), block
