"""tango_prune.apply on upstream Qwen3VLForConditionalGeneration (tiny random weights, saved + reloaded).

Its prompts differ from the other Qwen families (every temporal step is a timestamped group of its own), so
it has its own test set: the same properties as tests/test_models_qwen.py plus the DeepStack alignment.
"""

from __future__ import annotations

import pytest
import torch

import tango_prune as tp
from tango_prune.models import stats
from tiny_models import Q_END, Q_START, Q_VIDEO, left_pad, qwen3_ids, qwen_ids, qwen_types, qwen_video, tiny_qwen3

FULL = tp.TangoConfig(retention=1.0, merge_context=False, tau_static=1.0)
G = (3, 8, 8)  # temporal steps, patch rows, patch cols -> 3 steps of 4 x 4 merged tokens


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("qwen3")


@pytest.fixture(scope="module")
def model(root):
    return tiny_qwen3(root)


def _inputs(grids=(G,), seed=0, **ids_kw):
    ids = torch.tensor([qwen3_ids(grids, **ids_kw)])
    pv = torch.cat([qwen_video(*g, seed=seed + i) for i, g in enumerate(grids)])
    return dict(input_ids=ids, pixel_values_videos=pv, video_grid_thw=torch.tensor(list(grids)),
                mm_token_type_ids=qwen_types(ids))


def _logits(m, **kw):
    with torch.no_grad():
        return m(**kw).logits


def _pruned_call(model, cfg, kw):
    """Logits of a patched call and what reached the language model (ids, positions, DeepStack levels)."""
    seen = {}

    def grab(_m, args, kwargs):
        seen.update(pos=kwargs["position_ids"], mask=kwargs["visual_pos_masks"],
                    deep=kwargs["deepstack_visual_embeds"])

    h = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    tp.apply(model, cfg)
    try:
        out = _logits(model, **kw)
        res = tp.models.last_results(model)
        st = stats(model)
    finally:
        tp.remove(model)
        h.remove()
    return out, res, st, seen


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_full_retention_reproduces_unpruned_logits_and_generation(root, attn):
    m = tiny_qwen3(root, attn=attn)
    kw = _inputs()
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


def _keep_mask(ids, results):
    """Columns of ``ids`` (one row) that survive: all text, and the kept placeholders of every video."""
    video_cols = (ids == Q_VIDEO).nonzero()[:, 0]
    keep = ids != Q_VIDEO
    pos = 0
    for r in results:
        n = r.grid[0] * r.grid[1] * r.grid[2]
        keep[video_cols[pos:pos + n][r.indices]] = True
        pos += n
    return keep


def test_kept_tokens_keep_original_positions_and_the_timestamp_text(model):
    kw = _inputs()
    full_pos, _ = model.model.get_rope_index(kw["input_ids"], kw["mm_token_type_ids"],
                                             video_grid_thw=kw["video_grid_thw"])
    out, res, st, seen = _pruned_call(model, tp.TangoConfig(retention=0.25), kw)
    ids = kw["input_ids"][0]
    keep = _keep_mask(ids, res)
    pos = seen["pos"]
    assert pos.shape == (4, 1, int(keep.sum())) == (4, 1, out.shape[1])
    assert torch.equal(pos[1:, 0], full_pos[:, 0, keep])            # original (t, h, w) positions, gaps kept
    assert torch.equal(pos[0, 0], torch.arange(int(keep.sum())))     # compact text row (mask construction)
    # Every timestamp and vision start/end token is still there: only video placeholders were dropped.
    assert keep[ids != Q_VIDEO].all()
    assert int(((ids == Q_START) | (ids == Q_END)).sum()) == 2 * G[0]
    assert st["visual_tokens_before"] == 48 and st["visual_tokens_after"] == res[0].num_kept < 48
    assert int(seen["mask"].sum()) == res[0].num_kept


def _reference_with_kept_tokens(model, kw, results, perm=None):
    """Upstream forward on a hand-pruned input: the kept placeholders and ids, original positions, and the
    encoder's main and DeepStack features gathered at the kept indices (``perm`` shuffles the DeepStack rows
    of the kept tokens: a deliberately misaligned control)."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

    with torch.no_grad():
        enc = model.model.get_video_features(kw["pixel_values_videos"], kw["video_grid_thw"], return_dict=True)
    idx = [r.indices for r in results]
    main = tuple(f[i] for f, i in zip(enc.pooler_output, idx))
    deep = [tuple(f[i] if perm is None else f[i][perm] for f, i in zip(level, idx)) for level in enc.deepstack_features]
    ids = kw["input_ids"]
    keep = _keep_mask(ids[0], results)
    pos, _ = model.model.get_rope_index(ids, kw["mm_token_type_ids"], video_grid_thw=kw["video_grid_thw"])
    text = torch.arange(int(keep.sum()))[None, None]
    video = BaseModelOutputWithDeepstackFeatures(pooler_output=main, deepstack_features=deep)
    return _logits(model, input_ids=ids[:, keep], position_ids=torch.cat([text, pos[:, :, keep]]),
                   video_grid_thw=kw["video_grid_thw"], mm_token_type_ids=kw["mm_token_type_ids"][:, keep],
                   mm_encoder_outputs={"video": video})


def test_deepstack_levels_follow_the_kept_tokens(model):
    kw = _inputs(seed=2)
    # merge_context=False: the kept main features are the encoder's own rows, so the reference is exact.
    out, res, _, seen = _pruned_call(model, tp.TangoConfig(retention=0.3, merge_context=False), kw)
    k = res[0].num_kept
    assert len(seen["deep"]) == 2 and all(d.shape == (k, 32) for d in seen["deep"])
    assert torch.allclose(out, _reference_with_kept_tokens(model, kw, res), atol=1e-5, rtol=0)
    # The check is sensitive: the same DeepStack rows in another order change the logits.
    shuffled = _reference_with_kept_tokens(model, kw, res, perm=torch.arange(k).flip(0))
    assert not torch.allclose(out, shuffled, atol=1e-3, rtol=0)


def test_pruned_left_padded_batch_equals_each_alone(model):
    grids = [(3, 8, 8), (2, 8, 4)]
    rows = [qwen3_ids([grids[0]], prefix=(1, 3, 8, 9)), qwen3_ids([grids[1]])]
    pvs = [qwen_video(*grids[0], seed=1), qwen_video(*grids[1], seed=2)]
    tp.apply(model, tp.TangoConfig(retention=0.3))
    try:
        ids, am = left_pad(rows)
        kw = dict(input_ids=ids, attention_mask=am, pixel_values_videos=torch.cat(pvs),
                  video_grid_thw=torch.tensor(grids), mm_token_type_ids=qwen_types(ids))
        batch = model.generate(**kw, max_new_tokens=5, do_sample=False)
        nocache = model.generate(**kw, max_new_tokens=5, do_sample=False, use_cache=False)
        for i, r in enumerate(rows):
            one_ids = torch.tensor([r])
            one = model.generate(input_ids=one_ids, pixel_values_videos=pvs[i], video_grid_thw=torch.tensor([grids[i]]),
                                 mm_token_type_ids=qwen_types(one_ids), max_new_tokens=5, do_sample=False)
            assert torch.equal(batch[i, ids.shape[1]:], one[0, len(r):])
            assert torch.equal(nocache[i, ids.shape[1]:], one[0, len(r):])
        assert torch.equal(batch[:, :ids.shape[1]], ids)
    finally:
        tp.remove(model)


def test_image_untouched_two_videos_pruned(model):
    img_grid = (1, 4, 4)
    grids = [(2, 8, 8), (3, 4, 8)]
    ids = torch.tensor([qwen3_ids(grids, images=[img_grid])])
    kw = dict(input_ids=ids, pixel_values=qwen_video(*img_grid, seed=9), image_grid_thw=torch.tensor([img_grid]),
              pixel_values_videos=torch.cat([qwen_video(*g, seed=3 + i) for i, g in enumerate(grids)]),
              video_grid_thw=torch.tensor(grids), mm_token_type_ids=qwen_types(ids))
    ref = _logits(model, **kw)
    tp.apply(model, FULL)
    try:
        assert torch.allclose(_logits(model, **kw), ref, atol=1e-5, rtol=0)
    finally:
        tp.remove(model)
    out, res, _, seen = _pruned_call(model, tp.TangoConfig(retention=0.25), kw)
    assert len(res) == 2
    n_vid = sum(t * h * w // 4 for t, h, w in grids)
    assert out.shape[1] == ids.shape[1] - n_vid + sum(r.num_kept for r in res)
    # The image's 4 tokens and every kept video token carry DeepStack features, in placeholder order.
    assert int(seen["mask"].sum()) == 4 + sum(r.num_kept for r in res)
    first_video = int((ids[0] == Q_VIDEO).nonzero()[0])
    assert torch.allclose(out[0, :first_video], ref[0, :first_video], atol=1e-5, rtol=0)  # image part untouched


def test_remove_restores_bit_identical_and_mistakes_are_value_errors(model):
    kw = _inputs(seed=4)
    before = _logits(model, **kw)
    tp.apply(model, name="tango", retention=0.2)
    try:
        with pytest.raises(ValueError, match="already patched"):
            tp.apply(model, name="tango", retention=0.2)
        bad = dict(kw, input_ids=kw["input_ids"][:, :-8])  # drops placeholders of the last step
        with pytest.raises(ValueError, match="video placeholder"):
            _logits(model, **dict(bad, mm_token_type_ids=qwen_types(bad["input_ids"])))
        one_run = torch.tensor([qwen_ids([G])])  # the Qwen2.5-VL layout: one run for the whole video
        with pytest.raises(ValueError, match="temporal step"):
            _logits(model, **dict(kw, input_ids=one_run, mm_token_type_ids=qwen_types(one_run)))
    finally:
        tp.remove(model)
    with pytest.raises(ValueError, match="fastv_layer"):
        tp.apply(model, tp.TangoConfig(fastv_layer=1))
    assert not tp.models.is_applied(model)
    assert torch.equal(_logits(model, **kw), before)


def test_saliency_is_a_distribution_per_step_and_preset_note(model):
    kw = _inputs(seed=5)
    feats, sal, deep = tp.models.family_for(model)(model).encode(model, kw["pixel_values_videos"], kw["video_grid_thw"])
    assert len(sal) == 1 and sal[0].shape == (3, 4, 4) and sal[0].dtype == torch.float32
    assert torch.allclose(sal[0].sum(dim=(1, 2)), torch.ones(3), atol=1e-5)
    assert feats[0].shape == (48, 32) and [lv[0].shape for lv in deep] == [(48, 32), (48, 32)]
    cfg, notes = tp.models.family_for(model).tango_config(model.config, None, 0.2)
    assert cfg.retention == 0.2 and any("Qwen2.5-VL preset" in n for n in notes)
