"""tango_prune.apply on upstream Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration and
Qwen3VLForConditionalGeneration (the same test set for both families; tiny random weights, saved + reloaded)."""

from __future__ import annotations

import pytest
import torch

import tango_prune as tp
from tango_prune.models import stats
from tiny_models import QWEN_BUILDERS, left_pad, qwen_family_ids, qwen_types, qwen_video

FULL = tp.TangoConfig(retention=1.0, merge_context=False, tau_static=1.0)
G = (3, 8, 8)  # temporal steps, patch rows, patch cols -> 3 x 4 x 4 merged tokens


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("qwen")


@pytest.fixture(scope="module", params=sorted(QWEN_BUILDERS))
def family(request):
    return request.param


@pytest.fixture(scope="module")
def model(root, family):
    return QWEN_BUILDERS[family](root)


def _timing(model, spg):
    """``second_per_grid_ts`` where the family takes it (Qwen2.5-VL); Qwen2-VL's and Qwen3-VL's upstream
    refuse it."""
    if type(model).__name__ in ("Qwen2VLForConditionalGeneration", "Qwen3VLForConditionalGeneration"):
        return {}
    return {"second_per_grid_ts": spg if isinstance(spg, torch.Tensor) else torch.tensor(spg)}


def _inputs(model, grids=(G,), seed=0, spg=0.5):
    ids = torch.tensor([qwen_family_ids(model, grids)])
    pv = torch.cat([qwen_video(*g, seed=seed + i) for i, g in enumerate(grids)])
    return dict(
        input_ids=ids,
        pixel_values_videos=pv,
        video_grid_thw=torch.tensor(list(grids)),
        mm_token_type_ids=qwen_types(ids),
        **_timing(model, [spg] * len(grids)),
    )


def _logits(m, **kw):
    with torch.no_grad():
        return m(**kw).logits


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_full_retention_reproduces_unpruned_logits_and_generation(root, family, attn):
    m = QWEN_BUILDERS[family](root, attn=attn)
    kw = _inputs(m)
    ref = _logits(m, **kw)
    gen = m.generate(**kw, max_new_tokens=5, do_sample=False)
    tp.apply(m, FULL)
    try:
        out = _logits(m, **kw)
        gen2 = m.generate(**kw, max_new_tokens=5, do_sample=False)
    finally:
        tp.remove(m)
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)
    assert torch.equal(gen, gen2)


def test_kept_tokens_keep_their_original_mrope_positions(model):
    kw = _inputs(model)
    full_pos, _ = model.model.get_rope_index(
        kw["input_ids"],
        kw["mm_token_type_ids"],
        video_grid_thw=kw["video_grid_thw"],
        second_per_grid_ts=kw.get("second_per_grid_ts"),
    )
    seen = {}

    def grab(_m, args, kwargs):
        seen["pos"] = kwargs["position_ids"]

    h = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    tp.apply(model, tp.TangoConfig(retention=0.25))
    try:
        out = _logits(model, **kw)
        res = tp.models.last_results(model)[0]
        st = stats(model)
    finally:
        tp.remove(model)
        h.remove()
    ids = kw["input_ids"][0]
    video = (ids == 151).nonzero()[:, 0]  # one run (Qwen2/2.5-VL) or one run per step (Qwen3-VL)
    keep = torch.ones(ids.numel(), dtype=torch.bool)
    keep[video] = False
    keep[video[res.indices]] = True  # every text token stays, Qwen3-VL's timestamps included
    pos = seen["pos"]
    assert pos.shape == (4, 1, int(keep.sum()))
    assert torch.equal(pos[1:, 0], full_pos[:, 0, keep])  # original (t, h, w) positions, gaps kept
    assert torch.equal(pos[0, 0], torch.arange(int(keep.sum())))  # compact text row (mask construction)
    assert st["visual_tokens_after"] == res.num_kept == out.shape[1] - (ids.numel() - 48)
    assert st["visual_tokens_before"] == 48
    # Temporal positions: one per step. Qwen2/2.5-VL advance time by 1 per step here (0.5 s * 2 tokens per
    # second); Qwen3-VL positions each step as its own group, time being carried by the timestamp text.
    step_t = set(full_pos[0, 0, video.reshape(3, 16)[:, 0]].tolist())
    assert set(pos[1, 0, keep.cumsum(0)[video[res.indices]] - 1].tolist()) <= step_t
    if type(model).__name__ != "Qwen3VLForConditionalGeneration":
        assert step_t == {int(video[0]), int(video[0]) + 1, int(video[0]) + 2}


def test_pruned_batch_of_two_equals_each_alone(model):
    grids = [(3, 8, 8), (2, 8, 4)]
    rows = [qwen_family_ids(model, [grids[0]], prefix=(1, 3, 8, 9)), qwen_family_ids(model, [grids[1]])]
    pvs = [qwen_video(*grids[0], seed=1), qwen_video(*grids[1], seed=2)]
    spg = torch.tensor([0.5, 1.0])
    tp.apply(model, tp.TangoConfig(retention=0.3))
    try:
        ids, am = left_pad(rows)
        kw = dict(
            input_ids=ids,
            attention_mask=am,
            pixel_values_videos=torch.cat(pvs),
            video_grid_thw=torch.tensor(grids),
            mm_token_type_ids=qwen_types(ids),
            **_timing(model, spg),
        )
        batch = model.generate(**kw, max_new_tokens=5, do_sample=False)
        nocache = model.generate(**kw, max_new_tokens=5, do_sample=False, use_cache=False)
        for i, r in enumerate(rows):
            one_ids = torch.tensor([r])
            one = model.generate(
                input_ids=one_ids,
                pixel_values_videos=pvs[i],
                video_grid_thw=torch.tensor([grids[i]]),
                mm_token_type_ids=qwen_types(one_ids),
                **_timing(model, spg[i : i + 1]),
                max_new_tokens=5,
                do_sample=False,
            )
            assert torch.equal(batch[i, ids.shape[1] :], one[0, len(r) :])
            assert torch.equal(nocache[i, ids.shape[1] :], one[0, len(r) :])
        assert torch.equal(batch[:, : ids.shape[1]], ids)
    finally:
        tp.remove(model)


def test_image_untouched_two_videos_pruned(model):
    img_grid = (1, 4, 4)
    grids = [(2, 8, 8), (3, 4, 8)]
    ids = torch.tensor([qwen_family_ids(model, grids, images=[img_grid])])
    kw = dict(
        input_ids=ids,
        pixel_values=qwen_video(*img_grid, seed=9),
        image_grid_thw=torch.tensor([img_grid]),
        pixel_values_videos=torch.cat([qwen_video(*g, seed=3 + i) for i, g in enumerate(grids)]),
        video_grid_thw=torch.tensor(grids),
        mm_token_type_ids=qwen_types(ids),
    )
    ref = _logits(model, **kw)
    tp.apply(model, FULL)
    try:
        assert torch.allclose(_logits(model, **kw), ref, atol=1e-5, rtol=0)
        model._tango_prune_state.config = tp.TangoConfig(retention=0.25)
        out = _logits(model, **kw)
        res = tp.models.last_results(model)
    finally:
        tp.remove(model)
    assert len(res) == 2
    n_vid = sum(t * h * w // 4 for t, h, w in grids)
    assert out.shape[1] == ids.shape[1] - n_vid + sum(r.num_kept for r in res)
    first_video = int((ids[0] == 151).nonzero()[0])
    assert torch.allclose(out[0, :first_video], ref[0, :first_video], atol=1e-5, rtol=0)  # image part untouched


def test_remove_restores_bit_identical_and_twice_is_an_error(model):
    kw = _inputs(model, seed=4)
    before = _logits(model, **kw)
    tp.apply(model, name="tango", retention=0.2)
    with pytest.raises(ValueError, match="already patched"):
        tp.apply(model, name="tango", retention=0.2)
    tp.remove(model)
    with pytest.raises(ValueError, match="has no intra-LLM FastV stage"):
        tp.apply(model, tp.TangoConfig(), stages=[tp.FastVConfig(layer=1)])
    assert not tp.models.is_applied(model)
    assert torch.equal(_logits(model, **kw), before)


def test_saliency_is_a_distribution_per_step(model):
    kw = _inputs(model, seed=5)
    sal = tp.models.family_for(model)(model).encode(model, kw["pixel_values_videos"], kw["video_grid_thw"])[1]
    assert len(sal) == 1 and sal[0].shape == (3, 4, 4) and sal[0].dtype == torch.float32
    assert torch.allclose(sal[0].sum(dim=(1, 2)), torch.ones(3), atol=1e-5)
