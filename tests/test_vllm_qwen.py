"""Qwen2.5-VL through vLLM with the plugin equals ``tango_prune.apply`` on transformers.

One engine per method (module-scoped, one at a time): the same tiny fp32 checkpoint is served by vLLM with
``hf_overrides`` selecting the plugin's architecture and loaded by transformers with the method applied; for
the same video and prompt both keep the same tokens at the same M-RoPE positions, the prompt has exactly
the budget's placeholders, and greedy decoding gives the same tokens.
"""

from __future__ import annotations

import types

import pytest
import torch

from vllm_models import Q_START, Q_VIDEO, close, engine, metadata, require_vllm, tiny_qwen25_checkpoint, video

require_vllm()

pytestmark = pytest.mark.slow

ARCH = "TangoQwen2_5_VLForConditionalGeneration"
RETENTION = 0.25
PREFIX, SUFFIX = [1, 3], [7, 4, 5]
NEW = 8
METHODS = ("topk", "tango")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_qwen25_checkpoint(tmp_path_factory.mktemp("vllm_qwen"))


@pytest.fixture(scope="module", params=METHODS)
def served(request, checkpoint):
    llm = engine(checkpoint, {"method": request.param, "retention": RETENTION}, ARCH)
    yield request.param, llm
    close(llm)


def _vllm_prompt(seed: int) -> dict:
    return {
        "prompt_token_ids": PREFIX + [Q_START, Q_VIDEO, Q_START + 1] + SUFFIX,
        "multi_modal_data": {"video": (video(seed), metadata())},
    }


def _generate(llm, prompts):
    from vllm import SamplingParams

    return llm.generate(prompts, SamplingParams(max_tokens=NEW, temperature=0), use_tqdm=False)


def _history(llm) -> list[dict]:
    return llm.apply_model(lambda m: list(m.tango_history))[0]


def _hf(checkpoint, method: str, seed: int):
    """Greedy tokens, kept result and full M-RoPE positions of the transformers path for one video."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
    from transformers.video_utils import VideoMetadata

    import tango_prune as tp
    from tango_prune.models import last_results

    proc = AutoProcessor.from_pretrained(checkpoint)
    meta = {k: v for k, v in metadata().items() if k != "do_sample_frames"}
    text = " ".join(f"t{i}" for i in PREFIX) + " <|vision_start|><|video_pad|><|vision_end|> "
    text += " ".join(f"t{i}" for i in SUFFIX)
    inputs = proc(
        text=[text],
        videos=[video(seed)],
        video_metadata=[VideoMetadata(**meta)],
        do_sample_frames=False,
        return_tensors="pt",
    )
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    ids = inputs["input_ids"]
    types = (ids == Q_VIDEO).int() * 2
    full_pos, _ = model.model.get_rope_index(
        ids, types, video_grid_thw=inputs["video_grid_thw"], second_per_grid_ts=inputs["second_per_grid_ts"]
    )
    tp.apply(model, method, retention=RETENTION)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=NEW, do_sample=False)
    return out[0, ids.shape[1] :].tolist(), last_results(model)[0], full_pos[:, 0], ids[0]


def test_same_kept_tokens_positions_count_and_greedy_tokens_as_transformers(served, checkpoint):
    method, llm = served
    out = _generate(llm, [_vllm_prompt(seed=1)])[0]
    rec = _history(llm)[-1]
    hf_tokens, hf_res, hf_pos, hf_ids = _hf(checkpoint, method, seed=1)
    t, h, w = rec["grid"]
    budget = t * max(1, -(-h * w * 1 // 4))  # ceil(h * w * 0.25)
    # the placeholder count is the budget, fixed before the encoder ran; the method kept exactly that here
    assert len(out.prompt_token_ids) == len(PREFIX) + 3 + len(SUFFIX) - 1 + budget
    assert hf_res.num_kept == budget == rec["result"].num_kept
    assert rec["result"].info["method"] == method
    assert torch.equal(hf_res.indices.cpu(), rec["result"].indices.cpu())
    # positions: HF's full-prompt M-RoPE positions of the kept placeholders, relative to the video's start
    cols = (hf_ids == Q_VIDEO).nonzero(as_tuple=True)[0][hf_res.indices]
    start = int(hf_pos[0, (hf_ids == Q_START).nonzero()[0, 0]]) + 1
    assert torch.equal((hf_pos[:, cols] - start).T, rec["positions"])
    # fps 4 -> 0.5 s per temporal step: every step has its own time position (EVS truncates 0.5 s to 0)
    assert sorted(set(rec["positions"][:, 0].tolist())) == [0, 1, 2, 3]
    assert list(out.outputs[0].token_ids) == hf_tokens


def test_batch_of_different_videos_equals_each_alone(served):
    _, llm = served
    seeds = (2, 3, 4)
    alone = [list(_generate(llm, [_vllm_prompt(s)])[0].outputs[0].token_ids) for s in seeds]
    batch = [list(o.outputs[0].token_ids) for o in _generate(llm, [_vllm_prompt(s) for s in seeds])]
    assert batch == alone
    assert len({tuple(a) for a in alone}) > 1  # the videos matter: the check is not vacuous


def test_chunked_prefill_gives_the_unchunked_output(checkpoint):
    # 8-token chunks split the prompt (and the video's placeholders) over several steps: the position
    # channels of a partly scheduled video are placed by the same recompute as a whole one
    seeds = (1, 2)
    expected = [_hf(checkpoint, "tango", seed=s)[0] for s in seeds]
    llm = engine(checkpoint, {"method": "tango", "retention": RETENTION}, ARCH, max_num_batched_tokens=8)
    try:
        assert llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens == 8
        chunked = [list(_generate(llm, [_vllm_prompt(s)])[0].outputs[0].token_ids) for s in seeds]
    finally:
        close(llm)
    assert chunked == expected


def test_every_registered_method_runs_in_the_engine_and_fills_the_budget(served):
    method, llm = served
    if method != "topk":
        pytest.skip("one engine is enough: the method is swapped on the live model")
    import tango_prune as tp
    from tango_prune.vllm.config import parse_config

    try:
        for i, name in enumerate(tp.methods()):
            cfg = parse_config(types.SimpleNamespace(tango_prune={"method": name, "retention": RETENTION}))
            llm.apply_model(lambda m, cfg=cfg: setattr(m, "tango", cfg))
            out = _generate(llm, [_vllm_prompt(seed=100 + i)])[0]  # a new video: no cached encoder output
            rec = _history(llm)[-1]
            assert rec["result"].info.get("method", name) == name
            assert rec["result"].num_kept == 16 and len(out.outputs[0].token_ids) == NEW
    finally:
        original = parse_config(types.SimpleNamespace(tango_prune={"method": method, "retention": RETENTION}))
        llm.apply_model(lambda m: setattr(m, "tango", original))
