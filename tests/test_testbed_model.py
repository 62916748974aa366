import json

import pytest
import torch

from tango_prune.testbed import data as D
from tango_prune.testbed.evaluate import accuracy
from tango_prune.testbed.model import WEIGHTS_DIR, TestbedProcessor, build_config, build_tokenizer, load
from tango_prune.testbed.train import video_features


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(1)
    return load()


def test_shipped_model_is_upstream_llava_ov_with_siglip_head(shipped):
    from transformers import LlavaOnevisionForConditionalGeneration

    model, proc = shipped
    assert type(model) is LlavaOnevisionForConditionalGeneration
    assert model.config.vision_config.vision_use_head
    assert hasattr(model.model.vision_tower, "head")
    size = sum(p.stat().st_size for p in WEIGHTS_DIR.glob("*.safetensors"))
    assert size <= 30 * 2**20


def test_shipped_model_reaches_recorded_accuracy(shipped):
    model, proc = shipped
    ref = json.loads((WEIGHTS_DIR / "reference.json").read_text())
    res = accuracy(model, proc, range(ref["subset"]), batch_size=ref["batch_size"])
    assert res["correct"] == ref["correct"]


def test_shipped_model_reproduces_recorded_instrument_check_counts(shipped):
    """The instrument checks on a small fixed subset: every cell they read, with its exact recorded count."""
    from tango_prune.testbed.evaluate import check_cells

    model, proc = shipped
    ref = json.loads((WEIGHTS_DIR / "reference.json").read_text())["checks"]
    rep = check_cells(model, proc, ref["subset"], ref["batch_size"])
    assert rep["full"]["correct"] == ref["full"]
    assert {n: {r: x["correct"] for r, x in c.items()} for n, c in rep["results"].items()} == ref["cells"]
    assert [c["name"] for c in rep["checks"]] == ["full", "redundancy-robust", "evidence oracle", "headroom"]
    assert all(c["passed"] is not None for c in rep["checks"])


def test_training_features_are_the_standard_video_path(shipped):
    model, proc = shipped
    s = D.make_sample(D.TEST, 0)
    pv = proc(s.clip.frames, s.question.text)["pixel_values_videos"]
    with torch.no_grad():
        ref = model.model.get_video_features(pv, return_dict=True).pooler_output
        feats, newline, _, _ = video_features(model, pv)
    assert torch.allclose(torch.cat([feats, newline[None, None]], 1), ref, atol=1e-5)
    assert ref.shape[1] == proc.num_video_tokens(D.NUM_FRAMES)


def test_tokenizer_and_processor_round_trip(tmp_path):
    tok = build_tokenizer()
    proc = TestbedProcessor(tok)
    proc.save_pretrained(tmp_path)
    again = TestbedProcessor.from_pretrained(tmp_path)
    text = proc.prompt("Where is the square at the end?", ["top-left", "bottom-right"])
    assert again.tokenizer(text)["input_ids"] == tok(text)["input_ids"]
    # every word of the prompt format and of every question type is in the vocabulary
    assert "<unk>" not in tok.convert_ids_to_tokens(tok(text)["input_ids"])
    for i in range(200):
        q = D.make_sample(D.TRAIN, i).question
        full = proc.prompt(q.text, q.options) + " " + q.answer
        assert "<unk>" not in tok.convert_ids_to_tokens(tok(full)["input_ids"]), full
    cfg = build_config(tok)
    assert cfg.video_token_index == tok.convert_tokens_to_ids("<video>")
    with pytest.raises(ValueError, match="question"):
        proc.prompt("  ")
    with pytest.raises(ValueError, match="frames"):
        proc.pixels(torch.zeros(2, 3).numpy())


def test_served_encodings_give_the_same_answers_without_the_encoder(shipped):
    """accuracy(..., encodings=...) runs the vision encoder once per batch and layout, whatever the method."""
    import tango_prune as tp
    from tango_prune.models import last_encoding

    model, proc = shipped
    calls = []
    hook = model.model.vision_tower.register_forward_hook(lambda *_: calls.append(1))
    served: dict = {}
    try:
        for method, r in (("tango", 0.1), ("random", 0.5)):
            tp.apply(model, tp.make_config(method, retention=r))
            try:
                assert last_encoding(model) is None  # a fresh patch has served nothing yet
                calls.clear()
                plain = accuracy(model, proc, range(6), 3)
                assert len(calls) == 2
                calls.clear()
                got = accuracy(model, proc, range(6), 3, encodings=served)
                assert got == plain
                # the first method fills the cache (two encoder passes), every later call is served
                assert len(calls) == (2 if method == "tango" else 0)
                assert sorted(served) == [(0, 1, 2), (3, 4, 5)]
            finally:
                tp.remove(model)
    finally:
        hook.remove()
