import math

import pytest
import torch

import tango_prune as tp
from conftest import make_tokens
from reference_tango import ref_tango
from tango_prune.core.tango import compressor_budget, tango_prune


# -- budgets (docs/algorithm.md §2.9) -----------------------------------------------------------------
@pytest.mark.parametrize("r,kept", [(0.10, 640), (0.15, 960), (0.20, 1280)])
@pytest.mark.parametrize("segmentation", ["none", "holitom", "fastvid"])
def test_budget_table_llava_ov(r, kept, segmentation):
    tok = make_tokens(T=32, H=14, W=14, D=16, seed=1)
    res = tp.prune(tok, "tango", retention=r, segmentation=segmentation)
    assert res.num_kept == kept
    if set(res.info["segments"]) == {1}:
        # single-frame segments: every frame spends its own budget; otherwise context anchors are pooled
        # over the segment (docs/algorithm.md §2.5) and a frame may hold more or fewer of them
        assert res.per_frame_counts().tolist() == [kept // 32] * 32


@pytest.mark.parametrize("r,kept", [(0.10, 1344), (0.15, 1984), (0.20, 2688)])
def test_budget_table_llava_video(r, kept):
    cfg = tp.TangoConfig.preset("llava-video", retention=r, fastv=tp.FastVConfig(), segmentation="none")
    assert math.isclose(cfg.retention, 28 * r / 23)
    tok = make_tokens(T=64, H=13, W=13, D=8, seed=2)
    assert tp.prune(tok, cfg).num_kept == kept


def test_budget_with_static_positions():
    # 8 frames x 196, S = 50 static, r = 0.1: r' = 0.12874, static K = 7, dynamic R = 19 -> 7 + 152 = 159.
    tok = make_tokens(T=8, H=14, W=14, D=32, seed=3, static=50)
    res = tp.prune(tok, "tango", retention=0.1, segmentation="none")
    assert res.info["static_positions"] == [50]
    assert res.num_kept == 159
    assert res.info["by_kind"]["static"] == 7
    static = res.kinds == tp.TokenKind.STATIC
    assert (res.positions[static, 0] == 0).all()  # placed at the segment's first frame


def test_compressor_budget_rounding():
    assert compressor_budget(196, 0.1, 0.4) == (12, 8)
    assert compressor_budget(0, 0.1, 0.4) == (0, 0)
    assert compressor_budget(3, 0.01, 0.4) == (0, 1)  # K = max(1, ceil(.03)) = 1 -> all context


# -- oracle: the naive dense reference ------------------------------------------------------------
CASES = [
    dict(T=1, H=7, W=7, static=0, cfg=dict()),
    dict(T=5, H=6, W=6, static=0, cfg=dict(segmentation="none")),
    dict(T=6, H=6, W=5, static=12, cfg=dict(segmentation="none", retention=0.2)),
    dict(T=6, H=6, W=6, static=10, cfg=dict(retention=0.3, compat="published", segmentation="none")),
    dict(T=4, H=5, W=7, static=8, cfg=dict(retention=0.15, sinks=((0, 0), (2, 3)), segmentation="none")),
    dict(T=4, H=6, W=6, static=0, cfg=dict(retention=0.25, strope=False, segmentation="none")),
    dict(T=4, H=6, W=6, static=5, cfg=dict(retention=0.25, diversity=False, segmentation="none")),
    dict(T=4, H=6, W=6, static=5, cfg=dict(retention=0.25, merge_context=False, segmentation="none")),
    dict(T=6, H=5, W=5, static=9, cfg=dict(retention=0.2)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c["cfg"]))
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference(case, seed):
    tok = make_tokens(T=case["T"], H=case["H"], W=case["W"], D=18, seed=seed, static=case["static"], fps=2.0)
    cfg = tp.TangoConfig(**{"retention": 0.1, **case["cfg"]})
    res = tp.prune(tok, cfg)
    idx, feats = ref_tango(tok.features, tok.saliency, tok.timestamps, cfg, sizes=res.info["segments"])
    assert res.indices.tolist() == idx
    ref = torch.stack([feats[i] for i in idx]).float()
    assert torch.allclose(res.features, ref, atol=1e-5)


def test_reference_segmentation_agrees():
    tok = make_tokens(T=6, H=5, W=5, D=18, seed=4, static=9)
    cfg = tp.TangoConfig(retention=0.2, tau_segment=0.8)
    res = tp.prune(tok, cfg)
    assert res.indices.tolist() == ref_tango(tok.features, tok.saliency, tok.timestamps, cfg)[0]


# -- fixes and compat -----------------------------------------------------------------------------
def test_published_compat_only_permutes_anchor_features():
    tok = make_tokens(T=4, H=8, W=8, D=16, seed=5)
    fixed = tp.prune(tok, "tango", retention=0.3, segmentation="none")
    pub = tp.prune(tok, "tango", retention=0.3, segmentation="none", compat="published")
    assert torch.equal(fixed.indices, pub.indices)
    ctx = fixed.kinds == tp.TokenKind.CONTEXT
    assert torch.equal(fixed.features[~ctx], pub.features[~ctx])
    a = sorted(map(tuple, fixed.features[ctx].tolist()))
    b = sorted(map(tuple, pub.features[ctx].tolist()))
    assert a == b and not torch.equal(fixed.features[ctx], pub.features[ctx])


def test_salient_tokens_keep_original_features_and_positions_match_indices():
    tok = make_tokens(T=3, H=7, W=9, D=12, seed=6)
    res = tp.prune(tok, "tango", retention=0.2)
    T, H, W = res.grid
    assert torch.equal(res.positions[:, 0] * H * W + res.positions[:, 1] * W + res.positions[:, 2], res.indices)
    sal = res.kinds == tp.TokenKind.SALIENT
    flat = tok.features.reshape(-1, 12)
    assert torch.equal(res.features[sal], flat[res.indices[sal]])


def test_sinks_are_never_salient_and_input_saliency_untouched():
    tok = make_tokens(T=2, H=6, W=6, D=12, seed=7)
    sal = tok.saliency.clone()
    sal[:, 1, 2] = 100.0
    tok = tp.VideoTokens(tok.features, sal, tok.timestamps)
    with_sink = tp.prune(tok, "tango", retention=0.2, sinks=((1, 2),), merge_context=False)
    without = tp.prune(tok, "tango", retention=0.2, merge_context=False)
    hit = lambda r: ((r.positions[:, 1] == 1) & (r.positions[:, 2] == 2)).any()
    assert hit(without) and not hit(with_sink)
    assert torch.equal(tok.saliency, sal)


def test_duplicate_features_give_unique_indices():
    F = torch.randn(1, 1, 4, 8).repeat(2, 6, 1, 1)  # heavy exact duplication
    S = torch.ones(2, 6, 4)
    res = tp.prune(tp.VideoTokens(F, S), "tango", retention=0.5, segmentation="none", tau_static=1.0)
    assert torch.equal(res.indices, torch.unique(res.indices))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_precision_inputs_keep_dtype(dtype):
    tok = make_tokens(T=4, H=6, W=6, D=16, seed=8, dtype=dtype)
    res = tp.prune(tok, "tango", retention=0.2)
    assert res.features.dtype == dtype
    ref = tp.prune(make_tokens(T=4, H=6, W=6, D=16, seed=8, dtype=dtype), "tango", retention=0.2)
    assert torch.equal(res.indices, ref.indices)


# -- scale: blocked == dense, windows ------------------------------------------------------------
def test_blocked_computation_equals_dense():
    tok = make_tokens(T=6, H=10, W=10, D=24, seed=9, static=20)
    cfg = tp.TangoConfig(retention=0.15, segmentation="none")
    dense = tango_prune(tok, cfg, block_elems=1 << 30)
    for block in (64, 4096):
        got = tango_prune(tok, cfg, block_elems=block)
        assert torch.equal(got.indices, dense.indices)
        assert torch.allclose(got.features, dense.features, atol=1e-6)


def test_context_windows_split_budget_exactly():
    tok = make_tokens(T=12, H=8, W=8, D=16, seed=10)
    whole = tp.prune(tok, "tango", retention=0.2, segmentation="none")
    windowed = tp.prune(tok, "tango", retention=0.2, segmentation="none", max_cluster_tokens=120)
    assert windowed.info["context_windows_split"] > 0 and whole.info["context_windows_split"] == 0
    assert windowed.num_kept == whole.num_kept
    # context anchors stay inside their window: every frame window keeps K_c * frames anchors
    assert windowed.info["by_kind"] == whole.info["by_kind"]


def test_timestamps_change_geometry_not_budget():
    tok = make_tokens(T=6, H=6, W=6, D=24, seed=11)
    slow = tp.VideoTokens(tok.features, tok.saliency, tok.timestamps * 100)
    a = tp.prune(tok, "tango", retention=0.2, segmentation="none")
    b = tp.prune(slow, "tango", retention=0.2, segmentation="none")
    assert a.num_kept == b.num_kept


def test_static_positions_collapse_to_their_temporal_mean():
    # Retention 1: nothing is dropped, but each static position becomes one token carrying its mean.
    tok = make_tokens(T=5, H=4, W=4, D=16, seed=12, static=6)
    F = tok.features.clone()
    F[:, 0, :2] += 0.01 * torch.randn(5, 2, 16)  # nearly static: still above tau_static
    tok = tp.VideoTokens(F, tok.saliency, tok.timestamps)
    res = tp.prune(tok, "tango", retention=1.0, segmentation="none")
    S = res.info["static_positions"][0]
    assert S == 6 and res.num_kept == S + 5 * (16 - S)
    static = res.kinds == tp.TokenKind.STATIC
    pos = res.positions[static]
    assert (pos[:, 0] == 0).all()
    assert torch.allclose(res.features[static], F[:, pos[:, 1], pos[:, 2]].mean(0), atol=1e-6)


def test_long_video_memory_is_bounded(tmp_path):
    """1024 frames x 196 tokens x D=896 at retention 0.1 must need < 2 GiB beyond its input (issue 2)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import tango_prune as tp
        from tango_prune.synthetic import synthetic_tokens
        tok = synthetic_tokens(1024, grid=14, dim=896, seed=0, cut_every=16)
        def field(name):
            for line in open('/proc/self/status'):
                if line.startswith(name + ':'):
                    return int(line.split()[1]) * 1024
        open('/proc/self/clear_refs', 'w').write('5')
        base = field('VmRSS')
        res = tp.prune(tok, tp.TangoConfig.preset('llava-onevision', retention=0.1))
        print(field('VmHWM') - base, res.num_kept)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    extra, kept = map(int, out.stdout.split())
    assert extra < 2 * 2**30
    assert 0.09 * 1024 * 196 < kept < 0.1 * 1024 * 196 + 2 * 1024


# -- exact integer budgets --------------------------------------------------------------------------
@pytest.mark.parametrize("K,c,K_s", [(20, 0.9, 2), (30, 0.9, 3), (90, 0.3, 63), (170, 0.3, 119), (10, 0.3, 7)])
def test_budget_split_is_exact_integer_arithmetic(K, c, K_s):
    # The float expression int(K * (1 - c)) is one short for these (0.9 and 0.3 are not binary fractions).
    n = K * 10  # K = ceil(n * 0.1) exactly
    assert compressor_budget(n, 0.1, c) == (K_s, K - K_s)


def test_budget_of_a_frame_is_exact_and_published_keeps_doubles():
    assert compressor_budget(100, 0.07, 0.0) == (7, 0)  # ceil(100 * 0.07) is 8 in doubles
    assert compressor_budget(100, 0.07, 0.0, published=True) == (8, 0)
    assert compressor_budget(200, 0.1, 0.9, published=True) == (1, 19)
    from tango_prune.methods._common import frame_budget

    assert frame_budget(100, 0.07) == 7 and frame_budget(200, 0.07) == 14


def test_context_ratio_0_9_keeps_exact_salient_count():
    tok = make_tokens(T=1, H=10, W=20, D=8, seed=0)  # K = 20 per frame
    res = tp.prune(tok, "tango", retention=0.1, context_ratio=0.9, merge_context=True)
    assert res.info["by_kind"]["salient"] == 2 and res.num_kept == 20


# -- compat="published" on a static part, checked by hand ----------------------------------------------
def _four_static_points():
    # Two frames of a 2x2 grid whose four positions never change, so all four are static. Unit vectors in
    # the plane, listed so that the densest point sits at position 1 (squared distances in the comments).
    pts = torch.tensor(
        [
            [0.0, 1.0],  # p0 = x2
            [0.8, 0.6],  # p1 = x1: |p1-p0|^2 = 0.8, |p1-p2|^2 = 0.4, |p1-p3|^2 = 1.296
            [1.0, 0.0],  # p2 = x0: |p2-p0|^2 = 2.0, |p2-p3|^2 = 2.56
            [-0.28, 0.96],
        ]
    )  # p3 = x3: |p3-p0|^2 = 0.08
    F = pts.reshape(1, 2, 2, 2).repeat(2, 1, 1, 1)
    return tp.VideoTokens(F, torch.ones(2, 2, 2))


@pytest.mark.parametrize("compat", ["fixed", "published"])
def test_static_merge_by_hand(compat):
    # r = 0.25 over 2 frames with S = 4 static positions: r' = 0.25 * 8 / 4 = 0.5, K = ceil(4 * 0.5) = 2 and
    # context_ratio 1 makes both context anchors. Densities exp(-mean d^2 of the 3 others): p1 (0.832) >
    # p0 (0.96) > p3 (1.312) > p2 (1.653); gamma = rho * delta: p1 = e^-0.832 * sqrt(2.56) = 0.696 (the
    # densest takes the largest distance), p0 = e^-0.96 * sqrt(0.8) = 0.343, p2 = 0.121, p3 = 0.076. The
    # anchors in gamma order are [p1, p0]. Nearest anchor: p2 -> p1 (0.4 < 2.0), p3 -> p0 (0.08 < 1.296).
    # Merged (w = max(1/2, 0.6) = 0.6): p0' = 0.6 p0 + 0.4 mean(p0, p3) = (-0.056, 0.992),
    # p1' = 0.6 p1 + 0.4 mean(p1, p2) = (0.84, 0.48). The published code writes the merged rows, computed in
    # ascending anchor order, to the anchors in gamma order, so p1 receives p0' and p0 receives p1'.
    cfg = tp.TangoConfig(retention=0.25, context_ratio=1.0, strope=False, segmentation="none", compat=compat)
    res = tp.prune(_four_static_points(), cfg)
    assert res.indices.tolist() == [0, 1] and res.info["by_kind"]["static"] == 2
    fixed = torch.tensor([[-0.056, 0.992], [0.84, 0.48]])
    want = fixed if compat == "fixed" else fixed.flip(0)
    assert torch.allclose(res.features, want, atol=1e-6)


@pytest.mark.parametrize("compat", ["fixed", "published"])
def test_static_and_dynamic_write_back_by_hand(compat):
    # Two frames of a 1x3 grid. Position 0 is static (cos((0.6, -0.8), (0.8, -0.6)) = 0.96 > 0.8), positions
    # 1 and 2 are dynamic (cos 0 and 0.352). r = 0.25, S = 1: r' = 0.25 * 6 / 5 = 0.3, so the static part
    # keeps max(1, ceil(0.3)) = 1 token, its mean (0.7, -0.7), unmerged (its pool of one fits), at frame 0.
    # Dynamic: R = ceil(2 * 0.3) = 1 per frame, all context (c = 1), pooled over the segment: B = 2 anchors
    # out of the frame-major pool [f0p1, f0p2, f1p1, f1p2] = the four points of _four_static_points, so (as
    # computed there) the anchors are f0p2 and f0p1 in gamma order, f1p1 merges into f0p2 and f1p2 into f0p1.
    # Static and dynamic tokens never share a slot, so the order of their write-backs cannot matter; the
    # published permutation swaps the two dynamic anchors' rows only.
    pts = _four_static_points().features[0].reshape(2, 2, 2)  # (frame, dynamic position, D)
    F = torch.zeros(2, 1, 3, 2)
    F[0, 0, 0], F[1, 0, 0] = torch.tensor([0.6, -0.8]), torch.tensor([0.8, -0.6])
    F[:, 0, 1:] = pts
    cfg = tp.TangoConfig(retention=0.25, context_ratio=1.0, strope=False, segmentation="none", compat=compat)
    res = tp.prune(tp.VideoTokens(F, torch.ones(2, 1, 3)), cfg)
    assert res.info["static_positions"] == [1]
    assert res.indices.tolist() == [0, 1, 2]
    assert res.kinds.tolist() == [tp.TokenKind.STATIC, tp.TokenKind.CONTEXT, tp.TokenKind.CONTEXT]
    f0p1, f0p2 = [-0.056, 0.992], [0.84, 0.48]  # 0.6 a + 0.4 mean(cluster), as in test_static_merge_by_hand
    rows = [f0p1, f0p2] if compat == "fixed" else [f0p2, f0p1]
    assert torch.allclose(res.features, torch.tensor([[0.7, -0.7], *rows]), atol=1e-6)


@pytest.mark.parametrize("case", CASES[2:5] + CASES[8:], ids=lambda c: str(c["cfg"]))
def test_bounded_memory_path_gives_the_same_bits(case):
    # gram_bytes=0 never builds a distance matrix: every DPC-KNN recomputes the same strips twice and the
    # assignment computes its own distances; indices and features must not change by a single bit.
    tok = make_tokens(T=case["T"], H=case["H"], W=case["W"], D=18, seed=3, static=case["static"], fps=2.0)
    cfg = tp.TangoConfig(**{"retention": 0.1, **case["cfg"]})
    one, strips = tp.prune(tok, cfg), tp.prune(tok, cfg.replace(gram_bytes=0))
    assert torch.equal(one.indices, strips.indices) and torch.equal(one.features, strips.features)
