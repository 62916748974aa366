"""Patched models behave like models: deep copies are independent, gradients flow when grad is enabled."""

from __future__ import annotations

import copy

import pytest
import torch

import tango_prune as tp
from tango_prune.models import stats
from tiny_models import llava_video_ids, qwen_ids, qwen_types, qwen_video, tiny_llava, tiny_qwen

pytestmark = pytest.mark.filterwarnings("ignore:tango-prune. this LLaVA checkpoint has no SigLIP")

T = 4
FULL = tp.TangoConfig(retention=1.0, merge_context=False, tau_static=1.0)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("semantics")


def _llava_inputs(seed=0):
    px = torch.randn(1, T, 3, 28, 28, generator=torch.Generator().manual_seed(seed))
    return dict(input_ids=torch.tensor([llava_video_ids(T)]), pixel_values_videos=px)


def test_deepcopy_of_a_patched_model_is_independent(root):
    m = tiny_llava(root)
    kw = _llava_inputs()
    tp.apply(m, name="tango", retention=0.3, variant="llava-video")
    with torch.no_grad():
        before = m(**kw).logits
    c = copy.deepcopy(m)
    assert tp.models.is_applied(c) and tp.models.is_applied(m)
    with torch.no_grad():
        for p in c.parameters():
            p.mul_(0.5)  # change only the copy's weights
        after_orig = m(**kw).logits
        after_copy = c(**kw).logits
    assert torch.equal(after_orig, before)  # the original is untouched
    # the copy runs its own weights (halved weights even change what it keeps)
    assert after_copy.shape != before.shape or not torch.allclose(after_copy, before)
    n_text = kw["input_ids"].shape[1] - (T * 16 + 1)
    assert stats(c)["visual_tokens_after"] == after_copy.shape[1] - n_text  # the copy's own stats
    tp.remove(c)
    tp.remove(m)
    ref = tiny_llava(root)
    with torch.no_grad():
        assert torch.equal(m(**kw).logits[:, -2:], ref(**kw).logits[:, -2:])  # original fully restorable


def test_deepcopy_keeps_fastv_hooks_on_the_copy(root):
    m = tiny_llava(root, layers=3, name="fastv3")
    kw = _llava_inputs(1)
    tp.apply(m, tp.TangoConfig(retention=0.5), variant="llava-video", stages=[tp.FastVConfig(layer=2, keep=0.5)])
    with torch.no_grad():
        ref = m(**kw).logits
    c = copy.deepcopy(m)
    with torch.no_grad():
        got = c(**kw).logits
    assert torch.equal(got, ref)
    assert stats(c)["visual_tokens_after_fastv"] < stats(c)["visual_tokens_after"]
    tp.remove(m)
    tp.remove(c)


def _grads(model, kw):
    model.zero_grad()
    out = model(**kw)
    out.logits.float().pow(2).mean().backward()
    return {
        n: p.grad.clone()
        for n, p in model.named_parameters()
        if p.grad is not None and ("vision_tower" in n or "projector" in n or "visual" in n)
    }


def _assert_full_retention_grads_equal(m, kw) -> dict:
    """Gradients at retention 1.0 (nothing pruned or merged) equal the unpatched model's; returns them."""
    ref = _grads(m, kw)
    assert ref
    tp.apply(m, FULL)
    try:
        got = _grads(m, kw)
    finally:
        tp.remove(m)
    assert got.keys() == ref.keys()
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], atol=1e-5, rtol=1e-4)
    return ref


def test_gradients_reach_the_vision_tower_llava(root):
    m = tiny_llava(root, name="grad")
    kw = _llava_inputs(2)
    ref = _assert_full_retention_grads_equal(m, kw)
    try:
        tp.apply(m, name="tango", retention=0.3)
        pruned = _grads(m, kw)
        assert pruned.keys() == ref.keys()
        assert all(torch.isfinite(g).all() for g in pruned.values())
        assert any(g.abs().sum() > 0 for g in pruned.values())
    finally:
        tp.remove(m)


def test_gradients_reach_the_vision_tower_qwen(root):
    m = tiny_qwen(root)
    G = (2, 8, 8)
    ids = torch.tensor([qwen_ids([G])])
    kw = dict(
        input_ids=ids,
        pixel_values_videos=qwen_video(*G),
        video_grid_thw=torch.tensor([G]),
        mm_token_type_ids=qwen_types(ids),
        second_per_grid_ts=torch.tensor([0.5]),
    )
    _assert_full_retention_grads_equal(m, kw)


def test_no_graph_under_no_grad(root):
    m = tiny_llava(root, name="nograd")
    tp.apply(m, name="tango", retention=0.3)
    try:
        with torch.no_grad():
            out = m(**_llava_inputs(3))
        assert not out.logits.requires_grad
    finally:
        tp.remove(m)
