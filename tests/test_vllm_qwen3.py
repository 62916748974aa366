"""Qwen3-VL through vLLM with the plugin equals ``tango_prune.apply`` on transformers.

One engine per method (module-scoped, one at a time) serves the tiny fp32 checkpoint of
:func:`vllm_models.tiny_qwen3_checkpoint`; transformers loads the same checkpoint with the method applied. For
the same video and prompt both keep the same tokens, every token (timestamp text, vision start/end, kept
placeholders, text after the video) sits at the same M-RoPE position, the prompt holds exactly the budget's
placeholders, and greedy decoding gives the same tokens. The Tango video has two static scenes, so Tango keeps
a different number of tokens in each step (none in some): the layout the language model sees is the
transformers adapter's, not a fixed count per step. Every other registered method is swapped onto the live
topk engine and shown equal too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vllm_models import (
    Q_END,
    Q_IMAGE,
    Q_START,
    Q_VIDEO,
    close,
    engine,
    metadata,
    require_vllm,
    tiny_qwen3_checkpoint,
    video,
)

require_vllm()

pytestmark = pytest.mark.slow

ARCH = "TangoQwen3VLForConditionalGeneration"
RETENTION = 0.25
PREFIX, SUFFIX = [1, 3], [7, 4, 5]
NEW = 8
METHODS = ("topk", "tango")
PER_STEP = 16  # 32 x 32 px frames, patch 4, merge 2: 4 x 4 tokens per temporal step


def two_scenes(seed: int) -> np.ndarray:
    """8 frames: one still scene for 4 frames, another for the next 4 (slight noise on both)."""
    rng = np.random.default_rng(seed)
    scenes = np.repeat(rng.integers(0, 256, (2, 1, 32, 32, 3)), 4, axis=1).reshape(8, 32, 32, 3)
    return np.clip(scenes + rng.normal(0, 3, scenes.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_qwen3_checkpoint(tmp_path_factory.mktemp("vllm_qwen3"))


@pytest.fixture(scope="module", params=METHODS)
def served(request, checkpoint):
    llm = engine(checkpoint, {"method": request.param, "retention": RETENTION}, ARCH)
    yield request.param, llm
    close(llm)


def _prompt(frames: np.ndarray) -> dict:
    return {
        "prompt_token_ids": PREFIX + [Q_START, Q_VIDEO, Q_END] + SUFFIX,
        "multi_modal_data": {"video": (frames, metadata())},
    }


def _generate(llm, prompts):
    from vllm import SamplingParams

    return llm.generate(prompts, SamplingParams(max_tokens=NEW, temperature=0), use_tqdm=False)


def _tokens(llm, frames_list) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in _generate(llm, [_prompt(f) for f in frames_list])]


def _history(llm) -> list[dict]:
    return llm.apply_model(lambda m: list(m.tango_history))[0]


def _record_positions(llm) -> None:
    """Make the live model keep the request positions vLLM's runner gets back from every recompute."""

    def patch(m):
        original = type(m).recompute_mrope_positions

        def recompute(*args, **kwargs):
            out = original(m, *args, **kwargs)
            m.recorded_positions = out[1].clone()
            return out

        m.recompute_mrope_positions = recompute

    llm.apply_model(patch)


def _hf(checkpoint, method: str, frames: np.ndarray, timestamps: list[float], image: np.ndarray | None = None):
    """Greedy tokens, kept result, full-prompt M-RoPE positions (3, N) and prompt ids (N,) of the transformers
    path for one video (after one image, if given), with the step times vLLM wrote into its prompt as ST-RoPE
    timestamps."""
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration
    from transformers.video_utils import VideoMetadata

    import tango_prune as tp
    from tango_prune.models import last_results

    proc = AutoProcessor.from_pretrained(checkpoint)
    meta = {k: v for k, v in metadata().items() if k != "do_sample_frames"}
    text = " ".join(f"t{i}" for i in PREFIX)
    text += "" if image is None else " <|vision_start|><|image_pad|><|vision_end|>"
    text += " <|vision_start|><|video_pad|><|vision_end|> " + " ".join(f"t{i}" for i in SUFFIX)
    inputs = proc(
        text=[text],
        images=None if image is None else [image],
        videos=[frames],
        video_metadata=[VideoMetadata(**meta)],
        do_sample_frames=False,
        return_tensors="pt",
    )
    inputs.pop("mm_token_type_ids", None)
    model = Qwen3VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    ids = inputs["input_ids"]
    types = (ids == Q_VIDEO).int() * 2 + (ids == Q_IMAGE).int()
    full_pos, _ = model.model.get_rope_index(
        ids, types, image_grid_thw=inputs.get("image_grid_thw"), video_grid_thw=inputs["video_grid_thw"]
    )
    tp.apply(model, method, retention=RETENTION)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            video_timestamps=torch.tensor([timestamps], dtype=torch.float64),
            max_new_tokens=NEW,
            do_sample=False,
        )
    return out[0, ids.shape[1] :].tolist(), last_results(model)[0], full_pos[:, 0], ids[0]


def test_same_kept_tokens_positions_count_and_greedy_tokens_as_transformers(served, checkpoint):
    from tango_prune.vllm.qwen3_vl import unpruned_layout

    method, llm = served
    _record_positions(llm)
    frames = two_scenes(seed=0)
    out = _generate(llm, [_prompt(frames)])[0]
    rec = _history(llm)[-1]
    positions = llm.apply_model(lambda m: m.recorded_positions)[0]
    hf_tokens, hf_res, hf_pos, hf_ids = _hf(checkpoint, method, frames, rec["timestamps"])
    t, h, w = rec["grid"]
    budget = t * max(1, -(-h * w * 1 // 4))  # ceil(h * w * 0.25) per step
    prompt = list(out.prompt_token_ids)
    cfg = llm.llm_engine.model_config.hf_config
    # the prompt: the budget's placeholders (fixed before the encoder ran), otherwise the processor's layout
    assert prompt.count(Q_VIDEO) == budget == 16
    video_range = slice(len(PREFIX) + 1, -len(SUFFIX) - 1)  # inside the prompt's own vision start / end
    assert prompt[video_range][: prompt[video_range].index(Q_VIDEO)].count(Q_START) == 1  # budget in step 0
    unpruned = (
        prompt[: video_range.start] + unpruned_layout(prompt[video_range], cfg, h * w) + prompt[video_range.stop :]
    )
    assert unpruned == hf_ids.tolist()
    assert hf_res.num_kept == budget == rec["result"].num_kept
    assert rec["result"].info["method"] == method
    assert torch.equal(hf_res.indices.cpu(), rec["result"].indices.cpu())
    per_step = torch.bincount(rec["result"].indices.cpu() // (h * w), minlength=t).tolist()
    if method == "tango":
        assert per_step == [8, 0, 8, 0]  # one step per static scene keeps its tokens: not a fixed count per step
    # every token the LLM sees, at HF's position for it in the unpruned prompt
    keep = hf_ids != Q_VIDEO
    keep[(hf_ids == Q_VIDEO).nonzero()[:, 0][hf_res.indices]] = True
    assert torch.equal(positions.cpu(), hf_pos[:, keep])
    assert list(out.outputs[0].token_ids) == hf_tokens


def test_batch_of_different_videos_equals_each_alone(served):
    _, llm = served
    videos = [video(2), two_scenes(3), video(4)]
    alone = [_tokens(llm, [v])[0] for v in videos]
    assert _tokens(llm, videos) == alone
    assert len({tuple(a) for a in alone}) > 1  # the videos matter: the check is not vacuous


def test_an_image_before_the_video_stays_whole_and_equals_transformers(served, checkpoint):
    # images are not pruned: their rows (DeepStack levels included) carry their own positions next to the
    # video's, and the text after both keeps its place
    from PIL import Image

    method, llm = served
    if method != "tango":
        pytest.skip("one engine is enough")
    _record_positions(llm)
    image, frames = video(7)[0], two_scenes(8)
    prompt = {
        "prompt_token_ids": PREFIX + [Q_START, Q_IMAGE, Q_END, Q_START, Q_VIDEO, Q_END] + SUFFIX,
        "multi_modal_data": {"image": Image.fromarray(image), "video": (frames, metadata())},
    }
    out = _generate(llm, [prompt])[0]
    rec = _history(llm)[-1]
    positions = llm.apply_model(lambda m: m.recorded_positions)[0]
    hf_tokens, hf_res, hf_pos, hf_ids = _hf(checkpoint, method, frames, rec["timestamps"], image=image)
    assert list(out.prompt_token_ids).count(Q_IMAGE) == (hf_ids == Q_IMAGE).sum() == PER_STEP
    assert torch.equal(hf_res.indices.cpu(), rec["result"].indices.cpu())
    keep = hf_ids != Q_VIDEO
    keep[(hf_ids == Q_VIDEO).nonzero()[:, 0][hf_res.indices]] = True
    assert torch.equal(positions.cpu(), hf_pos[:, keep])
    assert list(out.outputs[0].token_ids) == hf_tokens


def test_deepstack_levels_follow_the_kept_tokens(served, checkpoint):
    # the levels of the first K tokens instead of the kept ones (levels left unpruned) change the output
    method, llm = served
    if method != "tango":
        pytest.skip("one engine is enough")
    frames = [two_scenes(5), two_scenes(6)]
    right = _tokens(llm, frames[:1])
    stamps = _history(llm)[-1]["timestamps"]
    llm.apply_model(lambda m: setattr(m, "_deepstack_rows", lambda levels, idx: levels[: len(idx)]))
    try:
        wrong = _tokens(llm, frames[1:])
    finally:
        llm.apply_model(lambda m: m.__dict__.pop("_deepstack_rows", None))
    assert right == [_hf(checkpoint, method, frames[0], stamps)[0]]
    assert wrong != [_hf(checkpoint, method, frames[1], _history(llm)[-1]["timestamps"])[0]]


def test_chunked_prefill_gives_the_unchunked_output(checkpoint):
    # 8-token chunks split the video's range (timestamps, vision start/end, kept tokens) over several steps:
    # the rows of a partly scheduled range are placed from their index in the range
    frames = [two_scenes(0), video(1)]
    expected = [_hf(checkpoint, "tango", f, [0.125, 0.625, 1.125, 1.625])[0] for f in frames]
    llm = engine(checkpoint, {"method": "tango", "retention": RETENTION}, ARCH, max_num_batched_tokens=8)
    try:
        assert llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens == 8
        chunked = [_tokens(llm, [f])[0] for f in frames]
        assert _history(llm)[-1]["timestamps"] == [0.125, 0.625, 1.125, 1.625]
    finally:
        close(llm)
    assert chunked == expected


def test_every_registered_method_runs_in_the_engine_and_equals_transformers(served, checkpoint):
    # the same kept tokens and greedy tokens as transformers for every method, whatever its spread over steps
    method, llm = served
    if method != "topk":
        pytest.skip("one engine is enough: the method is swapped on the live model")
    import types

    import tango_prune as tp
    from tango_prune.vllm.config import parse_config

    def use(name):
        cfg = parse_config(types.SimpleNamespace(tango_prune={"method": name, "retention": RETENTION}))
        llm.apply_model(lambda m: setattr(m, "tango", cfg))

    spread = set()
    try:
        for i, name in enumerate(tp.methods()):
            use(name)
            frames = two_scenes(100 + i)  # a new video: no cached encoder output
            tokens = _tokens(llm, [frames])[0]
            rec = _history(llm)[-1]
            hf_tokens, hf_res, _, _ = _hf(checkpoint, name, frames, rec["timestamps"])
            assert rec["result"].info.get("method", name) == name
            assert hf_res.num_kept == rec["result"].num_kept == 16
            assert torch.equal(hf_res.indices.cpu(), rec["result"].indices.cpu()) and tokens == hf_tokens
            spread.add(tuple(torch.bincount(hf_res.indices.cpu() // PER_STEP, minlength=4).tolist()))
        assert len(spread) > 2  # several methods spread their tokens unevenly over the steps
    finally:
        use(method)


def test_bad_config_fails_at_engine_start(checkpoint, monkeypatch):
    # the multiprocess engine (vLLM's default): the frontend's processor parses the entry before any worker
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    with pytest.raises(ValueError, match="retention") as e:
        engine(checkpoint, {"method": "tango", "retention": 1.5}, ARCH)
    assert "tango_prune" in str(e.value)


def test_multiprocess_engine_equals_transformers(checkpoint, monkeypatch):
    # vLLM's default (and `vllm serve`'s): the frontend's config never sees the worker's pruning switch
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    frames = two_scenes(0)
    llm = engine(checkpoint, {"method": "tango", "retention": RETENTION}, ARCH)
    try:
        out = _generate(llm, [_prompt(frames)])[0]
    finally:
        close(llm)
    assert list(out.prompt_token_ids).count(Q_VIDEO) == 16
    assert list(out.outputs[0].token_ids) == _hf(checkpoint, "tango", frames, [0.125, 0.625, 1.125, 1.625])[0]
