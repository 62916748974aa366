"""LLaVA-Video layout (2x2 average pooling, per-row newlines) and its intra-LLM FastV stage."""

from __future__ import annotations

import pytest
import torch

import tango_prune as tp
from tango_prune.models import stats
from tango_prune.models.llava_onevision import LlavaOnevisionAdapter
from tango_prune.tokens import PruneResult, VideoTokens
from tiny_models import left_pad, llava_video_ids, tiny_llava

pytestmark = pytest.mark.filterwarnings("ignore:tango-prune. this LLaVA checkpoint has no SigLIP")
T = 4


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("llava_video")


@pytest.fixture(scope="module")
def model(root):
    return tiny_llava(root, layers=3)


def _video(seed=0, n=1):
    return torch.randn(n, T, 3, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_row_newline_kept_iff_row_keeps_a_token(model):
    adapter = LlavaOnevisionAdapter(model, "llava-video")
    feats = torch.randn(2, 3, 3, 32)
    res = PruneResult.from_indices(VideoTokens(features=feats), torch.tensor([0, 2, 7, 13]))
    seq = adapter.visual_sequence(model, res)
    nl = model.model.image_newline
    flat = feats.reshape(-1, 32)
    # frame 0: row 0 -> tokens 0, 2 + newline; row 2 -> token 7 + newline; frame 1: row 1 -> token 13 + newline
    expected = torch.stack([flat[0], flat[2], nl, flat[7], nl, flat[13], nl])
    assert torch.equal(seq, expected)


def test_llava_video_layout_counts(model):
    ids = torch.tensor([llava_video_ids(T)])
    tp.apply(model, tp.TangoConfig(retention=1.0, merge_context=False, tau_static=1.0), variant="llava-video")
    try:
        with torch.no_grad():
            out = model(input_ids=ids, pixel_values_videos=_video()).logits
        full = stats(model)["visual_tokens_after"]
        model._tango_prune_state.config = tp.TangoConfig(retention=0.3)
        with torch.no_grad():
            out2 = model(input_ids=ids, pixel_values_videos=_video()).logits
        res = tp.models.last_results(model)[0]
        after = stats(model)["visual_tokens_after"]
    finally:
        tp.remove(model)
    assert full == T * 3 * 3 + T * 3  # 7x7 patches -> 3x3 tokens, one newline per row
    assert out.shape[1] == ids.shape[1] - (T * 16 + 1) + full
    active_rows = torch.unique(res.positions[:, 0] * 3 + res.positions[:, 1]).numel()
    assert after == res.num_kept + active_rows
    assert out2.shape[1] == ids.shape[1] - (T * 16 + 1) + after


def test_variant_detected_from_checkpoint_name(root):
    m = tiny_llava(root, name="LLaVA-Video-tiny-hf")
    assert LlavaOnevisionAdapter(m).variant == "llava-video"
    assert LlavaOnevisionAdapter(tiny_llava(root, name="ov-tiny")).variant == "llava-onevision"


def test_variant_is_validated(model):
    with pytest.raises(ValueError, match="variant"):
        tp.apply(model, tp.TangoConfig(), variant="llava-next")
    assert not tp.models.is_applied(model)
    with pytest.raises(ValueError, match="fastv.layer must be in"):
        tp.apply(model, tp.TangoConfig(), stages=[tp.FastVConfig(layer=3)])
    assert not tp.models.is_applied(model)
    with pytest.raises(ValueError, match="stages must hold intra-LLM stage configs"):
        tp.apply(model, tp.TangoConfig(), stages=[{"layer": 1}])
    with pytest.raises(ValueError, match="stages must hold intra-LLM stage configs"):
        tp.apply(model, tp.TangoConfig(), stages=18)
    with pytest.raises(ValueError, match="at most one FastV"):
        tp.apply(model, tp.TangoConfig(), stages=[tp.FastVConfig(layer=1), tp.FastVConfig(layer=1)])
    with pytest.raises(ValueError, match="fastv_layer"):  # the stage left the method config
        tp.apply(model, "tango", fastv_layer=1)
    assert not tp.models.is_applied(model)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_fastv_keep_all_equals_no_fastv(root, attn):
    """FastV keep=1.0 drops and merges nothing: the causal FastV path must reproduce the plain logits."""
    m = tiny_llava(root, layers=3, attn=attn)
    rows = [llava_video_ids(T, prefix=(1, 2, 3, 7, 8)), llava_video_ids(T, prefix=(9,))]
    ids, am = left_pad(rows)
    kw = dict(input_ids=ids, attention_mask=am, pixel_values_videos=_video(1, n=2))
    cfg = tp.TangoConfig(retention=0.4)
    outs = []
    for stages in ([], [tp.FastVConfig(layer=2, keep=1.0)]):
        tp.apply(m, cfg, variant="llava-video", stages=stages)
        try:
            with torch.no_grad():
                outs.append(m(**kw).logits)
            outs.append(m.generate(**kw, max_new_tokens=4, do_sample=False))
        finally:
            tp.remove(m)
    # The last 20 positions are real tokens in both rows (left padding); padded rows are never compared.
    assert torch.allclose(outs[0][:, -20:], outs[2][:, -20:], atol=1e-5, rtol=0)
    assert torch.equal(outs[1], outs[3])


def test_fastv_scores_are_the_causal_attention_of_the_last_prompt_token(root):
    m = tiny_llava(root, layers=3, attn="eager")
    ids = torch.tensor([llava_video_ids(T)])
    px = _video(2)
    seen = {}
    tp.apply(m, tp.TangoConfig(retention=0.5), variant="llava-video", stages=[tp.FastVConfig(layer=2, keep=0.5)])
    try:
        h = m.model.language_model.layers[-1].register_forward_pre_hook(
            lambda _m, a, k: seen.__setitem__("len", (a[0] if a else k["hidden_states"]).shape[1]), with_kwargs=True
        )
        with torch.no_grad():
            m(input_ids=ids, pixel_values_videos=px)
        h.remove()
        (fastv,) = tp.models.stages(m)
        scores, plan = fastv.last_scores, fastv.plan
    finally:
        tp.remove(m)
    # Reference: the same pruned pre-LLM input through the LLM without the stage, eager attention weights.
    tp.apply(m, tp.TangoConfig(retention=0.5), variant="llava-video")
    try:
        assert tp.models.stages(m) == ()
        with torch.no_grad():
            ref = m(input_ids=ids, pixel_values_videos=px, output_attentions=True).attentions[1]
    finally:
        tp.remove(m)
    L = plan.prompt_len
    assert torch.allclose(scores[0], ref[0, :, L - 1].float().mean(0), atol=1e-6)
    ((row, start, n),) = plan.spans
    assert seen["len"] == L - n + round(n * 0.5)


def test_fastv_batch_of_two_equals_each_alone_with_and_without_cache(root):
    m = tiny_llava(root, layers=3)
    rows = [llava_video_ids(T, prefix=(1, 2, 3, 7, 8)), llava_video_ids(T, prefix=(9,))]
    ids, am = left_pad(rows)
    px = _video(4, n=2)
    tp.apply(m, tp.TangoConfig(retention=0.5), variant="llava-video", stages=[tp.FastVConfig(layer=2, keep=0.5)])
    try:
        kw = dict(input_ids=ids, attention_mask=am, pixel_values_videos=px, max_new_tokens=5, do_sample=False)
        batch = m.generate(**kw)
        nocache = m.generate(**kw, use_cache=False)
        assert stats(m)["visual_tokens_after_fastv"] < stats(m)["visual_tokens_after"]
        for i, r in enumerate(rows):
            one = m.generate(
                input_ids=torch.tensor([r]), pixel_values_videos=px[i : i + 1], max_new_tokens=5, do_sample=False
            )
            assert torch.equal(batch[i, ids.shape[1] :], one[0, len(r) :])
            assert torch.equal(nocache[i, ids.shape[1] :], one[0, len(r) :])
    finally:
        tp.remove(m)
