"""Selections that must not depend on the machine or on the scale of the features."""

import pytest
import torch

import tango_prune as tp
from conftest import make_tokens

SCALE_FREE = ["tango", "holitom", "dycoke", "divprune", "visionzip", "uniform", "topk", "random"]


def _scaled(tok, factor, dtype=None):
    f = tok.features if dtype is None else tok.features.to(dtype)
    return tp.VideoTokens(f * factor, tok.saliency, tok.timestamps)


@pytest.mark.parametrize("method", SCALE_FREE)
@pytest.mark.parametrize("factor", [1e20, 1e-20, 2.0**100, 2.0**-100])
def test_cosine_methods_ignore_the_feature_scale(method, factor):
    # Squares of 1e20 overflow fp32 and squares of 1e-20 underflow it: the norms must not be formed on
    # the raw values. A power-of-two factor must leave every bit of the selection unchanged.
    tok = make_tokens(T=6, H=6, W=6, D=24, seed=0, static=8)
    base = tp.prune(tok, method, retention=0.2)
    res = tp.prune(_scaled(tok, factor), method, retention=0.2)
    assert torch.equal(res.indices, base.indices)
    assert torch.isfinite(res.features).all()


def test_fastvid_segmentation_and_merging_ignore_the_scale():
    # FastVID's anchor density is defined on the raw feature scale (as published), so only a power of two
    # that keeps the squares in range is guaranteed neutral; the cosine segmentation is always scale-free.
    tok = make_tokens(T=8, H=6, W=6, D=24, seed=1)
    base = tp.prune(tok, "fastvid", retention=0.2)
    for factor in (1e20, 1e-20):
        assert tp.prune(_scaled(tok, factor), "fastvid", retention=0.2).info["segments"] == base.info["segments"]


@pytest.mark.parametrize("method", ["tango", "holitom", "fastvid", "visionzip", "uniform"])
def test_fp64_beyond_fp32_range_gives_finite_features(method):
    tok = make_tokens(T=4, H=6, W=6, D=24, seed=2, static=6)
    big = _scaled(tok, 1e300, torch.float64)
    res = tp.prune(big, method, retention=0.25)
    assert res.features.dtype == torch.float64 and torch.isfinite(res.features).all()
    if method != "fastvid":
        assert torch.equal(res.indices, tp.prune(tok, method, retention=0.25).indices)


@pytest.mark.parametrize("method", ["tango", "holitom", "topk", "visionzip", "dycoke"])
def test_fp64_saliency_keeps_its_ranking_below_fp32_range(method):
    tok = make_tokens(T=4, H=6, W=6, D=24, seed=3)
    tiny = tp.VideoTokens(tok.features, tok.saliency.double() * 1e-300, tok.timestamps)
    huge = tp.VideoTokens(tok.features, tok.saliency.double() * 1e300, tok.timestamps)
    base = tp.prune(tok, method, retention=0.3)
    assert torch.equal(tp.prune(tiny, method, retention=0.3).indices, base.indices)
    assert torch.equal(tp.prune(huge, method, retention=0.3).indices, base.indices)


def test_every_method_selects_the_same_with_one_or_two_threads():
    from tango_prune.methods import names

    tok = make_tokens(T=8, H=8, W=8, D=48, seed=4, static=12)
    threads = torch.get_num_threads()
    results = {}
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            results[n] = {m: tp.prune(tok, m, retention=0.2) for m in names()}
    finally:
        torch.set_num_threads(threads)
    one, many = results.values()
    for m in one:
        assert torch.equal(one[m].indices, many[m].indices), m
        assert torch.equal(one[m].features, many[m].features), m
