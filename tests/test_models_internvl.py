"""tango_prune.apply on upstream InternVLForConditionalGeneration (tiny random weights, saved + reloaded)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import tango_prune as tp
from tango_prune.bench import BenchSpec
from tango_prune.bench.families import pruned_kwargs
from tango_prune.cli import main
from tango_prune.models import stats
from tango_prune.models.internvl import InternVLAdapter, internvl_cls_saliency
from test_cli_run import _save_tokenizer, _write_video
from tiny_models import IV_CONTEXT, IV_END, IV_START, internvl_video_ids, left_pad, tiny_internvl

T = 4
PER_FRAME = 16
# Retention 1.0 with merging off: no context merging and no static collapse (cosine never exceeds 1).
FULL = tp.TangoConfig(retention=1.0, merge_context=False, tau_static=1.0)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("internvl")


@pytest.fixture(scope="module")
def model(root):
    return tiny_internvl(root)


def _video(seed=0, n=1, frames=T):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, frames, 3, 32, 32, generator=g)


def _logits(m, **kw):
    with torch.no_grad():
        return m(**kw).logits


def _upstream(px):
    """The upstream processor's layout: every frame of every video is one tile of ``pixel_values``."""
    return px.flatten(0, 1)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_full_retention_reproduces_unpruned_logits(root, attn):
    m = tiny_internvl(root, attn=attn)
    ids = torch.tensor([internvl_video_ids(T)])
    px = _video()
    ref = _logits(m, input_ids=ids, pixel_values=_upstream(px))
    tp.apply(m, FULL)
    try:
        out = _logits(m, input_ids=ids, pixel_values_videos=px)
    finally:
        tp.remove(m)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)


def test_generate_at_full_retention_equals_unpatched(model):
    ids = torch.tensor([internvl_video_ids(T)])
    px = _video(5)
    ref = model.generate(input_ids=ids, pixel_values=_upstream(px), max_new_tokens=6, do_sample=False)
    tp.apply(model, FULL)
    try:
        out = model.generate(input_ids=ids, pixel_values_videos=px, max_new_tokens=6, do_sample=False)
    finally:
        tp.remove(model)
    assert torch.equal(out, ref)


def test_kept_token_count_and_every_text_token_kept(model):
    ids = torch.tensor([internvl_video_ids(T)])
    tp.apply(model, tp.TangoConfig(retention=0.25))
    try:
        out = _logits(model, input_ids=ids, pixel_values_videos=_video(1))
        st = stats(model)
        res = tp.models.last_results(model)[0]
    finally:
        tp.remove(model)
    n_text = ids.shape[1] - T * PER_FRAME  # frame labels, <img> and </img> included
    assert res.grid == (T, 4, 4)
    assert st["visual_tokens_before"] == T * PER_FRAME
    assert st["visual_tokens_after"] == res.num_kept < T * PER_FRAME
    assert out.shape[1] == n_text + res.num_kept
    assert st["vision_s"] > 0 and st["prune_s"] > 0


def test_pruned_logits_equal_a_hand_built_reference(model):
    """Pruned forward == the unpatched LLM fed, per frame, [label, <img>, the frame's kept tokens, </img>]."""
    ids = torch.tensor([internvl_video_ids(T)])
    tp.apply(model, tp.TangoConfig(retention=0.3))
    try:
        out = _logits(model, input_ids=ids, pixel_values_videos=_video(11))
        res = tp.models.last_results(model)[0]
    finally:
        tp.remove(model)
    emb = model.get_input_embeddings()
    tok = lambda *i: emb(torch.tensor(i))  # noqa: E731
    frame = res.positions[:, 0]
    parts = [tok(1, 2, 3)]
    for t in range(T):
        parts += [tok(10 + t, IV_START), res.features[frame == t], tok(IV_END)]
    parts.append(tok(4, 5))
    with torch.no_grad():
        ref = model(inputs_embeds=torch.cat(parts)[None]).logits
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)


def test_left_padded_batch_equals_each_sample_alone(model):
    rows = [internvl_video_ids(T, prefix=(1, 2, 3, 7, 8)), internvl_video_ids(T, prefix=(9,))]
    px = _video(7, n=2)
    px[1, 1:, :, :, :16] = px[1, :1, :, :, :16]  # left half static: Tango keeps a different count in this row
    ts = torch.tensor([[0.0, 0.5, 1.0, 1.5], [0.0, 2.0, 4.0, 6.0]])
    ids, am = left_pad(rows)
    tp.apply(model, name="tango", retention=0.3)
    try:
        batch = model.generate(
            input_ids=ids,
            attention_mask=am,
            pixel_values_videos=px,
            video_timestamps=ts,
            max_new_tokens=5,
            do_sample=False,
        )
        kept = stats(model)["kept_per_video"]
        for i, r in enumerate(rows):
            one = model.generate(
                input_ids=torch.tensor([r]),
                pixel_values_videos=px[i : i + 1],
                video_timestamps=ts[i : i + 1],
                max_new_tokens=5,
                do_sample=False,
            )
            assert torch.equal(batch[i, ids.shape[1] :], one[0, len(r) :])
            assert stats(model)["kept_per_video"] == [kept[i]]
        assert torch.equal(batch[:, : ids.shape[1]], ids)  # the caller's prompt comes back unpruned
    finally:
        tp.remove(model)


def test_several_videos_and_an_image_in_one_prompt(model):
    """An image (two tiles, one run) then two videos: both videos pruned, the image untouched."""
    img = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    image = [IV_START] + [IV_CONTEXT] * (2 * PER_FRAME) + [IV_END]
    ids = torch.tensor(
        [[1] + image + internvl_video_ids(T, prefix=(2,), suffix=()) + internvl_video_ids(T, prefix=(3,), suffix=(4,))]
    )
    px = _video(2, n=2)
    ref = _logits(model, input_ids=ids, pixel_values=torch.cat([img, _upstream(px)]))
    kw = dict(input_ids=ids, pixel_values=img, pixel_values_videos=px, visual_order=["image", "video", "video"])
    tp.apply(model, FULL)
    try:
        assert torch.allclose(_logits(model, **kw), ref, atol=1e-5, rtol=0)
        model._tango_prune_state.config = tp.TangoConfig(retention=0.25)  # same patch, another budget
        out = _logits(model, **kw)
        res = tp.models.last_results(model)
        with pytest.raises(ValueError, match="visual_order must be given"):
            _logits(model, input_ids=ids, pixel_values=img, pixel_values_videos=px)
        with pytest.raises(ValueError, match="visual_order"):
            _logits(model, **{**kw, "visual_order": ["image", "video"]})
    finally:
        tp.remove(model)
    assert len(res) == 2
    assert out.shape[1] == ids.shape[1] - 2 * T * PER_FRAME + sum(r.num_kept for r in res)
    n_before = 1 + len(image) + 2  # text, the image, the first video's first label and <img>
    assert torch.allclose(out[0, :n_before], ref[0, :n_before], atol=1e-5, rtol=0)


def test_bad_inputs_raise(model):
    with pytest.raises(ValueError, match="saliency_head"):
        tp.apply(model, FULL, saliency_head="google/siglip-so400m-patch14-384")
    tp.apply(model, FULL)
    try:
        with pytest.raises(ValueError, match="placeholder"):
            _logits(model, input_ids=torch.tensor([internvl_video_ids(T - 1)]), pixel_values_videos=_video())
        with pytest.raises(ValueError, match="video_timestamps"):
            _logits(
                model,
                input_ids=torch.tensor([internvl_video_ids(T)]),
                pixel_values_videos=_video(),
                video_timestamps=[[0.0, 1.0]],
            )
        with pytest.raises(ValueError, match="pixel_values_videos must have shape"):
            _logits(model, input_ids=torch.tensor([internvl_video_ids(T)]), pixel_values_videos=_video()[0])
    finally:
        tp.remove(model)


def test_cls_saliency_matches_the_layer_attention(root):
    m = tiny_internvl(root, attn="eager")
    layer = m.model.vision_tower.encoder.layer[-1]
    x = torch.randn(3, 65, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        sal = internvl_cls_saliency(layer, x)
        _, w = layer.attention(layer.layernorm_before(x))
    assert sal.dtype == torch.float32 and sal.shape == (3, 64)
    assert torch.allclose(sal, w[:, :, 0, 1:].mean(dim=1), atol=1e-6)


def test_bench_driver(model):
    fam = tp.models.family_for(model)
    assert fam.bench_frame_size(model, None) == 32
    with pytest.raises(ValueError, match="frame_size"):
        fam.bench_frame_size(model, 64)
    spec = BenchSpec(model="tiny-qwen2.5-vl", frames=3, warmup=0, repeats=1, new_tokens=2, prompt_tokens=4)
    inp = fam.bench_inputs(model, spec, 32, torch.device("cpu"))
    assert int((inp.input_ids == IV_CONTEXT).sum()) == inp.info["video_tokens"] == 3 * PER_FRAME
    adapter = InternVLAdapter(model)
    assert fam.bench_first_video_features(adapter.bench_encode(model, inp), inp).shape == (3, 4, 4, 32)
    tp.apply(model, tp.TangoConfig(retention=0.5))
    try:
        out = _logits(model, **pruned_kwargs(inp, torch.ones_like(inp.input_ids)))
        after = stats(model)["visual_tokens_after"]
    finally:
        tp.remove(model)
    assert 0 < after < 3 * PER_FRAME
    assert out.shape[1] == inp.input_ids.shape[1] - 3 * PER_FRAME + after


def test_bench_unpruned_baseline_and_full_retention_agree(model):
    # The unpruned run passes the upstream encoder output in (bench_upstream_encode); keeping every token
    # through the adapter must generate the same tokens, and the whole bench runs on InternVL.
    from tango_prune.bench import run_bench
    from tango_prune.bench.families import unpruned_kwargs

    fam = tp.models.family_for(model)
    spec = BenchSpec(model="tiny-internvl", frames=3, warmup=0, repeats=1, new_tokens=2, prompt_tokens=4)
    inp = fam.bench_inputs(model, spec, 32, torch.device("cpu"))
    mask = torch.ones_like(inp.input_ids)
    with torch.no_grad():
        ref = model.generate(**unpruned_kwargs(inp, mask, fam.bench_upstream_encode(model, inp)), max_new_tokens=3)
        tp.apply(model, name="random", retention=1.0)
        try:
            out = model.generate(**pruned_kwargs(inp, mask), max_new_tokens=3)
        finally:
            tp.remove(model)
    assert torch.equal(ref, out)
    spec = dataclasses.replace(spec, methods=("tango", "topk"), retentions=(0.5,))
    rows = run_bench(spec, progress=False, model=model)["rows"]
    assert [r["method"] for r in rows] == ["none", "tango", "topk"]
    assert rows[0]["visual_tokens"] == 3 * PER_FRAME and all(0 < r["kept"] < 3 * PER_FRAME for r in rows[1:])
    assert not tp.models.is_applied(model)


def test_cli_run_end_to_end(tmp_path, capsys):
    video = _write_video(tmp_path / "clip.mp4")
    model_dir = tiny_internvl(tmp_path).name_or_path
    _save_tokenizer(model_dir, {"<IMG_CONTEXT>": IV_CONTEXT, "<img>": IV_START, "</img>": IV_END})
    rc = main(
        [
            "run",
            "--model",
            model_dir,
            "--video",
            str(video),
            "--question",
            "w1 w2 w3",
            "--retention",
            "0.25",
            "--frames",
            "4",
            "--max-new-tokens",
            "3",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "answer:" in out and "note: InternVL has no published Tango preset" in out
    after = int(out.split("visual tokens: 64 -> ")[1].split()[0])
    assert 0 < after < 64
