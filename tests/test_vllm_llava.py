"""LLaVA-OneVision through vLLM with the plugin equals ``tango_prune.apply`` on transformers (1-D positions:
the placeholder count and the embeddings are the whole story): same kept tokens, budget + newline
placeholders, same greedy tokens, and a batch of different videos gives each video's single output."""

from __future__ import annotations

import pytest
import torch

from vllm_models import Q_VIDEO, close, colored_video, engine, require_vllm, tiny_llava_ov_checkpoint, video

require_vllm()

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:tango-prune. this LLaVA checkpoint has no SigLIP")]

ARCH = "TangoLlavaOnevisionForConditionalGeneration"
RETENTION = 0.25
PREFIX, SUFFIX = [1, 3], [7, 4, 5]
NEW = 8
T = 4
METHODS = ("topk", "tango")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_llava_ov_checkpoint(tmp_path_factory.mktemp("vllm_llava"))


@pytest.fixture(scope="module", params=METHODS)
def served(request, checkpoint):
    llm = engine(checkpoint, {"method": request.param, "retention": RETENTION}, ARCH)
    yield request.param, llm
    close(llm)


def _frames(seed: int, colored: bool = False):
    """Uniform noise (Tango keeps exactly the budget: nothing is static) or coloured noise (distinct outputs)."""
    return (colored_video if colored else video)(seed, frames=T, size=28)


def _vllm_prompt(seed: int, colored: bool = False) -> dict:
    return {"prompt_token_ids": PREFIX + [Q_VIDEO] + SUFFIX, "multi_modal_data": {"video": _frames(seed, colored)}}


def _generate(llm, prompts):
    from vllm import SamplingParams

    return llm.generate(prompts, SamplingParams(max_tokens=NEW, temperature=0), use_tqdm=False)


def _hf(checkpoint, method: str, seed: int):
    """Greedy tokens and the kept result of the transformers path for one video."""
    from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

    import tango_prune as tp
    from tango_prune.models import last_results

    proc = AutoProcessor.from_pretrained(checkpoint)
    text = " ".join(f"t{i}" for i in PREFIX) + " <video> " + " ".join(f"t{i}" for i in SUFFIX)
    inputs = proc(text=[text], videos=[_frames(seed)], return_tensors="pt")
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    tp.apply(model, method, retention=RETENTION)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=NEW, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist(), last_results(model)[0]


def test_same_kept_tokens_count_and_greedy_tokens_as_transformers(served, checkpoint):
    method, llm = served
    out = _generate(llm, [_vllm_prompt(seed=1)])[0]
    rec = llm.apply_model(lambda m: list(m.tango_history))[0][-1]
    hf_tokens, hf_res = _hf(checkpoint, method, seed=1)
    budget = T * 4  # ceil(16 * 0.25) per frame
    assert rec["grid"] == (T, 4, 4)
    assert len(out.prompt_token_ids) == len(PREFIX) + len(SUFFIX) + budget + 1  # + the newline
    assert hf_res.num_kept == budget == rec["result"].num_kept
    assert torch.equal(hf_res.indices.cpu(), rec["result"].indices.cpu())
    assert list(out.outputs[0].token_ids) == hf_tokens


def test_batch_of_different_videos_equals_each_alone(served):
    method, llm = served
    seeds = (2, 4, 5)
    alone = [list(_generate(llm, [_vllm_prompt(s, colored=True)])[0].outputs[0].token_ids) for s in seeds]
    batch = [list(o.outputs[0].token_ids) for o in _generate(llm, [_vllm_prompt(s, colored=True) for s in seeds])]
    assert batch == alone
    assert len({tuple(a) for a in alone}) > 1
    if method == "tango":
        # coloured noise has static tokens: Tango keeps more than the budget and the plugin trims by saliency
        fits = [r["result"].info.get("budget_fit") for r in llm.apply_model(lambda m: list(m.tango_history))[0]]
        assert any(f and f["dropped"] > 0 for f in fits)
