"""Behaviour specific to each baseline, and Tango's ablation switches."""

from __future__ import annotations

import pytest
import torch

import tango_prune as tp
from tango_prune.methods._common import allocate, spread
from tango_prune.methods.divprune import max_min_select
from tango_prune.methods.dycoke import reference_frame
from tango_prune.methods.uniform import lattice
from tango_prune.tokens import TokenKind
from _videos import dynamic_video, scene_video


def test_topk_keeps_highest_saliency_per_frame():
    v = dynamic_video(T=3)
    res = tp.prune(v, "topk", retention=0.25)
    m = res.mask()
    for t in range(3):
        kept = v.saliency[t][m[t]]
        dropped = v.saliency[t][~m[t]]
        assert kept.min() >= dropped.max()
    assert torch.equal(res.features, v.features.reshape(-1, 16)[res.indices])


def test_topk_ties_go_to_lower_index():
    v = tp.VideoTokens(torch.randn(2, 3, 3, 4), torch.ones(2, 3, 3))
    res = tp.prune(v, "topk", retention=0.3)  # 3 per frame
    assert res.indices.tolist() == [0, 1, 2, 9, 10, 11]


def test_random_seed_changes_choice_and_is_local():
    v = dynamic_video(T=3)
    state = torch.random.get_rng_state()
    a = tp.prune(v, "random", retention=0.2, seed=0)
    b = tp.prune(v, "random", retention=0.2, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert not torch.equal(a.indices, b.indices)
    assert torch.equal(a.per_frame_counts(), b.per_frame_counts())


def test_uniform_pools_to_means_and_identity_at_full_retention():
    v = dynamic_video(T=2, H=4, W=6)
    full = tp.prune(v, "uniform", retention=1.0)
    assert torch.allclose(full.features, v.features.reshape(-1, 16))
    res = tp.prune(v, "uniform", retention=0.25)  # 6 cells per frame
    assert res.num_kept == 12
    # The pooled features average to the frame mean weighted by cell sizes: check the total sum.
    _, P = __import__("tango_prune.methods.uniform", fromlist=["pooling_matrix"]).pooling_matrix(4, 6, 6, "cpu")
    counts = (P > 0).sum(1).float()
    total = (res.features[:6] * counts[:, None]).sum(0)
    assert torch.allclose(total, v.features[0].reshape(-1, 16).sum(0), atol=1e-4)
    assert bool((res.kinds == TokenKind.CONTEXT).all())


@pytest.mark.parametrize("H,W,K", [(14, 14, 20), (5, 7, 4), (3, 10, 7), (1, 9, 3), (6, 6, 36), (2, 2, 1)])
def test_uniform_lattice_distinct_and_spread(H, W, K):
    cells = lattice(H, W, K)
    assert cells.numel() == K and torch.unique(cells).numel() == K
    assert int(cells.min()) >= 0 and int(cells.max()) < H * W


def test_visionzip_dominant_are_top_saliency_and_context_merged():
    v = dynamic_video(T=2, H=8, W=8)
    res = tp.prune(v, "visionzip", retention=0.5, context_ratio=0.25)  # 32 per frame: 24 + 8
    assert res.info["dominant_per_frame"] == 24 and res.info["contextual_per_frame"] == 8
    flat_s = v.saliency.reshape(2, 64)
    for t in range(2):
        sel = res.positions[:, 0] == t
        dom = res.indices[sel & (res.kinds == TokenKind.SALIENT)] - t * 64
        assert set(dom.tolist()) == set(torch.sort(flat_s[t], descending=True, stable=True).indices[:24].tolist())
    ctx = res.kinds == TokenKind.CONTEXT
    orig = v.features.reshape(-1, 16)[res.indices[ctx]]
    assert not torch.allclose(res.features[ctx], orig)  # contextual tokens carry means


def test_divprune_blocked_equals_dense_and_prefers_outliers():
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(2, 50, 8, generator=g), dim=-1)
    assert torch.equal(max_min_select(x, 10), max_min_select(x, 10, block_elems=64))
    # A cluster of near-identical tokens plus 3 distinct ones: those 3 are picked before any duplicate.
    base = torch.nn.functional.normalize(torch.randn(1, 8, generator=g), dim=-1)
    pts = torch.cat([base.repeat(20, 1) + 1e-3 * torch.randn(20, 8, generator=g), torch.eye(8)[:3] * 5])
    sel = max_min_select(torch.nn.functional.normalize(pts, dim=-1)[None], 4)[0]
    assert set(range(20, 23)) <= set(sel.tolist())


def test_divprune_frame_scope_is_per_frame():
    res = tp.prune(dynamic_video(T=3), "divprune", retention=0.25, scope="frame")
    assert res.per_frame_counts().tolist() == [9, 9, 9]


def test_dycoke_reference_and_keeps_changed_tokens():
    assert [reference_frame(f) for f in range(8)] == [None, 0, 0, 2, None, 4, 4, 6]
    g = torch.Generator().manual_seed(0)
    F = torch.randn(1, 4, 4, 16, generator=g).repeat(2, 1, 1, 1)
    F[1, 0, :3] = torch.randn(3, 16, generator=g)  # positions 0, 1, 2 change in frame 1
    res = tp.prune(tp.VideoTokens(F), "dycoke", retention=1.0 / 16 * 2)  # 4 tokens in total
    frame1 = res.indices[res.positions[:, 0] == 1] - 16
    assert set(range(3)) <= set(frame1.tolist()) or res.info["per_frame"][1] < 3
    high = tp.prune(tp.VideoTokens(F), "dycoke", retention=0.7)
    assert not high.info["anchor_pruned"]
    assert set(range(3)) <= set((high.indices[high.positions[:, 0] == 1] - 16).tolist())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_dycoke_keeps_the_least_similar_tokens_of_the_formula(dtype):
    """Each non-anchor frame keeps its k tokens of lowest (normalize(frame) * normalize(ref)).sum(-1), ties to
    the lower index: the similarity is computed through reused buffers with the bits of that formula."""
    from tango_prune.core.strope import normalize

    g = torch.Generator().manual_seed(3)
    F = torch.randn(7, 5, 6, 40, generator=g).to(dtype)
    F[2, 1] = F[0, 1]  # exact copies of the reference: similarity 1, never kept first
    res = tp.prune(tp.VideoTokens(F), "dycoke", retention=0.2)
    X = F.reshape(7, 30, 40)
    for f in range(7):
        ref, k = reference_frame(f), res.info["per_frame"][f]
        if ref is None:
            continue
        sim = (normalize(X[f]) * normalize(X[ref])).sum(-1)
        want = torch.sort(sim, stable=True).indices[:k] + f * 30
        assert res.indices[res.positions[:, 0] == f].tolist() == sorted(want.tolist())


def test_dycoke_anchor_pruning_flag():
    res = tp.prune(dynamic_video(T=8), "dycoke", retention=0.1)
    assert res.info["anchor_pruned"]
    counts = res.per_frame_counts()
    assert counts[0] > counts[1] and counts[4] > counts[5]


def test_fastvid_segments_follow_scenes_and_budget():
    v = scene_video(T=8)
    res = tp.prune(v, "fastvid", retention=0.25, num_segments=2, tau=0.3)
    assert res.info["segments"] == [4, 4]
    assert res.num_kept == 8 * 9
    ctx = res.positions[res.kinds == TokenKind.CONTEXT][:, 0]
    assert set(ctx.tolist()) <= {0, 4}  # contextual tokens sit on anchor frames


def test_fastvid_high_retention_shrinks_anchor_step():
    res = tp.prune(scene_video(T=8), "fastvid", retention=1.0, num_segments=2, tau=0.3)
    assert res.num_kept == 8 * 36


def test_holitom_static_merging_and_matching_tango_budget():
    v = scene_video(T=8)
    res = tp.prune(v, "holitom", retention=0.2)
    tango = tp.prune(v, "tango", retention=0.2)
    assert res.info["segments"] == tango.info["segments"]
    assert res.info["static_positions"] == tango.info["static_positions"]
    assert res.info["by_kind"]["static"] > 0
    assert abs(res.num_kept - tango.num_kept) <= 8


def test_holitom_needs_per_token_metric():
    v = dynamic_video()
    bad = tp.VideoTokens(v.features, v.saliency, metric=torch.randn(4, 5))
    with pytest.raises(ValueError, match="metric"):
        tp.prune(bad, "holitom", retention=0.2)


# -- Tango ablations ---------------------------------------------------------------------------


def test_tango_without_diversity_and_context_is_topk():
    v = dynamic_video(T=4, H=6, W=6, D=64)
    a = tp.prune(v, "tango", retention=0.25, diversity=False, merge_context=False, segmentation="none")
    b = tp.prune(v, "topk", retention=0.25)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.features, b.features)


def test_tango_without_context_merging_keeps_original_features():
    v = dynamic_video(T=4, D=64)
    res = tp.prune(v, "tango", retention=0.25, merge_context=False)
    assert bool((res.kinds == TokenKind.SALIENT).all())
    assert torch.equal(res.features, v.features.reshape(-1, 64)[res.indices])
    assert res.num_kept == tp.prune(v, "tango", retention=0.25).num_kept


def test_tango_without_strope_differs_but_keeps_budget():
    v = dynamic_video(T=6, H=8, W=8, D=64, seed=5)
    on = tp.prune(v, "tango", retention=0.2)
    off = tp.prune(v, "tango", retention=0.2, strope=False)
    again = tp.prune(v, "tango", retention=0.2, strope=False)
    assert on.num_kept == off.num_kept
    assert torch.equal(off.indices, again.indices)
    assert not (torch.equal(on.indices, off.indices) and torch.equal(on.features, off.features))


@pytest.mark.parametrize(
    "total,weights,cap",
    [(10, [1, 1, 1], 5), (7, [1, 0.3, 0.3, 0.3], 3), (0, [1, 1], 2), (12, [1, 0.3, 0.3, 0.3], 3), (5, [0, 0], 3)],
)
def test_allocate_exact_and_capped(total, weights, cap):
    out = allocate(total, weights, cap)
    assert sum(out) == total and all(0 <= x <= cap for x in out)


def test_spread():
    assert spread(10, 1).tolist() == [0]
    assert spread(10, 10).tolist() == list(range(10))
    s = spread(11, 4).tolist()
    assert s[0] == 0 and s[-1] == 10 and len(set(s)) == 4
