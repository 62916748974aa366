"""Property-based checks of the invariants every Tango result must satisfy."""

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tango_prune as tp
from conftest import make_tokens


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    T=st.integers(1, 6),
    H=st.integers(1, 7),
    W=st.integers(1, 7),
    D=st.integers(2, 20),
    r=st.floats(0.01, 1.0),
    seed=st.integers(0, 10_000),
    static=st.integers(0, 10),
    seg=st.sampled_from(["holitom", "fastvid", "none"]),
    compat=st.sampled_from(["fixed", "published"]),
    c=st.sampled_from([0.0, 0.4, 1.0]),
    dtype=st.sampled_from([torch.float32, torch.float16]),
)
def test_invariants(T, H, W, D, r, seed, static, seg, compat, c, dtype):
    tok = make_tokens(T=T, H=H, W=W, D=D, seed=seed, static=min(static, H * W), dtype=dtype)
    before = (tok.features.clone(), tok.saliency.clone(), tok.timestamps.clone())
    cfg = tp.TangoConfig(retention=r, segmentation=seg, compat=compat, context_ratio=c)
    res = tp.prune(tok, cfg)
    n = T * H * W
    K = res.num_kept
    # count: at least one token, at most r*n plus one per frame and one per segment (ceilings)
    assert 1 <= K <= min(n, math.floor(r * n) + T + len(res.info["segments"]))
    assert K == res.info["kept"]
    # indices sorted, unique, in range; positions consistent; shapes and dtype
    idx = res.indices
    assert idx.dtype == torch.long and (idx[1:] > idx[:-1]).all() and 0 <= int(idx[0]) and int(idx[-1]) < n
    assert torch.equal(res.positions[:, 0] * H * W + res.positions[:, 1] * W + res.positions[:, 2], idx)
    assert res.features.shape == (K, D) and res.features.dtype == dtype
    assert torch.isfinite(res.features.float()).all()
    assert sum(res.info["segments"]) == T
    # deterministic, inputs untouched
    again = tp.prune(tok, cfg)
    assert torch.equal(again.indices, idx) and torch.equal(again.features, res.features)
    assert all(torch.equal(a, b) for a, b in zip(before, (tok.features, tok.saliency, tok.timestamps)))


@settings(max_examples=15, deadline=None)
@given(T=st.integers(1, 4), r=st.floats(0.05, 1.0), seed=st.integers(0, 1000))
def test_full_retention_keeps_everything_unmerged_when_no_static(T, r, seed):
    tok = make_tokens(T=T, H=4, W=5, D=8, seed=seed)
    res = tp.prune(tok, "tango", retention=1.0, segmentation="none", tau_static=1.0)
    assert res.num_kept == T * 20
    assert torch.equal(res.features, tok.features.reshape(-1, 8))
