"""The efficiency benchmark on Qwen2.5-VL: the tiny preset end to end, the input layout, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import tango_prune as tp
from tango_prune.bench import BenchSpec, markdown_table, run_bench
from tango_prune.bench.families import pruned_kwargs, unpruned_kwargs
from tango_prune.bench.presets import PRESETS, build
from tango_prune.bench.runner import _check_supported, _encode_once, _inputs
from tango_prune.bench.video import qwen_patches, synthetic_video, to_pixels
from tango_prune.cli import main

TINY = "tiny-qwen2.5-vl"


@pytest.fixture(scope="module")
def tiny():
    return build(TINY)[0]


def _spec(**kw):
    base = dict(model=TINY, frames=4, warmup=0, repeats=1, new_tokens=2, prompt_tokens=4)
    return BenchSpec(**{**base, **kw})


def test_run_bench_rows_and_accounting(tiny):
    rep = run_bench(_spec(methods=("tango", "topk", "holitom"), retentions=(0.5,)), progress=False, model=tiny)
    rows = rep["rows"]
    assert [r["method"] for r in rows] == ["none", "tango", "topk", "holitom"]
    v = rep["video"]
    assert (v["frame_size"], v["temporal_steps"], v["tokens_per_step"], v["video_tokens"]) == (32, 2, 16, 32)
    assert rows[0]["visual_tokens"] == 32 and rows[0]["ttft_speedup"] == 1.0
    for r in rows[1:]:
        assert r["visual_tokens"] == r["kept"] <= 16 + 2  # no newline tokens; within one token per step
        assert r["prune_s"] > 0 and r["prefill_s"] > 0 and r["vision_s"] > 0
        assert r["ttft_s"] == pytest.approx(r["vision_s"] + r["prune_s"] + r["prefill_s"])
        assert r["ttft_speedup"] == pytest.approx(rows[0]["ttft_s"] / r["ttft_s"])
    assert rows[2]["kept"] == 16
    assert sum(rows[1]["prune_info"]["segments"]) == 2
    fs = rep["feature_similarity"]
    assert -1.0 <= fs["p10"] <= fs["p50"] <= fs["p90"] <= 1.0 + 1e-6
    json.dumps(rep)
    md = markdown_table(rep)
    assert "2 temporal steps of 16 tokens" in md and md.count("\n| ") >= 4
    assert not hasattr(tiny, "_tango_prune_state")


def test_inputs_follow_the_processor_layout(tiny):
    cfg = tiny.config
    inp = _inputs(tiny, _spec(frames=5, prompt_tokens=3), torch.device("cpu"))
    ids = inp.input_ids[0]
    n = 3 * 16  # 5 frames -> 3 steps (last frame repeated)
    assert inp.pixels.shape == (3 * 8 * 8, 3 * 2 * 4 * 4)
    assert inp.common["video_grid_thw"].tolist() == [[3, 8, 8]]
    start = int((ids == cfg.vision_start_token_id).nonzero())
    assert ids[start + 1 : start + 1 + n].eq(cfg.video_token_id).all() and ids[start + 1 + n] == cfg.vision_end_token_id
    assert int((ids == cfg.video_token_id).sum()) == n == inp.info["video_tokens"]
    assert torch.equal(inp.common["mm_token_type_ids"][0], 2 * (ids == cfg.video_token_id).int())
    assert inp.common["second_per_grid_ts"].tolist() == [2.0]  # synthetic clip at 1 fps, 2 frames per step
    assert inp.timestamps == [[0.0, 2.0, 4.0]]


def test_qwen_patches_layout_and_errors():
    frames, _ = synthetic_video(3, 16, seed=1)
    px = to_pixels(frames, 16)
    rows, grid = qwen_patches(px, patch=4, merge=2, temporal=2)
    assert grid == [2, 4, 4] and rows.shape == (2 * 16, 3 * 2 * 4 * 4)
    # Row 6 = step 0, merge unit 1 (units in raster order: rows 0-1 x cols 2-3), patch 2 of the unit (y 1, x 0):
    # patch row 1, patch col 2 -> pixels y 4:8, x 8:12 of frames 0 and 1.
    want = px[0, 0:2, :, 4:8, 8:12].permute(1, 0, 2, 3).reshape(-1)
    assert torch.equal(rows[6], want)
    # The odd last frame is repeated to fill the last step.
    last = rows[16:].reshape(16, 3, 2, 4, 4)
    assert torch.equal(last[:, :, 0], last[:, :, 1])
    with pytest.raises(ValueError, match="multiples of patch"):
        qwen_patches(to_pixels(frames, 12), patch=4, merge=2, temporal=2)
    with pytest.raises(ValueError, match="pixels"):
        qwen_patches(px[0], patch=4, merge=2, temporal=2)


def test_unpruned_and_full_retention_runs_generate_the_same_tokens(tiny):
    # The baseline (encoder output passed in) and the pruned path (keeping everything) see the same sequence.
    spec = _spec(methods=("random",), retentions=(1.0,))
    dev = torch.device("cpu")
    inp = _inputs(tiny, spec, dev)
    enc = _encode_once(tiny, spec, inp, dev)
    mask = torch.ones_like(inp.input_ids)
    with torch.no_grad():
        ref = tiny.generate(**unpruned_kwargs(inp, mask, enc["video"]), max_new_tokens=4, do_sample=False)
        tp.apply(tiny, name="random", retention=1.0)
        try:
            out = tiny.generate(**pruned_kwargs(inp, mask), max_new_tokens=4, do_sample=False)
        finally:
            tp.remove(tiny)
    assert torch.equal(ref, out)


def test_frame_size_option(tiny):
    rep = run_bench(_spec(methods=("topk",), retentions=(0.25,), frames=2, frame_size=64), progress=False, model=tiny)
    assert rep["video"]["tokens_per_step"] == 64 and rep["rows"][1]["kept"] == 16
    with pytest.raises(ValueError, match="frame_size"):
        run_bench(_spec(frame_size=30), progress=False, model=tiny)
    with pytest.raises(ValueError, match="frame_size"):
        _spec(frame_size=0)
    llava = build("tiny-llava-ov")[0]
    with pytest.raises(ValueError, match="frame_size must be 56"):
        run_bench(BenchSpec(model="tiny-llava-ov", frames=1, frame_size=64), progress=False, model=llava)


def test_cli_on_the_tiny_qwen_preset(tmp_path):
    rc = main(
        [
            "bench",
            "--model",
            TINY,
            "--methods",
            "visionzip,fastvid",
            "--retentions",
            "0.5",
            "--frames",
            "3",
            "--frame-size",
            "32",
            "--warmup",
            "0",
            "--repeats",
            "1",
            "--new-tokens",
            "2",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    rep = json.loads((tmp_path / "bench.json").read_text())
    assert [r["method"] for r in rep["rows"]] == ["none", "visionzip", "fastvid"]
    assert all(r["visual_tokens"] <= 16 + 2 for r in rep["rows"][1:])
    assert "Qwen2.5-VL" in rep["model"]


def test_presets_and_supported_classes():
    q = PRESETS["qwen2.5-vl-3b"].make_config()
    assert q.vision_config.tokens_per_second == 2 and q.text_config.rope_parameters["mrope_section"] == [16, 24, 24]
    t = PRESETS[TINY].make_config()
    assert t.vision_config.patch_size * t.vision_config.spatial_merge_size * 4 == PRESETS[TINY].image_size
    with pytest.raises(ValueError, match="Qwen2_5_VLForConditionalGeneration"):
        _check_supported(torch.nn.Linear(2, 2))
    assert np.isfinite(q.text_config.rope_parameters["rope_theta"])
