"""Every method through ``tango_prune.apply`` on a tiny upstream LLaVA-OneVision (saved and reloaded)."""

from __future__ import annotations

import math

import pytest
import torch

import tango_prune as tp
from tango_prune.models import stats
from tiny_models import llava_video_ids, tiny_llava

pytestmark = pytest.mark.filterwarnings("ignore:tango-prune. this LLaVA checkpoint has no SigLIP")

T = 4
METHODS = ["tango", "topk", "random", "uniform", "visionzip", "divprune", "dycoke", "fastvid", "holitom"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_llava(tmp_path_factory.mktemp("llava_methods"))


def _video(seed=0):
    return torch.randn(1, T, 3, 28, 28, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", METHODS)
def test_method_through_apply(model, name):
    ids = torch.tensor([llava_video_ids(T)])
    px = _video()
    with torch.no_grad():
        ref = model(input_ids=ids, pixel_values_videos=px).logits
    tp.apply(model, name=name, retention=0.25)
    try:
        with torch.no_grad():
            out = model(input_ids=ids, pixel_values_videos=px).logits
            gen = model.generate(
                input_ids=ids, pixel_values_videos=px, max_new_tokens=2, min_new_tokens=2, do_sample=False
            )
        st = stats(model)
    finally:
        tp.remove(model)
    budget = T * math.ceil(16 * 0.25)  # 4x4 tokens per frame on the tiny model
    assert abs(st["kept_per_video"][0] - budget) <= T
    if name not in ("tango", "holitom"):  # static merging changes the count slightly
        assert st["kept_per_video"][0] == budget
    assert st["visual_tokens_after"] == st["kept_per_video"][0] + 1  # OV: one newline per video
    assert st["visual_tokens_before"] == T * 16 + 1
    assert out.shape[1] == ids.shape[1] - (T * 16 - st["kept_per_video"][0])
    assert bool(torch.isfinite(out).all())
    assert gen.shape == (1, ids.shape[1] + 2)
    with torch.no_grad():  # removed: back to the upstream behaviour
        assert torch.equal(model(input_ids=ids, pixel_values_videos=px).logits, ref)


@pytest.mark.parametrize("name", ["topk", "random"])
def test_apply_method_config_object(model, name):
    cfg = tp.make_config(name, retention=0.5)
    ids = torch.tensor([llava_video_ids(T)])
    tp.apply(model, cfg)
    try:
        with torch.no_grad():
            model(input_ids=ids, pixel_values_videos=_video(1))
        assert stats(model)["kept_per_video"] == [T * 8]
    finally:
        tp.remove(model)
