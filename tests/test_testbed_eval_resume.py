"""Resumable, atomically written eval reports and the CLI's one-line errors (issue 9), on a tiny random model."""

import json

import pytest
import torch

import tango_prune as tp
from tango_prune.cli import main
from tango_prune.testbed import evaluate as E


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from transformers import LlavaOnevisionForConditionalGeneration

    from tango_prune.testbed.model import TestbedProcessor, build_config, build_tokenizer

    tok = build_tokenizer()
    cfg = build_config(tok, vision_hidden=32, vision_layers=1, text_hidden=32, text_layers=1, heads=2, text_heads=2)
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(cfg).eval()
    out = tmp_path_factory.mktemp("tiny_testbed")
    model.save_pretrained(out)
    TestbedProcessor(tok).save_pretrained(out)
    return out


def _args(tiny_dir, js, md, *extra):
    return [
        "eval",
        "--model",
        str(tiny_dir),
        "--limit",
        "3",
        "--methods",
        "random,uniform",
        "--retentions",
        "1,0.1",
        "--oracle",
        "--batch-size",
        "2",
        "--threads",
        "1",
        "--no-progress",
        "--json",
        str(js),
        "--markdown",
        str(md),
        *extra,
    ]


def _strip(report):
    return {k: v for k, v in report.items() if k not in ("seconds",)}


def test_interrupted_then_resumed_run_equals_a_straight_run(tiny_dir, tmp_path, monkeypatch):
    straight = tmp_path / "straight.json"
    assert main(_args(tiny_dir, straight, tmp_path / "s.md")) == 0
    ref = json.loads(straight.read_text())
    assert ref["complete"] and set(ref["results"]) == {"random", "uniform", E.oracle_row().name}

    js, md = tmp_path / "run.json", tmp_path / "run.md"
    real, calls = E._score_row, []

    def interrupted(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if Ctrl-C arrived while scoring the third cell
        calls.append(a[2].name)
        return real(*a, **k)

    monkeypatch.setattr(E, "_score_row", interrupted)
    assert main(_args(tiny_dir, js, md)) == 130  # the CLI reports the interrupt and exits 130
    partial = json.loads(js.read_text())  # the last atomic write, a complete JSON document
    assert not partial["complete"] and sum(len(c) for c in partial["results"].values()) == 2
    assert "Partial report" in md.read_text()
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind

    rescored = []

    def counting(*a, **k):
        rescored.append((a[2].name, a[3]))
        return real(*a, **k)

    monkeypatch.setattr(E, "_score_row", counting)
    assert main(_args(tiny_dir, js, md, "--resume")) == 0
    resumed = json.loads(js.read_text())
    assert len(rescored) == 6 - 2  # finished cells are not scored again
    assert _strip(resumed) == _strip(ref)
    assert md.read_text() == (tmp_path / "s.md").read_text()


def test_resume_refuses_a_report_of_other_settings(tiny_dir, tmp_path):
    js = tmp_path / "r.json"
    assert (
        main(_args(tiny_dir, js, tmp_path / "r.md")[:-4] + ["--json", str(js), "--markdown", str(tmp_path / "r.md")])
        == 0
    )
    args = _args(tiny_dir, js, tmp_path / "r.md", "--resume")
    args[args.index("--limit") + 1] = "2"
    assert main(args) == 2


def _one_error_line(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    for w in words:
        assert w in err[0], err
    return err[0]


def test_cli_rejects_bad_merge_inputs_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert (
        main(["eval", "--merge", str(bad), "--json", str(tmp_path / "o.json"), "--markdown", str(tmp_path / "o.md")])
        == 2
    )
    _one_error_line(capsys, "--merge", "bad.json")
    bad.write_text(json.dumps({"n": 3, "retentions": [0.1]}))
    assert (
        main(["eval", "--merge", str(bad), "--json", str(tmp_path / "o.json"), "--markdown", str(tmp_path / "o.md")])
        == 2
    )
    _one_error_line(capsys, "--merge", "missing")
    assert (
        main(
            [
                "eval",
                "--merge",
                str(tmp_path / "absent.json"),
                "--json",
                str(tmp_path / "o.json"),
                "--markdown",
                str(tmp_path / "o.md"),
            ]
        )
        == 2
    )
    _one_error_line(capsys, "--merge")
    assert not (tmp_path / "o.json").exists()


def test_cli_rejects_conflicting_retention_and_unwritable_outputs_before_work(tmp_path, capsys, monkeypatch):
    import tango_prune.testbed.model as M

    def no_work(*a, **k):
        raise AssertionError("the model must not be loaded for a bad command line")

    monkeypatch.setattr(M, "load", no_work)
    ok = ["--json", str(tmp_path / "o.json"), "--markdown", str(tmp_path / "o.md"), "--no-progress"]
    assert main(["eval", "--methods", "tango", "--retentions", "0.1", "--set", "retention=0.2", *ok]) == 2
    _one_error_line(capsys, "--set retention", "--retentions")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert (
        main(["eval", "--methods", "tango", "--json", str(blocker / "r.json"), "--markdown", str(tmp_path / "o.md")])
        == 2
    )
    _one_error_line(capsys, "--json")
    assert main(["eval", "--methods", "tango", "--json", str(tmp_path / "o.json"), "--markdown", str(tmp_path)]) == 2
    _one_error_line(capsys, "--markdown")
    assert main(["eval", "--methods", "nope", *ok]) == 2
    _one_error_line(capsys, "--methods")


def test_merge_of_split_runs_equals_one_run(tiny_dir, tmp_path):
    a, b, one = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "one.json"
    base = [
        "eval",
        "--model",
        str(tiny_dir),
        "--limit",
        "2",
        "--retentions",
        "0.1",
        "--batch-size",
        "2",
        "--threads",
        "1",
        "--no-progress",
    ]
    assert main(base + ["--methods", "random", "--json", str(a), "--markdown", str(tmp_path / "a.md")]) == 0
    assert (
        main(base + ["--methods", "uniform", "--oracle", "--json", str(b), "--markdown", str(tmp_path / "b.md")]) == 0
    )
    assert (
        main(
            base
            + ["--methods", "random,uniform", "--oracle", "--json", str(one), "--markdown", str(tmp_path / "one.md")]
        )
        == 0
    )
    merged, png = tmp_path / "m.json", tmp_path / "plot.png"
    assert (
        main(
            [
                "eval",
                "--merge",
                str(a),
                str(b),
                "--json",
                str(merged),
                "--markdown",
                str(tmp_path / "m.md"),
                "--plot",
                str(png),
            ]
        )
        == 0
    )
    from PIL import Image

    assert Image.open(png).size == (900, 560)
    m, o = json.loads(merged.read_text()), json.loads(one.read_text())
    for k in ("methods", "rows", "results", "full", "checks"):
        assert m[k] == o[k], k
    assert E.oracle_row().name not in tp.methods()


def test_merge_joins_retentions_and_refuses_duplicate_cells():
    def rep(rows, rets, full=3):
        return {
            "n": 4,
            "retentions": rets,
            "full": {"correct": full, "total": 4, "accuracy": full / 4},
            "methods": rows,
            "results": {
                m: {str(r): {"correct": 1, "total": 4, "accuracy": 0.25, "relative": 0.25 / (full / 4)} for r in rets}
                for m in rows
            },
        }

    m = E.merge_reports([rep(["random"], [0.1]), rep(["random", "uniform"], [1.0])])
    assert m["retentions"] == [1.0, 0.1] and set(m["results"]["random"]) == {"1.0", "0.1"}
    assert "| uniform | 25.0 (33.3%) | - |" in E.markdown_table(m)
    with pytest.raises(ValueError, match="same cell twice"):
        E.merge_reports([rep(["random"], [0.1]), rep(["random"], [0.1])])
    with pytest.raises(ValueError, match="full-token"):
        E.merge_reports([rep(["random"], [0.1]), rep(["uniform"], [0.1], full=2)])


def test_reports_are_replaced_atomically_with_a_normal_mode(tmp_path):
    import os

    rep = {
        "n": 1,
        "retentions": [0.1],
        "full": {"correct": 1, "total": 1, "accuracy": 1.0},
        "methods": [],
        "results": {},
    }
    js = tmp_path / "r.json"
    E.save_report(rep, js, None)
    E.save_report({**rep, "n": 1}, js, None)
    assert json.loads(js.read_text())["n"] == 1 and not list(tmp_path.glob(".*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    assert js.stat().st_mode & 0o777 == 0o666 & ~umask
