"""User mistakes on the command line: one line naming the argument, exit code 2, no traceback, no work done.

Also: ``bench`` writes its partial results atomically and resumes an interrupted run.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from tango_prune.cli import main
from test_cli_run import _save_tokenizer, _write_video
from tiny_models import tiny_llava

pytestmark = pytest.mark.filterwarnings("ignore:tango-prune. this LLaVA checkpoint has no SigLIP")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return _write_video(tmp_path_factory.mktemp("vid") / "clip.mp4")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tiny_llava(tmp_path_factory.mktemp("m")).name_or_path
    _save_tokenizer(d, {"<image>": 120, "<video>": 121})
    return d


def _one_line_error(capsys, *needles: str) -> str:
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert "Traceback" not in cap.err and len(err.splitlines()) == 1, cap.err
    for n in needles:
        assert n in err, err
    return err


def _run(model, video, *extra) -> int:
    return main(
        [
            "run",
            "--model",
            str(model),
            "--video",
            str(video),
            "--question",
            "w1",
            "--frames",
            "4",
            "--max-new-tokens",
            "2",
            *extra,
        ]
    )


def _broken_copy(model_dir, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(model_dir, dst)
    return dst


def test_run_invalid_config_json(model_dir, video, tmp_path, capsys):
    bad = _broken_copy(model_dir, tmp_path, "badcfg")
    (bad / "config.json").write_text("{not json")
    assert _run(bad, video) == 2
    _one_line_error(capsys, "--model", "invalid config.json")


def test_run_missing_weights(model_dir, video, tmp_path, capsys):
    bad = _broken_copy(model_dir, tmp_path, "noweights")
    for f in os.listdir(bad):
        if f.endswith(".safetensors"):
            os.remove(bad / f)
    assert _run(bad, video) == 2
    _one_line_error(capsys, "--model", "cannot load the weights")


def test_run_truncated_weights(model_dir, video, tmp_path, capsys):
    bad = _broken_copy(model_dir, tmp_path, "truncated")
    st = next(bad / f for f in os.listdir(bad) if f.endswith(".safetensors"))
    data = st.read_bytes()
    st.write_bytes(data[: len(data) // 2])
    assert _run(bad, video) == 2
    _one_line_error(capsys, "--model", "cannot load the weights")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_run_unavailable_device(model_dir, video, capsys):
    assert _run(model_dir, video, "--device", "cuda") == 2
    _one_line_error(capsys, "--device", "not available")
    assert _run(model_dir, video, "--device", "gpu7") == 2
    _one_line_error(capsys, "--device")


@pytest.mark.parametrize("frames", ["0", "-2", "x"])
def test_run_bad_frame_count(model_dir, video, capsys, frames):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--model", str(model_dir), "--video", str(video), "--question", "q", "--frames", frames])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err  # argparse: usage, then one error line
    assert "argument --frames: expected an integer >= 1" in err.strip().splitlines()[-1]


def test_run_unknown_variant(model_dir, video, capsys):
    assert _run(model_dir, video, "--variant", "llava-next") == 2
    err = _one_line_error(capsys, "--variant", "llava-onevision")
    assert "model must be" not in err


def test_run_unknown_method(model_dir, video, capsys):
    assert _run(model_dir, video, "--method", "tome") == 2
    _one_line_error(capsys, "--method")


def test_show_unwritable_out_is_refused_before_work(tmp_path, video, capsys):
    assert main(["show", "--video", str(video), "--question", "q", "--out", str(tmp_path / "no" / "x.png")]) == 2
    _one_line_error(capsys, "--out", "does not exist")
    assert main(["show", "--video", str(video), "--question", "q", "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "--out", "is a directory")


def test_show_invalid_model_dir(tmp_path, video, capsys):
    bad = tmp_path / "empty"
    bad.mkdir()
    assert (
        main(["show", "--video", str(video), "--question", "q", "--model", str(bad), "--out", str(tmp_path / "k.png")])
        == 2
    )
    _one_line_error(capsys, "--model", "config.json")


def test_truncated_weights_give_one_line_in_show_and_bench(model_dir, video, tmp_path, capsys):
    # the three places that load a user's checkpoint (run above, show, bench) share one error path
    bad = _broken_copy(model_dir, tmp_path, "truncated2")
    st = next(bad / f for f in os.listdir(bad) if f.endswith(".safetensors"))
    st.write_bytes(st.read_bytes()[:100])
    out = str(tmp_path / "k.png")
    assert main(["show", "--video", str(video), "--question", "q", "--model", str(bad), "--out", out]) == 2
    _one_line_error(capsys, "--model", "cannot load the testbed model")
    from tango_prune.bench.runner import load_model

    with pytest.raises(ValueError, match="model: cannot load the weights in"):
        load_model(str(bad), torch.float32, "cpu")


BENCH = [
    "bench",
    "--model",
    "tiny-llava-ov",
    "--methods",
    "random",
    "--retentions",
    "0.25,1.0",
    "--frames",
    "2",
    "--warmup",
    "0",
    "--repeats",
    "1",
    "--new-tokens",
    "1",
    "--no-progress",
]


def test_bench_out_checked_before_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(BENCH + ["--out", str(blocker)]) == 2
    _one_line_error(capsys, "--out", "not a directory")
    assert main(BENCH + ["--out", str(blocker / "sub")]) == 2
    _one_line_error(capsys, "--out")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_bench_unavailable_device(tmp_path, capsys):
    assert main(BENCH + ["--device", "cuda:3", "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "--device")


@pytest.mark.parametrize(
    "content,needle",
    [
        ("{bad json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"rows": []}', "not a report"),
        (
            '{"spec": {}, "model": "m", "video": {}, "environment": {}, "rows": [{"method": "x"}]}',
            "not a complete bench report",
        ),
    ],
)
def test_bench_render_malformed(tmp_path, capsys, content, needle):
    path = tmp_path / "bench.json"
    path.write_text(content)
    assert main(["bench", "--render", str(path), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "--render", needle)


def test_bench_render_missing_file(tmp_path, capsys):
    assert main(["bench", "--render", str(tmp_path / "nope.json"), "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "--render", "does not exist")


def test_bench_resumes_an_interrupted_run(tmp_path, capsys, monkeypatch):
    """Interrupt after the first pruned row; the rerun keeps the finished rows and measures only the rest."""
    from tango_prune.bench import runner

    out = tmp_path / "b"
    real = runner.timed_generate
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:  # unpruned, random@0.25 (an untimed first run + 1), then interrupt random@1.0
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(runner, "timed_generate", flaky)
    assert main(BENCH + ["--out", str(out)]) == 130
    partial = json.loads((out / "bench.partial.json").read_text())
    assert [(r["method"], r["retention"]) for r in partial["rows"]] == [("none", 1.0), ("random", 0.25)]
    assert not (out / "bench.json").exists()
    monkeypatch.setattr(runner, "timed_generate", real)
    counted = {"n": 0}

    def counting(*a, **k):
        counted["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(runner, "timed_generate", counting)
    assert main(BENCH + ["--out", str(out)]) == 0
    assert counted["n"] == 2  # only random@1.0 is measured again (its untimed first run + 1)
    rep = json.loads((out / "bench.json").read_text())
    assert [(r["method"], r["retention"]) for r in rep["rows"]] == [("none", 1.0), ("random", 0.25), ("random", 1.0)]
    assert rep["rows"][:2] == partial["rows"] and rep["resumed_rows"] == 2
    assert "Resumed run" in (out / "bench.md").read_text()
    assert not (out / "bench.partial.json").exists()
    capsys.readouterr()


def test_bench_refuses_a_partial_run_of_other_settings(tmp_path, capsys):
    out = tmp_path / "b"
    out.mkdir()
    (out / "bench.partial.json").write_text(json.dumps({"spec": {"model": "other"}, "rows": []}))
    assert main(BENCH + ["--out", str(out)]) == 2
    _one_line_error(capsys, "--out", "--restart")
