"""What only Qwen3-VL has, on a tiny random Qwen3VLForConditionalGeneration (saved + reloaded): the
DeepStack levels follow the kept tokens exactly, the per-step timestamped layout is checked, and the
benchmark drives it. The properties every Qwen family shares (full retention, original positions, batches,
images next to videos, remove, the CLI) run on it in tests/test_models_qwen.py and tests/test_cli_run.py."""

from __future__ import annotations

import pytest
import torch

import tango_prune as tp
from tiny_models import Q_VIDEO, qwen3_ids, qwen_ids, qwen_types, qwen_video, tiny_qwen3

G = (3, 8, 8)  # temporal steps, patch rows, patch cols -> 3 steps of 4 x 4 merged tokens


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_qwen3(tmp_path_factory.mktemp("qwen3"))


def _logits(m, **kw):
    with torch.no_grad():
        return m(**kw).logits


def _image_and_videos():
    img, grids = (1, 4, 4), [(2, 8, 8), (3, 4, 8)]
    ids = torch.tensor([qwen3_ids(grids, images=[img])])
    return dict(
        input_ids=ids,
        pixel_values=qwen_video(*img, seed=9),
        image_grid_thw=torch.tensor([img]),
        pixel_values_videos=torch.cat([qwen_video(*g, seed=3 + i) for i, g in enumerate(grids)]),
        video_grid_thw=torch.tensor(grids),
        mm_token_type_ids=qwen_types(ids),
    )


def _reference(model, kw, results, perm=None):
    """Upstream forward on a hand-pruned input: text, image and kept placeholder ids, their original
    positions, and the encoder's main and DeepStack video features gathered at the kept indices (``perm``
    reorders each video's kept DeepStack rows: a deliberately misaligned control)."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

    base = model.model
    with torch.no_grad():
        enc = base.get_video_features(kw["pixel_values_videos"], kw["video_grid_thw"], return_dict=True)
        image = base.get_image_features(kw["pixel_values"], kw["image_grid_thw"], return_dict=True)
    idx = [r.indices if perm is None else r.indices[perm(r.num_kept)] for r in results]
    main = tuple(f[r.indices] for f, r in zip(enc.pooler_output, results))
    deep = [tuple(f[i] for f, i in zip(level, idx)) for level in enc.deepstack_features]
    ids = kw["input_ids"]
    cols = (ids[0] == Q_VIDEO).nonzero()[:, 0]
    keep = ids[0] != Q_VIDEO
    offset = 0
    for r in results:
        keep[cols[offset + r.indices]] = True
        offset += r.grid[0] * r.grid[1] * r.grid[2]
    pos, _ = base.get_rope_index(
        ids, kw["mm_token_type_ids"], image_grid_thw=kw["image_grid_thw"], video_grid_thw=kw["video_grid_thw"]
    )
    text = torch.arange(int(keep.sum()))[None, None]
    video = BaseModelOutputWithDeepstackFeatures(pooler_output=main, deepstack_features=deep)
    return _logits(
        model,
        input_ids=ids[:, keep],
        position_ids=torch.cat([text, pos[:, :, keep]]),
        image_grid_thw=kw["image_grid_thw"],
        video_grid_thw=kw["video_grid_thw"],
        mm_token_type_ids=kw["mm_token_type_ids"][:, keep],
        mm_encoder_outputs={"video": video, "image": image},
    )


def test_deepstack_levels_follow_the_kept_tokens_next_to_an_image(model):
    kw = _image_and_videos()
    seen = {}

    def grab(_m, args, kwargs):
        seen.update(mask=kwargs["visual_pos_masks"], deep=kwargs["deepstack_visual_embeds"])

    h = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    # merge_context=False: the kept main features are the encoder's own rows, so the reference is exact.
    tp.apply(model, tp.TangoConfig(retention=0.3, merge_context=False))
    try:
        out = _logits(model, **kw)
        res = tp.models.last_results(model)
    finally:
        tp.remove(model)
        h.remove()
    n = 4 + sum(r.num_kept for r in res)  # the image's 4 tokens, then the kept video tokens
    assert len(res) == 2 and int(seen["mask"].sum()) == n
    assert len(seen["deep"]) == 2 and all(d.shape == (n, 32) for d in seen["deep"])
    assert torch.allclose(out, _reference(model, kw, res), atol=1e-5, rtol=0)
    # The check is sensitive: the same DeepStack rows in another order change the logits.
    flipped = _reference(model, kw, res, perm=lambda k: torch.arange(k).flip(0))
    assert not torch.allclose(out, flipped, atol=1e-3, rtol=0)


def test_placeholder_layout_mistakes_are_value_errors(model):
    ids = torch.tensor([qwen3_ids([G])])
    kw = dict(input_ids=ids, pixel_values_videos=qwen_video(*G), video_grid_thw=torch.tensor([G]))
    tp.apply(model, name="tango", retention=0.2)
    try:
        for bad, match in (
            (ids[:, :-8], "video placeholder"),  # a step lost placeholders
            (torch.tensor([qwen_ids([G])]), "temporal step"),
        ):  # Qwen2.5-VL layout: one run
            with pytest.raises(ValueError, match=match):
                _logits(model, **dict(kw, input_ids=bad, mm_token_type_ids=qwen_types(bad)))
    finally:
        tp.remove(model)


def test_encode_returns_every_deepstack_level_and_the_preset_note(model):
    family = tp.models.family_for(model)
    feats, sal, deep = family(model).encode(model, qwen_video(*G, seed=5), torch.tensor([G]))
    assert feats[0].shape == (48, 32) and sal[0].shape == (3, 4, 4)
    assert [level[0].shape for level in deep] == [(48, 32), (48, 32)]
    cfg, notes = family.tango_config(model.config, None, 0.2)
    assert cfg.retention == 0.2 and any("Qwen2.5-VL preset" in n for n in notes)


@pytest.mark.slow
def test_bench_runs_unpruned_and_pruned_with_per_step_groups(tmp_path):
    from tango_prune.bench import BenchSpec, run_bench
    from tango_prune.bench.runner import _inputs
    from tango_prune.models.qwen3_vl import check_step_layout

    m = tiny_qwen3(tmp_path, real_ids=True)
    spec = BenchSpec(
        model="tiny-qwen3",
        frames=4,
        warmup=0,
        repeats=1,
        new_tokens=2,
        prompt_tokens=4,
        methods=("tango", "topk"),
        retentions=(0.5,),
        frame_size=32,
    )
    inp = _inputs(m, spec, torch.device("cpu"))
    cfg = m.config
    check_step_layout(inp.input_ids, inp.common["video_grid_thw"], cfg.video_token_id, 2)  # one group per step
    assert int((inp.input_ids == cfg.vision_start_token_id).sum()) == 2 and "second_per_grid_ts" not in inp.common
    assert inp.info["prompt_tokens"] == inp.input_ids.shape[1] - 32
    rows = run_bench(spec, progress=False, model=m)["rows"]
    assert [r["method"] for r in rows] == ["none", "tango", "topk"]
    assert rows[0]["visual_tokens"] == 32 and [r["kept"] for r in rows[1:]] == [16, 16]
