"""benchmarks/gpu_profile.py: the --dry-run on CPU (report schema, one row per frames x method), the on-device
model builder, the sync counter and the user-mistake messages. The CUDA path itself needs a GPU."""

import importlib.util
import json
import os
import warnings

import pytest
import torch

import tango_prune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def gp():
    spec = importlib.util.spec_from_file_location("gpu_profile", os.path.join(ROOT, "benchmarks", "gpu_profile.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    from tango_prune.bench.presets import build

    model, _ = build("tiny-llava-ov")
    path = tmp_path_factory.mktemp("gpu_profile") / "tiny-llava-ov"
    model.save_pretrained(path)
    return str(path)


def test_dry_run_report_has_every_method_for_every_frame_count(gp, saved_tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert gp.main(["--dry-run", "--model", saved_tiny, "--out", str(out), "--count-syncs"]) == 0
    assert sorted(os.listdir(out)) == ["gpu_profile.json", "gpu_profile.md"]  # no temporary files left
    report = json.loads((out / "gpu_profile.json").read_text())
    assert report["schema"] == gp.SCHEMA and report["dry_run"] is True and report["complete"] is True
    assert report["attention"] == "sdpa" and report["timing"].startswith("time.perf_counter")
    methods = tango_prune.methods()
    assert report["settings"]["methods"] == methods and report["settings"]["frames"] == [2, 4]
    rows = report["rows"]
    assert [(r["frames"], r["method"]) for r in rows] == [(f, m) for f in (2, 4) for m in ["none"] + methods]
    for r in rows:
        assert set(r) == set(gp.ROW_KEYS)
        assert r["ttft_ms"] > 0 and r["vision_ms"] > 0 and r["prefill_ms"] > 0 and r["other_ms"] >= 0
        assert r["vision_ms"] + r["prune_ms"] + r["prefill_ms"] + r["other_ms"] == pytest.approx(r["ttft_ms"])
        assert r["peak_gib"] > 0 and r["syncs"] is None  # nothing to count off CUDA
        # ... but the calls that would synchronise on CUDA are counted on any device
        assert (r["sync_ops"] is None) == (r["method"] == "none") and (r["sync_ops"] or 0) >= 0
        assert r["ttft_repeats_ms"] == [r["ttft_ms"]] and (r["warmup"], r["repeats"]) == (0, 1)
        base = next(b for b in rows if b["frames"] == r["frames"] and b["method"] == "none")
        assert r["ttft_speedup"] == pytest.approx(base["ttft_ms"] / r["ttft_ms"])
        if r["method"] == "none":
            # tiny-llava-ov: 4 x 4 tokens per frame, plus one newline per video
            assert r["prune_ms"] == 0 and r["visual_tokens"] == 16 * r["frames"] + 1 and r["retention"] == 1.0
        else:
            assert r["prune_ms"] > 0 and r["retention"] == 0.1 and 0 < r["visual_tokens"] < base["visual_tokens"]

    md = (out / "gpu_profile.md").read_text()
    assert "**Dry run**" in md and "Incomplete" not in md
    table = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| frames")]
    assert len(table) == len(rows)
    for line, r in zip(table, rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 11 and cells[:3] == [str(r["frames"]), r["method"], str(r["visual_tokens"])]
        assert cells[-2] == ("-" if r["method"] == "none" else "n/a")
        assert cells[-1] == ("-" if r["method"] == "none" else str(r["sync_ops"]))
    assert "--count-syncs" in report["command"] and "wrote" in capsys.readouterr().out


def test_build_on_device_dtype_sdpa_and_seeded_weights(gp):
    a, desc = gp.build_on_device("tiny-llava-ov", torch.bfloat16, torch.device("cpu"), seed=3)
    b, _ = gp.build_on_device("tiny-llava-ov", torch.bfloat16, torch.device("cpu"), seed=3)
    c, _ = gp.build_on_device("tiny-llava-ov", torch.bfloat16, torch.device("cpu"), seed=4)
    assert "random weights" in desc and not a.training
    assert a.config._attn_implementation == "sdpa"
    assert a.config.text_config._attn_implementation == "sdpa" == a.config.vision_config._attn_implementation
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(p.dtype == torch.bfloat16 for p in pa.values())
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not all(torch.equal(pa[k], pc[k]) for k in pa)
    for name, p in pa.items():
        if p.dim() == 1:
            assert bool((p == (1 if name.endswith("weight") else 0)).all()), name
    big = max((p for p in pa.values() if p.dim() == 2), key=lambda p: p.numel())
    assert float(big.detach().float().std()) == pytest.approx(0.02, rel=0.1)


def test_count_prune_syncs_counts_only_sync_warnings_and_restores_the_mode(gp, monkeypatch):
    calls = []
    assert gp.count_prune_syncs(lambda: calls.append(1), torch.device("cpu")) is None
    assert calls == [1]  # the call itself still runs off CUDA
    modes = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def fake_prune():
        for _ in range(2):  # the same call site twice: both must be counted
            warnings.warn("called a synchronizing CUDA operation", UserWarning)
        warnings.warn("an unrelated warning", UserWarning)

    assert gp.count_prune_syncs(fake_prune, torch.device("cuda")) == 2
    assert modes == ["warn", "default"]

    def failing():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        gp.count_prune_syncs(failing, torch.device("cuda"))
    assert modes[-1] == "default"


def test_markdown_marks_reduced_rows_counted_syncs_and_incomplete_runs(gp):
    row = dict(
        frames=32,
        method="tango",
        retention=0.1,
        visual_tokens=641,
        vision_ms=100.0,
        prune_ms=5.0,
        prefill_ms=50.0,
        other_ms=1.0,
        ttft_ms=156.0,
        ttft_speedup=2.0,
        peak_gib=16.5,
        syncs=3,
        sync_ops=5,
        ttft_repeats_ms=[156.0],
        warmup=0,
        repeats=1,
        reduced=True,
    )
    report = dict(
        dry_run=False,
        complete=False,
        model="m",
        attention="sdpa",
        timing="CUDA events",
        peak_memory="p",
        elapsed_s=1.0,
        command="c",
        environment={"device": "cuda", "gpu": "G"},
        settings=dict(dtype="bfloat16", retention=0.1, warmup=1, repeats=3),
        rows=[row],
    )
    md = gp.markdown(report)
    assert "**Incomplete**" in md and "Dry run" not in md and "Device: G" in md
    assert "| 32 | tango (reduced) | 641 | 100.0 | 5.0 | 50.0 | 156.0 | 2.00x | 16.50 | 3 | 5 |" in md


def test_defaults_are_the_gpu_run(gp):
    args = gp.parse_args(["--out", "x"])
    assert (
        args.model,
        args.device,
        args.dtype,
        args.frames,
        args.warmup,
        args.repeats,
        args.methods,
        args.retention,
    ) == ("llava-ov-7b", "cuda", "bfloat16", [32, 64], 1, 3, None, 0.1)
    dry = gp.parse_args(["--out", "x", "--dry-run", "--frames", "3"])
    assert (dry.model, dry.device, dry.frames) == ("tiny-llava-ov", "cpu", [3])


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--methods", "nope"], "--methods"),
        (["--methods", " , "], "--methods"),
        (["--retention", "1.5"], "--retention"),
        (["--model", "no-such-preset"], "--model"),
        (["--device", "cuda:99"], "--device"),
    ],
)
def test_user_mistakes_are_one_line_naming_the_option(gp, tmp_path, capsys, argv, option):
    out = tmp_path / "out"
    assert gp.main(["--dry-run", "--out", str(out)] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"gpu_profile.py: error: {option}")
    assert not out.exists()  # refused before any work or output
