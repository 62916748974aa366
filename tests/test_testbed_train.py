import json

import numpy as np
import pytest
import torch

from tango_prune.cli import main
from tango_prune.testbed import data as D
from tango_prune.testbed import train as TR


def test_cell_objects_and_aux_targets_follow_the_objects():
    clip = D.make_clip(D.TRAIN, 3)
    cell = 2 * 6
    cells = TR._cell_objects(clip.shape_ids, cell)
    g = D.IMAGE_SIZE // cell
    assert cells.shape == (D.NUM_FRAMES * g * g,)
    by_shape = {D.SHAPES.index(o.shape): o for o in clip.objects}
    for k in np.nonzero(cells >= 0)[0]:  # every labelled cell holds pixels of that object in that frame
        t, r, c = k // (g * g), (k % (g * g)) // g, k % g
        patch = clip.shape_ids[t, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell]
        assert (patch == cells[k] + 1).sum() >= 4
        assert by_shape[int(cells[k])].visible(int(t))
    classes, flags = TR._aux_targets(clip.objects, cells, D.NUM_FRAMES)
    assert (
        (classes[cells < 0] == -100).all() and (classes[cells >= 0, 1:] >= 0).all() and (flags[cells < 0] == -1).all()
    )
    for k in np.nonzero(cells >= 0)[0]:
        o, t = by_shape[int(cells[k])], int(k // (g * g))
        assert D.SHAPES[classes[k, 1]] == o.shape and tuple(D.COLORS)[classes[k, 2]] == o.color_at(t)
        assert (classes[k, 0] == -100) == (t < o.appear + 2)
        if classes[k, 0] >= 0:
            assert D.DIRECTIONS[classes[k, 0]] == o.direction
        assert flags[k, 0] == float(o.appear > 0)
        assert flags[k, 1] == float(o.color_after is not None and k // (g * g) >= o.change_frame)


def test_layouts_drop_frames_and_tokens_but_never_everything():
    clip = D.make_clip(D.TRAIN, 5)
    obj = TR._cell_objects(clip.shape_ids, 12) >= 0
    T, n = D.NUM_FRAMES, obj.shape[0]
    frame = np.arange(n) // (n // T)
    full = TR.TrainConfig(out_dir="x", full_layout_prob=1.0)
    assert TR._layout(np.random.default_rng(0), full, obj, T).all()
    bg_only = TR.TrainConfig(out_dir="x", full_layout_prob=0.0, frame_prob=0.0, any_drop_prob=0.0)
    anyd = TR.TrainConfig(out_dir="x", full_layout_prob=0.0, frame_prob=1.0, any_drop_prob=1.0, min_frames=6)
    sizes, objects_dropped = [], 0
    for seed in range(40):
        k = TR._layout(np.random.default_rng(seed), bg_only, obj, T)
        assert k[obj].all()  # background-only mode never drops an object token
        k = TR._layout(np.random.default_rng(seed), anyd, obj, T)
        assert k.any()
        shown = np.unique(frame[k])
        assert len(shown) <= T
        objects_dropped += int((~k[obj]).sum() > 0)
        sizes.append(int(k.sum()))
        assert np.array_equal(k, TR._layout(np.random.default_rng(seed), anyd, obj, T))  # seeded
    assert objects_dropped > 30 and len(set(sizes)) > 20  # a distribution of layouts, objects included
    with pytest.raises(ValueError, match="min_frames"):
        TR.TrainConfig(out_dir="x", min_frames=0)
    with pytest.raises(ValueError, match="exclusive"):
        TR.TrainConfig(out_dir="x", stage_from="a", vision_from="b")


def test_tube_layouts_show_tubed_cells_only_in_their_spans_first_frame():
    clip = D.make_clip(D.TRAIN, 5)
    obj = TR._cell_objects(clip.shape_ids, 12) >= 0
    T, n = D.NUM_FRAMES, obj.shape[0]
    per = n // T
    # tube_prob=0 (every recipe before tubes) draws the same layouts as before tubes existed: the recorded
    # total over 50 seeds is from the code without the option, so old runs keep their weights.
    old = TR.TrainConfig(out_dir="x", layouts="distribution")
    assert sum(int(TR._layout(np.random.default_rng(s), old, obj, T).sum()) for s in range(50)) == 18355
    tube = TR.TrainConfig(out_dir="x", full_layout_prob=0.0, frame_prob=0.0, tube_prob=1.0)
    objects_dropped, patterns = 0, set()
    for seed in range(60):
        k = TR._layout(np.random.default_rng(seed), tube, obj, T).reshape(T, per)
        assert k[0].all()  # the first frame starts a span
        full = k.all(axis=1)
        # Within a span every frame after the first drops the same cells; a span starts with a whole frame.
        for f in range(2, T):
            if not full[f] and not full[f - 1]:
                assert np.array_equal(k[f], k[f - 1])
        assert (~full).sum() == 0 or len({k[f].tobytes() for f in range(T) if not full[f]}) <= 4
        objects_dropped += int((~k.reshape(-1)[obj]).any())
        patterns.add(int(k.sum()))
    assert objects_dropped > 40 and len(patterns) > 30  # random cells, object cells included
    with pytest.raises(ValueError, match="tube_prob"):
        TR.TrainConfig(out_dir="x", tube_prob=1.5)


def test_two_rate_layouts_drop_objects_and_background_at_independent_rates():
    clip = D.make_clip(D.TRAIN, 5)
    obj = TR._cell_objects(clip.shape_ids, 12) >= 0
    T, n = D.NUM_FRAMES, obj.shape[0]
    two = TR.TrainConfig(out_dir="x", full_layout_prob=0.0, frame_prob=0.0, two_rate_prob=1.0)
    object_heavy, background_heavy = 0, 0
    for seed in range(80):
        k = TR._layout(np.random.default_rng(seed), two, obj, T)
        assert np.array_equal(k, TR._layout(np.random.default_rng(seed), two, obj, T))  # seeded
        o, b = k[obj].mean(), k[~obj].mean()
        # a handful of tokens, mostly objects: never drawn by the equal-rate or background-only modes
        object_heavy += int(k.sum() < 0.25 * n and k[obj].sum() > k[~obj].sum() and o < 0.9)
        background_heavy += int(b > o + 0.3)
    assert object_heavy >= 3 and background_heavy >= 10
    # Off by default, and then no random number is drawn for it: the recorded layouts stay (see the tube test).
    assert TR.TrainConfig(out_dir="x").two_rate_prob == 0.0
    with pytest.raises(ValueError, match="two_rate_prob"):
        TR.TrainConfig(out_dir="x", two_rate_prob=-0.1)


def test_low_rate_layouts_keep_few_tokens():
    clip = D.make_clip(D.TRAIN, 5)
    obj = TR._cell_objects(clip.shape_ids, 12) >= 0
    T = D.NUM_FRAMES
    base = dict(out_dir="x", full_layout_prob=0.0, frame_prob=0.0, any_drop_prob=1.0)
    wide, low = TR.TrainConfig(**base), TR.TrainConfig(**base, low_rate_prob=1.0)
    shares = {
        name: [TR._layout(np.random.default_rng(s), cfg, obj, T).mean() for s in range(60)]
        for name, cfg in (("wide", wide), ("low", low))
    }
    # per-sample rate U(0.03, 0.2), jittered x U(0.5, 1.5) per frame: never above 0.3 of the tokens
    assert max(shares["low"]) < 0.3 and np.mean(shares["low"]) < 0.15 < np.mean(shares["wide"])
    assert sum(x < 0.12 for x in shares["low"]) > 3 * sum(x < 0.12 for x in shares["wide"])
    with pytest.raises(ValueError, match="low_rate_prob"):
        TR.TrainConfig(out_dir="x", low_rate_prob=2.0)


def test_still_clips_have_duplicate_tokens_exactly_where_nothing_changes():
    noisy, still = D.make_clip(D.TRAIN, 5), D.make_clip(D.TRAIN, 5, still=True)
    assert np.array_equal(noisy.shape_ids, still.shape_ids) and np.array_equal(noisy.color_ids, still.color_ids)
    assert [(o.shape, o.color, o.direction) for o in noisy.objects] == [
        (o.shape, o.color, o.direction) for o in still.objects
    ]
    assert not TR.duplicate_tokens(noisy.frames, 12).any()  # sensor noise: no token repeats exactly
    dup = TR.duplicate_tokens(still.frames, 12).reshape(D.NUM_FRAMES, 6, 6)
    T = D.NUM_FRAMES
    ids = still.shape_ids.reshape(T, 6, 12, 6, 12).transpose(0, 1, 3, 2, 4).reshape(T, 6, 6, -1)
    colors = still.color_ids.reshape(T, 6, 12, 6, 12).transpose(0, 1, 3, 2, 4).reshape(T, 6, 6, -1)
    unchanged = (ids[1:] == ids[:-1]).all(-1) & (colors[1:] == colors[:-1]).all(-1)
    assert not dup[0].any()
    assert np.array_equal(dup[1:], unchanged)  # a still camera repeats exactly what does not change
    assert 0 < dup.sum() < dup.size
    cfg = TR.TrainConfig(out_dir="x", layouts="distribution", dup_prob=1.0)
    obj = TR._cell_objects(still.shape_ids, 12) >= 0
    assert np.array_equal(TR._layout(np.random.default_rng(0), cfg, obj, T, dup.reshape(-1)), ~dup.reshape(-1))
    # stages cached without still clips stay reusable: the setting is part of the key only when used
    assert "still_prob" not in TR._stage_key(TR.TrainConfig(out_dir="x"))
    assert TR._stage_key(TR.TrainConfig(out_dir="x", still_prob=0.5))["still_prob"] == 0.5


def test_bad_train_config_raises():
    with pytest.raises(ValueError, match="easy_steps"):
        TR.TrainConfig(out_dir="x", lm_steps=10, easy_steps=10)
    with pytest.raises(ValueError, match="text_hidden"):
        TR.TrainConfig(out_dir="x", text_hidden=100, text_heads=3)
    with pytest.raises(ValueError, match="layouts"):
        TR.TrainConfig(out_dir="x", layouts="random")
    with pytest.raises(ValueError, match="stop_after"):
        TR.TrainConfig(out_dir="x", lm_steps=10, stop_after=11)
    with pytest.raises(ValueError, match="aux_weight"):
        TR.TrainConfig(out_dir="x", aux_weight=-1.0)
    with pytest.raises(ValueError, match="sep_weight"):
        TR.TrainConfig(out_dir="x", sep_weight=-0.5)
    for bad in (
        (("direction", 0.0),),
        (("direction", float("inf")),),
        (("nope", 2.0),),
        (("count", 2.0), ("count", 3.0)),
        ("direction",),
    ):
        with pytest.raises(ValueError, match="answer_weights"):
            TR.TrainConfig(out_dir="x", answer_weights=bad)
    for arg in ("direction", "direction=x", "nope=2"):  # one-line CLI errors before any work
        assert main(["testbed", "train", "--out", "x", "--answer-weight", arg]) == 2
    # a record read back from training.json (lists) is the same config
    assert TR.TrainConfig(out_dir="x", answer_weights=[["direction", 3]]).answer_weights == (("direction", 3.0),)


def test_answer_weights_weigh_the_answer_tokens_of_their_question_type():
    clips = [D.make_clip(D.TRAIN, i) for i in range(3)]
    cache = [
        (torch.zeros(D.NUM_FRAMES, 144, 8, dtype=torch.float16), c.objects, TR._cell_objects(c.shape_ids, 12))
        for c in clips
    ]
    from tango_prune.testbed.model import TestbedProcessor, build_tokenizer

    proc = TestbedProcessor(build_tokenizer(), D.IMAGE_SIZE, 6)
    plain = TR._lm_batch(TR.TrainConfig(out_dir="x", lm_batch=2), proc, cache, 500)  # past the easy steps
    cfg = TR.TrainConfig(out_dir="x", lm_batch=2, answer_weights=(("count", 5.0),))
    boosted = TR._lm_batch(cfg, proc, cache, 500)
    for a, b in zip(plain, boosted):
        assert a["weights"] is None and a["ids"] == b["ids"] and a["labels"] == b["labels"]  # same draws
        w, lab = b["weights"], b["labels"]
        assert len(w) == len(lab) and all((x > 0) == (y != -100) for x, y in zip(w, lab))
        assert set(w) - {0.0} <= {1.0, 5.0}
    assert any(5.0 in b["weights"] for b in boosted)  # every clip has a count question


def test_separation_loss_reads_only_pairs_covered_by_different_things():
    e = torch.eye(4)
    owner = torch.tensor([-1, -1, 0, 1])
    # different things on orthogonal or opposite features: nothing to push
    assert TR.separation_loss(e, owner) == 0.0
    assert TR.separation_loss(torch.stack([e[0], e[0], -e[0], e[1]]), owner) == 0.0
    # the same thing may share a feature; different things sharing one cost cos^2 = 1 per pair
    same = torch.stack([e[0], e[0], e[1], e[2]])
    assert TR.separation_loss(same, owner) == 0.0
    x = torch.stack([e[0], e[0], e[0], e[2]])  # background and object 0 identical: 4 of the 10 ordered pairs
    assert torch.isclose(TR.separation_loss(x, owner), torch.tensor(4 / 10))
    # scale-free, differentiable, and zero when one thing covers every cell
    x = (3.0 * torch.stack([e[0], e[0], e[0] + e[1], e[2]])).requires_grad_()  # cos 1/sqrt(2): pushed
    TR.separation_loss(x, owner).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert TR.separation_loss(torch.randn(3, 4), torch.zeros(3, dtype=torch.long)) == 0.0
    with pytest.raises(ValueError, match="same number of tokens"):
        TR.separation_loss(torch.randn(3, 4), owner)


def test_a_stage_from_a_vision_from_run_is_reusable():
    # The run that wrote the stage took its tower from a saved model; the run that reuses the stage cannot
    # pass --vision-from too, so the check compares every other setting and takes the provenance along.
    made = TR._stage_key(TR.TrainConfig(out_dir="x", vision_from="/some/model"))
    TR.check_stage(made, TR.TrainConfig(out_dir="y", stage_from="s.pt"))
    with pytest.raises(ValueError, match="stage_from was made with"):
        TR.check_stage(made, TR.TrainConfig(out_dir="y", stage_from="s.pt", seed=1))


def test_train_cli_end_to_end_and_resume_from_stage(tmp_path):
    common = [
        "testbed",
        "train",
        "--seed",
        "1",
        "--vision-steps",
        "2",
        "--cache-clips",
        "20",
        "--lm-steps",
        "3",
        "--lm-batch",
        "2",
        "--easy-steps",
        "1",
        "--eval-every",
        "3",
        "--eval-size",
        "2",
        "--text-hidden",
        "32",
        "--text-layers",
        "2",
        "--text-heads",
        "2",
        "--layouts",
        "distribution",
        "--attn-weight",
        "0",
        "--sep-weight",
        "0.5",
    ]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(common + ["--out", str(a), "--save-stage"]) == 0
    assert main(common + ["--out", str(b), "--stage-from", str(a / "stage.pt")]) == 0
    from tango_prune.testbed.model import load

    ma, proc = load(a)
    mb, _ = load(b)
    for (n, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(pa, pb), n  # resuming from the saved stage is the same run
    rec = json.loads((a / "training.json").read_text())
    assert rec["config"]["text_layers"] == 2 and len(rec["history"]) == 1
    assert json.loads((a / "reference.json").read_text())["total"] == 48
    assert main(["testbed", "train", "--out", str(tmp_path / "c"), "--stage-from", str(tmp_path / "nope.pt")]) == 2
    # --vision-from takes a saved model's (frozen) tower and skips the vision stage
    from transformers import LlavaOnevisionForConditionalGeneration

    fresh = LlavaOnevisionForConditionalGeneration(ma.config)
    TR._load_vision_tower(fresh, str(a))
    for (n, pa), pc in zip(ma.model.vision_tower.state_dict().items(), fresh.model.vision_tower.state_dict().values()):
        assert torch.equal(pa, pc), n
    assert not any(p.requires_grad for p in fresh.model.vision_tower.parameters())
    assert main(["testbed", "train", "--out", str(tmp_path / "d"), "--vision-from", str(tmp_path)]) == 2
    # --lm-from starts the language stage from a saved model with the same tower: every other weight copied
    start = LlavaOnevisionForConditionalGeneration(ma.config)
    TR._load_vision_tower(start, str(a))
    TR._load_language_model(start, str(a))
    for (n, pa), pc in zip(ma.state_dict().items(), start.state_dict().values()):
        assert torch.equal(pa, pc), n
    other = LlavaOnevisionForConditionalGeneration(ma.config)  # random tower: its LLM never read these features
    with pytest.raises(ValueError, match="lm_from .* another vision tower"):
        TR._load_language_model(other, str(a))
    e = tmp_path / "e"
    assert main(common + ["--out", str(e), "--stage-from", str(a / "stage.pt"), "--lm-from", str(a)]) == 0
    assert json.loads((e / "training.json").read_text())["config"]["lm_from"] == str(a)
    assert main(["testbed", "train", "--out", str(tmp_path / "f"), "--lm-from", str(tmp_path / "nope")]) == 2
    # a deeper run grows the saved LLM (its aux loss kept at the saved model's layer)
    g = tmp_path / "g"
    grow = ["--out", str(g), "--stage-from", str(a / "stage.pt"), "--lm-from", str(a), "--aux-layer", "1"]
    deeper = list(common)
    deeper[deeper.index("--text-layers") + 1] = "3"
    assert main(deeper + grow) == 0
    rec = json.loads((g / "training.json").read_text())
    assert rec["config"]["text_layers"] == 3 and rec["config"]["aux_layer"] == 1


def test_lm_from_a_shallower_model_grows_it_with_identity_layers(tmp_path):
    from transformers import LlavaOnevisionForConditionalGeneration

    from tango_prune.testbed.model import TestbedProcessor, build_config, build_tokenizer

    tok = build_tokenizer()
    proc = TestbedProcessor(tok)
    small = {"vision_hidden": 32, "vision_layers": 1, "heads": 2, "text_hidden": 32, "text_heads": 2}
    torch.manual_seed(0)
    saved = LlavaOnevisionForConditionalGeneration(build_config(tok, text_layers=2, **small)).eval()
    saved.save_pretrained(tmp_path / "saved")
    src = str(tmp_path / "saved")
    grown = LlavaOnevisionForConditionalGeneration(build_config(tok, text_layers=4, **small)).eval()
    TR._load_vision_tower(grown, src)
    assert TR._load_language_model(grown, src) == [2, 3]
    top = grown.model.language_model.layers[3]
    assert not top.self_attn.o_proj.weight.any() and not top.mlp.down_proj.weight.any()
    assert top.self_attn.q_proj.weight.any()  # the rest of a new block keeps its init, so it can learn
    sample = D.make_sample(D.TEST, 0)
    inputs = proc(sample.clip.frames, sample.question.text, sample.question.options)
    with torch.no_grad():
        want, got = saved(**inputs).logits, grown(**inputs).logits
    # bitwise, not allclose: the first layers run the same kernels on the same inputs, and a new block adds
    # exact zeros to the residual stream, so any difference at all would be a bug in the growth
    assert torch.equal(want, got)
    shallower = LlavaOnevisionForConditionalGeneration(build_config(tok, text_layers=1, **small))
    TR._load_vision_tower(shallower, src)
    with pytest.raises(ValueError, match="lm_from .* more than this run"):
        TR._load_language_model(shallower, src)
    wider = LlavaOnevisionForConditionalGeneration(build_config(tok, text_layers=4, **{**small, "text_hidden": 64}))
    TR._load_vision_tower(wider, src)
    with pytest.raises(ValueError, match="lm_from .* different model sizes"):
        TR._load_language_model(wider, src)
    other = LlavaOnevisionForConditionalGeneration(build_config(tok, text_layers=4, **small))
    with pytest.raises(ValueError, match="lm_from .* another vision tower"):
        TR._load_language_model(other, src)
    # the stage (frozen tower + feature cache) does not depend on the LLM, so it is reusable across depths
    made = TR._stage_key(TR.TrainConfig(out_dir="x", text_layers=2))
    TR.check_stage(made, TR.TrainConfig(out_dir="y", stage_from="s.pt", text_layers=4, aux_layer=1))
    assert TR._aux_layer(TR.TrainConfig(out_dir="x", text_layers=6)) == 3
    assert TR._aux_layer(TR.TrainConfig(out_dir="x", text_layers=6, aux_layer=2)) == 2
    with pytest.raises(ValueError, match="aux_layer"):
        TR.TrainConfig(out_dir="x", text_layers=4, aux_layer=5)


def test_shipped_training_record_is_a_config_of_this_code():
    from tango_prune.testbed.model import WEIGHTS_DIR

    rec = json.loads((WEIGHTS_DIR / "training.json").read_text())
    cfg = TR.TrainConfig(**rec["config"])  # the recorded command still means the same run
    # the issue-10 recipe: a distribution of layouts, no evidence-attention loss, fine-tuned from the
    # previous fixed-layout model (docs/testbed.md, "The shipped model")
    assert cfg.layouts == "distribution" and cfg.attn_weight == 0.0 and cfg.lm_steps == 2000
    assert cfg.lm_lr == 1e-3 and cfg.lm_from is not None and cfg.seed == 0


def test_isolated_packing_answers_each_question_as_if_asked_alone():
    from tango_prune.testbed.model import load

    model, proc = load()
    lm = model.model.language_model.eval()
    embed = model.get_input_embeddings()
    g = torch.Generator().manual_seed(0)
    tok = proc.tokenizer
    qs = [tok(t, add_special_tokens=False)["input_ids"] for t in ("question : how many shapes", "answer : two <eos>")]
    rows = []  # two rows with different visual lengths, two questions each, padded to one length
    for V in (7, 11):
        vis = torch.randn(V, lm.config.hidden_size, generator=g)
        rows.append((vis, [embed(torch.tensor(q)) for q in qs]))
    L = 32
    x = torch.zeros(2, L, lm.config.hidden_size)
    spans = []
    for b, (vis, q) in enumerate(rows):
        seq = torch.cat([vis, *q])
        x[b, : seq.shape[0]] = seq
        spans.append([(0, len(qs[0])), (len(qs[0]), len(qs[1]))])
    mask, pos = TR.isolated_mask(L, [r[0].shape[0] for r in rows], spans)
    with torch.no_grad():
        packed = lm(inputs_embeds=x, attention_mask=mask, position_ids=pos).last_hidden_state
        assert torch.isfinite(packed).all()  # padding rows attend to themselves, never to nothing
        for b, (vis, q) in enumerate(rows):
            V = vis.shape[0]
            for j, (off, n) in enumerate(spans[b]):
                alone = lm(inputs_embeds=torch.cat([vis, q[j]])[None]).last_hidden_state[0, V:]
                torch.testing.assert_close(packed[b, V + off : V + off + n], alone, atol=1e-5, rtol=1e-5)
            # the visual tokens see only each other, causally
            torch.testing.assert_close(packed[b, :V], lm(inputs_embeds=vis[None]).last_hidden_state[0])
    with pytest.raises(ValueError, match="length"):
        TR.isolated_mask(10, [7], [[(0, 5)]])
    for bad in ([(1, 2)], [(0, 2), (1, 2)], [(0, 0)]):  # a gap, an overlap or an empty question
        with pytest.raises(ValueError, match="consecutive"):
            TR.isolated_mask(20, [7], [bad])
    with pytest.raises(ValueError, match="isolate_questions"):
        TR.TrainConfig(out_dir="x", isolate_questions=True, attn_weight=1.0)
    # the batch records the spans only when asked, and they tile the text exactly
    clips = [D.make_clip(D.TRAIN, i) for i in range(2)]
    cache = [
        (torch.zeros(D.NUM_FRAMES, 144, 8, dtype=torch.float16), c.objects, TR._cell_objects(c.shape_ids, 12))
        for c in clips
    ]
    cfg = TR.TrainConfig(out_dir="x", lm_batch=2, attn_weight=0.0, isolate_questions=True)
    for it, plain in zip(
        TR._lm_batch(cfg, proc, cache, 500), TR._lm_batch(TR.TrainConfig(out_dir="x", lm_batch=2), proc, cache, 500)
    ):
        assert plain["spans"] is None and plain["ids"] == it["ids"]  # the same draws
        assert [o for o, _ in it["spans"]] == list(np.cumsum([0] + [n for _, n in it["spans"]])[:-1])
        assert sum(n for _, n in it["spans"]) == len(it["ids"])
