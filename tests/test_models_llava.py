"""tango_prune.apply on upstream LlavaOnevisionForConditionalGeneration (tiny random weights, saved + reloaded)."""

from __future__ import annotations

import warnings

import pytest
import torch

import tango_prune as tp
from tango_prune.models import stats
from tango_prune.models.llava_onevision import siglip_head_saliency
from tiny_models import IMAGE_ID, VIDEO_ID, left_pad, llava_video_ids, tiny_llava

pytestmark = pytest.mark.filterwarnings("ignore:tango-prune. this LLaVA checkpoint has no SigLIP")

T = 4
# Retention 1.0 with merging off: no context merging and no static collapse (cosine never exceeds 1).
FULL = tp.TangoConfig(retention=1.0, merge_context=False, tau_static=1.0)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("llava")


@pytest.fixture(scope="module")
def model(root):
    return tiny_llava(root)


def _video(seed=0, n=1, frames=T):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, frames, 3, 28, 28, generator=g)


def _logits(m, **kw):
    with torch.no_grad():
        return m(**kw).logits


@pytest.mark.parametrize("attn,head", [("sdpa", False), ("eager", False), ("sdpa", True)])
def test_full_retention_reproduces_unpruned_logits(root, attn, head):
    m = tiny_llava(root, head=head, attn=attn)
    ids = torch.tensor([llava_video_ids(T)])
    px = _video()
    ref = _logits(m, input_ids=ids, pixel_values_videos=px)
    tp.apply(m, FULL)
    try:
        out = _logits(m, input_ids=ids, pixel_values_videos=px)
    finally:
        tp.remove(m)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)


def test_visual_token_count_matches_result(model):
    ids = torch.tensor([llava_video_ids(T)])
    tp.apply(model, tp.TangoConfig.preset("llava-onevision", retention=0.25, sinks=((0, 1),)))
    try:
        out = _logits(model, input_ids=ids, pixel_values_videos=_video())
        st = stats(model)
        res = tp.models.last_results(model)[0]
    finally:
        tp.remove(model)
    n_text = ids.shape[1] - (T * 16 + 1)
    assert st["visual_tokens_after"] == res.num_kept + 1
    assert out.shape[1] == n_text + res.num_kept + 1
    assert st["visual_tokens_before"] == T * 16 + 1
    assert st["vision_s"] > 0 and st["prune_s"] > 0
    assert res.num_kept < T * 16


def test_phase_callbacks_mark_every_pruned_call(model):
    ids = torch.tensor([llava_video_ids(T)])
    seen = []
    tp.apply(model, name="topk", retention=0.25)
    try:
        with pytest.raises(ValueError, match="fn must be callable"):
            tp.models.on_phase(model, "vision_start")
        tp.models.on_phase(model, seen.append)
        _logits(model, input_ids=ids, pixel_values_videos=_video())
        _logits(model, input_ids=ids[:, :3])  # no video: no phases
        assert seen == ["vision_start", "vision_end", "prune_end"]
        tp.models.on_phase(model, None)
        _logits(model, input_ids=ids, pixel_values_videos=_video())
        assert len(seen) == 3
    finally:
        tp.remove(model)


def test_remove_restores_bit_identical_outputs(model):
    ids = torch.tensor([llava_video_ids(T)])
    px = _video(3)
    before = _logits(model, input_ids=ids, pixel_values_videos=px)
    gen_before = model.generate(input_ids=ids, pixel_values_videos=px, max_new_tokens=4, do_sample=False)
    tp.apply(model, name="tango", retention=0.25)
    assert tp.models.is_applied(model)
    tp.remove(model)
    assert "forward" not in model.__dict__ and "generate" not in model.__dict__
    assert torch.equal(_logits(model, input_ids=ids, pixel_values_videos=px), before)
    assert torch.equal(
        model.generate(input_ids=ids, pixel_values_videos=px, max_new_tokens=4, do_sample=False), gen_before
    )


def test_apply_twice_is_an_error_and_bad_inputs_raise(model):
    tp.apply(model, tp.TangoConfig(retention=0.5))
    try:
        with pytest.raises(ValueError, match="already patched"):
            tp.apply(model, tp.TangoConfig(retention=0.5))
        with pytest.raises(ValueError, match="video_timestamps"):
            _logits(
                model,
                input_ids=torch.tensor([llava_video_ids(T)]),
                pixel_values_videos=_video(),
                video_timestamps=[[0.0, 1.0]],
            )
        with pytest.raises(ValueError, match="placeholder"):
            _logits(model, input_ids=torch.tensor([llava_video_ids(T - 1)]), pixel_values_videos=_video())
    finally:
        tp.remove(model)
    with pytest.raises(ValueError, match="not patched"):
        tp.remove(model)
    with pytest.raises(ValueError, match="model must be one of"):
        tp.apply(torch.nn.Linear(2, 2), tp.TangoConfig())


def test_generate_at_full_retention_equals_unpatched(model):
    ids = torch.tensor([llava_video_ids(T)])
    px = _video(5)
    ref = model.generate(input_ids=ids, pixel_values_videos=px, max_new_tokens=6, do_sample=False)
    tp.apply(model, FULL)
    try:
        out = model.generate(input_ids=ids, pixel_values_videos=px, max_new_tokens=6, do_sample=False)
    finally:
        tp.remove(model)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("method", ["tango"])
def test_pruned_batch_of_two_equals_each_alone_with_and_without_cache(model, method):
    rows = [llava_video_ids(T, prefix=(1, 2, 3, 7, 8)), llava_video_ids(T, prefix=(9,))]
    px = _video(7, n=2)
    ts = torch.tensor([[0.0, 0.5, 1.0, 1.5], [0.0, 2.0, 4.0, 6.0]])
    tp.apply(model, name=method, retention=0.3)
    try:
        ids, am = left_pad(rows)
        batch = model.generate(
            input_ids=ids,
            attention_mask=am,
            pixel_values_videos=px,
            video_timestamps=ts,
            max_new_tokens=5,
            do_sample=False,
        )
        nocache = model.generate(
            input_ids=ids,
            attention_mask=am,
            pixel_values_videos=px,
            video_timestamps=ts,
            max_new_tokens=5,
            do_sample=False,
            use_cache=False,
        )
        for i, r in enumerate(rows):
            one = model.generate(
                input_ids=torch.tensor([r]),
                pixel_values_videos=px[i : i + 1],
                video_timestamps=ts[i : i + 1],
                max_new_tokens=5,
                do_sample=False,
            )
            assert torch.equal(batch[i, ids.shape[1] :], one[0, len(r) :])
            assert torch.equal(nocache[i, ids.shape[1] :], one[0, len(r) :])
        assert torch.equal(batch[:, : ids.shape[1]], ids)  # the caller's prompt comes back unpruned
    finally:
        tp.remove(model)


def test_several_videos_and_an_image_in_one_prompt(model):
    """Two videos and one image: both videos pruned, the image untouched (as many tokens as upstream)."""
    img = torch.randn(1, 2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    n_img = 105  # upstream anyres layout of one 28x28 image on this config
    vid = [VIDEO_ID] * (T * 16 + 1)
    ids = torch.tensor([[1] + [IMAGE_ID] * n_img + [2] + vid + [3] + vid + [4]])
    px = _video(2, n=2)
    kw = dict(input_ids=ids, pixel_values=img, image_sizes=torch.tensor([[28, 28]]), pixel_values_videos=px)
    ref = _logits(model, **kw)
    tp.apply(model, FULL)
    try:
        assert torch.allclose(_logits(model, **kw), ref, atol=1e-5, rtol=0)
        model._tango_prune_state.config = tp.TangoConfig(retention=0.25)  # same patch, another budget
        out = _logits(model, **kw)
        res = tp.models.last_results(model)
    finally:
        tp.remove(model)
    assert len(res) == 2
    assert out.shape[1] == 4 + n_img + sum(r.num_kept + 1 for r in res)
    # Everything before the first video (text + image) is untouched by the pruning.
    assert torch.allclose(out[0, : n_img + 2], ref[0, : n_img + 2], atol=1e-5, rtol=0)


def test_head_saliency_matches_torch_multihead_attention(root):
    m = tiny_llava(root, head=True)
    vt = m.model.vision_tower
    x = torch.randn(3, 49, 32)
    sal = siglip_head_saliency(vt, x)
    ln = vt.post_layernorm(x)
    _, w = vt.head.attention(vt.head.probe.expand(3, -1, -1), ln, ln, need_weights=True)
    assert sal.dtype == torch.float32
    assert torch.allclose(sal, w[:, 0], atol=1e-6)
    assert torch.allclose(sal.sum(-1), torch.ones(3))


def test_missing_head_warns(root):
    m = tiny_llava(root, head=False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        tp.apply(m, tp.TangoConfig())
    tp.remove(m)
    assert any("no SigLIP attention-pooling head" in str(r.message) for r in rec)


def test_other_registered_methods_work_through_the_adapter(model):
    """The adapter is method-agnostic: every registered method that needs only saliency/features runs."""
    ids = torch.tensor([llava_video_ids(T)])
    for name in tp.methods():
        tp.apply(model, name=name, retention=0.5)
        try:
            out = _logits(model, input_ids=ids, pixel_values_videos=_video())
            assert out.shape[1] == ids.shape[1] - (T * 16 + 1) + stats(model)["visual_tokens_after"]
        finally:
            tp.remove(model)


def test_pruned_logits_equal_a_hand_built_reference(model):
    """Pruned forward == the unpatched LLM fed [text, kept features, newline, text] with compact positions."""
    ids = torch.tensor([llava_video_ids(T)])
    px = _video(11)
    tp.apply(model, tp.TangoConfig(retention=0.3))
    try:
        out = _logits(model, input_ids=ids, pixel_values_videos=px)
        res = tp.models.last_results(model)[0]
    finally:
        tp.remove(model)
    emb = model.get_input_embeddings()
    text_a, text_b = ids[0, :3], ids[0, 3 + T * 16 + 1 :]
    seq = torch.cat([emb(text_a), res.features, model.model.image_newline[None], emb(text_b)])
    with torch.no_grad():
        ref = model(inputs_embeds=seq[None]).logits
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)


def test_remove_restores_a_preexisting_instance_forward(model):
    """accelerate-style dispatch puts ``forward`` on the instance; remove must put it back, not delete it."""
    sentinel_calls = []
    original = model.forward

    def dispatched(*a, **k):
        sentinel_calls.append(1)
        return original(*a, **k)

    model.forward = dispatched
    try:
        tp.apply(model, tp.TangoConfig(retention=0.5))
        with torch.no_grad():
            model(input_ids=torch.tensor([llava_video_ids(T)]), pixel_values_videos=_video())
        assert sentinel_calls  # the patch wraps the dispatched forward
        tp.remove(model)
        assert model.__dict__["forward"] is dispatched
    finally:
        model.__dict__.pop("forward", None)
