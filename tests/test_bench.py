"""Smoke tests of the efficiency benchmark on the tiny preset, the CLI, inputs and presets."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from tango_prune.bench import BenchSpec, markdown_table, run_bench
from tango_prune.bench.presets import PRESETS, build
from tango_prune.bench.runner import Progress, _check_supported, load_model
from tango_prune.bench.video import load_video, synthetic_video, to_pixels
from tango_prune.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:tango-prune. this LLaVA checkpoint has no SigLIP")


@pytest.fixture(scope="module")
def tiny():
    return build("tiny-llava-ov")[0]


def test_run_bench_rows_and_accounting(tiny):
    spec = BenchSpec(
        model="tiny-llava-ov",
        methods=("tango", "topk"),
        retentions=(0.5,),
        frames=2,
        warmup=0,
        repeats=1,
        new_tokens=2,
        prompt_tokens=4,
    )
    rep = run_bench(spec, progress=False, model=tiny)
    rows = rep["rows"]
    assert [r["method"] for r in rows] == ["none", "tango", "topk"]
    assert rows[0]["visual_tokens"] == 2 * 16 + 1 and rows[0]["ttft_speedup"] == 1.0
    for r in rows[1:]:
        assert r["visual_tokens"] == r["kept"] + 1 and r["kept"] <= 2 * 8 + 2
        assert r["prune_s"] > 0 and r["prefill_s"] > 0 and r["vision_s"] > 0
        assert r["ttft_s"] == pytest.approx(r["vision_s"] + r["prune_s"] + r["prefill_s"])
        assert r["ttft_speedup"] == pytest.approx(rows[0]["ttft_s"] / r["ttft_s"])
    assert rows[2]["kept"] == 16
    assert set(rows[1]["prune_info"]) == {"segments", "static_positions", "by_kind"}
    assert sum(rows[1]["prune_info"]["segments"]) == 2 and rows[2]["prune_info"] == {}
    fs = rep["feature_similarity"]
    assert -1.0 <= fs["p10"] <= fs["p50"] <= fs["p90"] <= 1.0 + 1e-6
    json.dumps(rep)  # the report is plain JSON
    md = markdown_table(rep)
    assert md.startswith("| method |") and md.count("\n| ") >= 3 and "measured once per video" in md
    assert not hasattr(tiny, "_tango_prune_state")  # every apply was removed


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    rc = main(
        [
            "bench",
            "--model",
            "tiny-llava-ov",
            "--methods",
            "random",
            "--retentions",
            "0.25,1.0",
            "--set",
            "random.seed=3",
            "--frames",
            "2",
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
    assert [(r["method"], r["retention"]) for r in rep["rows"]] == [("none", 1.0), ("random", 0.25), ("random", 1.0)]
    assert rep["rows"][2]["visual_tokens"] == rep["rows"][0]["visual_tokens"]
    assert rep["spec"]["overrides"] == {"random": {"seed": 3}} and rep["rows"][1]["overrides"] == {"seed": 3}
    assert (tmp_path / "bench.md").read_text().startswith("| method |")
    assert not (tmp_path / "bench.partial.json").exists()
    assert "| random | " in (tmp_path / "bench.md").read_text()  # the method x retention summary
    again = tmp_path / "again"
    assert main(["bench", "--render", str(tmp_path / "bench.json"), "--out", str(again)]) == 0
    assert (again / "bench.md").read_text() == (tmp_path / "bench.md").read_text()


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"methods": ("nope",)}, "method"),
        ({"retentions": (0.0,)}, "retention"),
        ({"frames": 0}, "frames"),
        ({"repeats": 0}, "repeats"),
        ({"dtype": "int8"}, "dtype"),
    ],
)
def test_spec_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        BenchSpec(model="tiny-llava-ov", **kwargs)


def test_overrides_are_validated_and_applied(tiny):
    with pytest.raises(ValueError, match="nope"):
        BenchSpec(model="tiny-llava-ov", methods=("tango",), overrides={"tango": {"nope": 1}})
    with pytest.raises(ValueError, match="overrides"):
        BenchSpec(model="tiny-llava-ov", methods=("tango",), overrides={"topk": {}})
    spec = BenchSpec(
        model="tiny-llava-ov",
        methods=("tango",),
        retentions=(0.5,),
        frames=2,
        warmup=0,
        repeats=1,
        new_tokens=1,
        overrides={"tango": {"tau_static": 1.0}},
    )
    row = run_bench(spec, progress=False, model=tiny)["rows"][1]
    assert row["overrides"] == {"tango": {"tau_static": 1.0}}["tango"]
    assert row["kept"] == 2 * 8  # no static merging: the exact budget


def test_cli_bad_input_is_one_line_error(capsys):
    assert main(["bench", "--model", "no-such-model", "--no-progress"]) == 2
    assert "model must be a preset" in capsys.readouterr().err


def test_load_model_from_directory(tmp_path, tiny):
    tiny.save_pretrained(tmp_path)
    m, desc = load_model(str(tmp_path), torch.float32, "cpu")
    assert type(m).__name__ == "LlavaOnevisionForConditionalGeneration" and str(tmp_path) in desc
    for (n, a), (_, b) in zip(tiny.state_dict().items(), m.state_dict().items()):
        assert torch.equal(a, b), n


def test_unsupported_model_is_a_clear_error():
    with pytest.raises(ValueError, match="model"):
        _check_supported(torch.nn.Linear(2, 2))


def test_presets_build_real_configs():
    cfg = PRESETS["llava-ov-0.5b"].make_config()
    assert (cfg.text_config.hidden_size, cfg.text_config.num_hidden_layers) == (896, 24)
    assert (cfg.vision_config.hidden_size, cfg.vision_config.image_size, cfg.vision_config.patch_size) == (
        1152,
        384,
        14,
    )
    assert PRESETS["llava-ov-7b"].make_config().text_config.hidden_size == 3584
    q = PRESETS["qwen2.5-vl-7b"].make_config()
    assert q.text_config.hidden_size == 3584 and q.vision_config.out_hidden_size == 3584
    assert PRESETS["qwen2.5-vl-3b"].make_config().text_config.num_hidden_layers == 36
    with pytest.raises(ValueError, match="preset"):
        build("gpt-5")


def test_build_is_seeded_and_finite():
    a, _ = build("tiny-llava-ov", seed=1)
    b, _ = build("tiny-llava-ov", seed=1)
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), n
        assert bool(torch.isfinite(x).all()), n


def test_synthetic_video_and_pixels():
    f, ts = synthetic_video(5, 32, seed=0)
    g, _ = synthetic_video(5, 32, seed=0)
    assert f.shape == (5, 32, 32, 3) and f.dtype == np.uint8 and np.array_equal(f, g)
    assert ts.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    px = to_pixels(f, 24)
    assert px.shape == (1, 5, 3, 24, 24) and -1.0 <= float(px.min()) and float(px.max()) <= 1.0


def test_load_video_file(tmp_path):
    import av

    path = str(tmp_path / "clip.mp4")
    frames, _ = synthetic_video(12, 32)
    with av.open(path, "w") as out:
        stream = out.add_stream("mpeg4", rate=4)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for fr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(fr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    got, ts = load_video(path, 4)
    assert got.shape == (4, 32, 32, 3)
    assert np.all(np.diff(ts) > 0) and ts[0] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="video"):
        load_video(str(tmp_path / "missing.mp4"), 4)


def test_progress_bar():
    s = io.StringIO()
    p = Progress(2, stream=s)
    p.step("a")
    p.step("b")
    assert "2/2" in s.getvalue() and s.getvalue().endswith("\n")
