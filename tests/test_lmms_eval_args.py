"""lmms-eval plugin without lmms-eval: ``model_args`` validation and the sweep's bookkeeping (resume, failure,
table, plot) with a stand-in for ``simple_evaluate``. The runs through real lmms-eval are in
test_lmms_eval_plugin.py (second environment, ``make test-lmms``)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

import tango_prune as tp
from tango_prune.integrations.lmms_eval import MODEL_IDS, parse_model_args
from tango_prune.integrations.lmms_eval_sweep import Run, markdown_table, plan, sweep, task_score

LLAVA, QWEN = "tango_llava_onevision", "tango_qwen2_5_vl"


def test_model_ids_and_defaults():
    assert set(MODEL_IDS) == {LLAVA, QWEN, "tango_qwen2_vl", "tango_qwen3_vl", "tango_internvl"}
    a = parse_model_args(LLAVA, {"pretrained": "/ckpt", "batch_size": 1, "device": None, "max_batch_size": None})
    assert (a["model_class"], a["method"], a["retention"], a["overrides"], a["variant"]) == (
        "LlavaOnevisionForConditionalGeneration",
        "tango",
        0.1,
        {},
        None,
    )
    none = parse_model_args(QWEN, {"pretrained": "/ckpt", "method": "none"})
    assert (none["model_class"], none["method"], none["retention"]) == (
        "Qwen2_5_VLForConditionalGeneration",
        "none",
        1.0,
    )
    for model_id, (model_class, _) in MODEL_IDS.items():  # every id serves a registered model family
        assert tp.models.family_for_class(model_class).model_class == model_class


@pytest.mark.parametrize(
    "model_id, kwargs, match",
    [
        (LLAVA, {"pretrained": "/c", "bogus": 1}, r"unknown model_args \['bogus'\]"),
        (LLAVA, {"pretrained": "/c", "method": "topk", "tau_static": 1.0}, r"unknown model_args \['tau_static'\]"),
        (LLAVA, {}, "pretrained"),
        (LLAVA, {"pretrained": "/c", "method": "nope"}, "method must be 'none' or one of"),
        (LLAVA, {"pretrained": "/c", "retention": 0}, r"retention must be a number in \(0, 1\]"),
        (LLAVA, {"pretrained": "/c", "retention": 1.5}, r"retention must be a number in \(0, 1\]"),
        (LLAVA, {"pretrained": "/c", "method": "none", "retention": 0.1}, "retention must be unset or 1"),
        (QWEN, {"pretrained": "/c", "variant": "llava-video"}, r"variant must be one of \['qwen2.5-vl'\]"),
        (QWEN, {"pretrained": "/c", "saliency_head": "/siglip"}, "saliency_head applies to LLaVA models only"),
        (
            LLAVA,
            {"pretrained": "/c", "variant": "llava-next"},
            r"variant must be one of \['llava-onevision', 'llava-video'\]",
        ),
        (LLAVA, {"pretrained": "/c", "frames": 0}, "frames must be an integer >= 1"),
        (LLAVA, {"pretrained": "/c", "dtype": "float8"}, "dtype must be one of"),
        (LLAVA, {"pretrained": "/c", "batch_size": 4}, "batch_size must be 1"),
        (LLAVA, {"pretrained": "/c", "config": "/no/such/file.json"}, "config must be a PruneConfig JSON file"),
        ("llava_onevision", {"pretrained": "/c"}, "model id must be one of"),
    ],
)
def test_model_args_errors_name_the_argument(model_id, kwargs, match):
    with pytest.raises(ValueError, match=match):
        parse_model_args(model_id, kwargs)


def test_field_overrides_and_config_file(tmp_path):
    a = parse_model_args(LLAVA, {"pretrained": "/c", "tau_static": 1.0, "sinks": "[[0, 1]]", "diversity": False})
    assert a["overrides"] == {"tau_static": 1.0, "sinks": [[0, 1]], "diversity": False}
    assert tp.make_config("tango").replace(**a["overrides"]).sinks == ((0, 1),)
    path = tmp_path / "cfg.json"
    tp.make_config("topk", retention=0.2).save(path)
    c = parse_model_args(LLAVA, {"pretrained": "/c", "config": str(path)})
    assert (c["method"], c["retention"], c["config"]["method"]) == ("topk", 0.2, "topk")
    assert parse_model_args(LLAVA, {"pretrained": "/c", "config": str(path), "retention": 0.5})["retention"] == 0.5
    with pytest.raises(ValueError, match="contradicts config"):
        parse_model_args(LLAVA, {"pretrained": "/c", "config": str(path), "method": "tango"})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_model_args(LLAVA, {"pretrained": "/c", "config": str(bad)})
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a PruneConfig"):
        parse_model_args(LLAVA, {"pretrained": "/c", "config": str(bad)})


def test_plan_none_first_and_validated():
    runs = plan(["topk", "tango"], [0.1, 0.25, 0.1])
    assert [r.key for r in runs] == ["none", "topk@0.1", "topk@0.25", "tango@0.1", "tango@0.25"]
    assert Run("tango", 0.05).key == "tango@0.05"
    with pytest.raises(ValueError, match="methods must be registered"):
        plan(["nope"], [0.1])
    with pytest.raises(ValueError, match="retentions must be numbers"):
        plan(["topk"], [0.0])


def test_task_score_picks_the_first_metric_not_stderr():
    res = {
        "results": {"a": {"alias": "a", "acc_stderr,none": 0.1, "acc,none": 0.5}},
        "groups": {"g": {"alias": "g", "score,none": 61.0}},
    }
    assert task_score(res, "a") == ("acc,none", 0.5)
    assert task_score(res, "g") == ("score,none", 61.0)
    assert task_score(res, "missing") is None


class FakeHarness:
    """Stands in for lmms-eval: the score of a run is a function of its model_args; some runs misbehave."""

    def __init__(self, fail=(), none=(), missing=(), interrupt=()):
        self.calls: list[str] = []
        self.fail, self.none, self.missing, self.interrupt = fail, none, missing, interrupt

    def __call__(self, *, model, model_args, tasks, limit, include_path):
        self.calls.append(model_args)
        method = dict(kv.split("=") for kv in model_args.split(","))["method"]
        if method in self.interrupt:
            raise KeyboardInterrupt
        if method in self.fail:
            raise RuntimeError("CUDA out of memory")
        if method in self.none:
            return None
        base = {"none": 0.8, "topk": 0.6, "tango": 0.76}[method]
        out = {
            "results": {
                t: {"alias": t, "acc,none": base - 0.1 * k, "acc_stderr,none": 0.01}
                for k, t in enumerate(tasks)
                if method not in self.missing
            },
            "n-samples": {t: {"original": 10, "effective": limit or 10} for t in tasks},
            "throughput": {
                "avg_tango_visual_tokens_before": 577.0,
                "avg_tango_prune_ms": 1.5,
                "avg_tango_visual_tokens_after": 577.0 if method == "none" else 58.0,
            },
        }
        return out


def _sweep(out, harness, methods=("topk", "tango")):
    return sweep(
        out,
        model=LLAVA,
        pretrained="/ckpt",
        tasks=["t1", "t2"],
        methods=list(methods),
        retentions=[0.1],
        limit=4,
        evaluate=harness,
        log=lambda s: None,
    )


def test_sweep_writes_table_json_plot(tmp_path):
    h = FakeHarness()
    s = _sweep(tmp_path, h)
    assert s["failed"] == [] and [r["key"] for r in s["runs"]] == ["none", "topk@0.1", "tango@0.1"]
    assert h.calls[0] == "pretrained=/ckpt,method=none" and h.calls[1] == "pretrained=/ckpt,method=topk,retention=0.1"
    table = (tmp_path / "sweep.md").read_text()
    assert table == markdown_table(s)
    # absolute score and % of none per task: topk 0.6 / 0.8 = 75% on t1, 0.5 / 0.7 on t2
    assert "| topk@0.1 | 0.6 (75.0%) | 0.5 (71.4%) | 73.2% | 577 -> 58 | 1.5 |" in table
    assert "| none | 0.8 (100.0%) | 0.7 (100.0%) | 100.0% |" in table
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["runs"][2]["scores"]["t1"] == {"metric": "acc,none", "value": 0.76, "n": 4}
    assert saved["runs"][1]["tango"] == {"visual_tokens_before": 577.0, "visual_tokens_after": 58.0, "prune_ms": 1.5}
    with Image.open(tmp_path / "sweep.png") as img:
        assert img.size[0] > 600 and img.getextrema() != ((255, 255),) * 3
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_sweep_resumes_and_reports_failures(tmp_path):
    with pytest.raises(KeyboardInterrupt):  # interrupted during the third run
        _sweep(tmp_path, FakeHarness(interrupt=("tango",)))
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["none.json", "topk@0.1.json"]
    h = FakeHarness(fail=("tango",))
    s = _sweep(tmp_path, h)
    assert [c.split(",")[1] for c in h.calls] == ["method=tango"]  # the two saved runs are not redone
    assert s["failed"] == ["tango@0.1"]
    rec = json.loads((tmp_path / "runs" / "tango@0.1.json").read_text())
    assert rec["status"] == "failed" and "CUDA out of memory" in rec["error"] and "Traceback" in rec["traceback"]
    assert "| tango@0.1 | failed | failed |" in (tmp_path / "sweep.md").read_text()
    h2 = FakeHarness()
    assert _sweep(tmp_path, h2)["failed"] == [] and len(h2.calls) == 1  # only the failed run is retried
    h3 = FakeHarness()
    sweep(
        tmp_path,
        model=LLAVA,
        pretrained="/other",
        tasks=["t1", "t2"],
        methods=["topk", "tango"],
        retentions=[0.1],
        limit=4,
        evaluate=h3,
        log=lambda s: None,
    )
    assert len(h3.calls) == 3  # other settings: nothing is reused


@pytest.mark.parametrize(
    "harness, error",
    [
        (FakeHarness(none=("topk",)), "lmms-eval returned no results"),
        (FakeHarness(missing=("topk",)), "lmms-eval returned no score for task(s) ['t1', 't2']"),
    ],
)
def test_sweep_counts_silent_lmms_eval_failures(tmp_path, harness, error):
    s = _sweep(tmp_path, harness, methods=("topk",))
    assert s["failed"] == ["topk@0.1"]
    assert s["runs"][1]["error"] == error


def test_sweep_rejects_bad_settings(tmp_path):
    kw = dict(model=LLAVA, pretrained="/c", tasks=["t"], methods=["topk"], retentions=[0.1], evaluate=FakeHarness())
    with pytest.raises(ValueError, match="model must be one of"):
        sweep(tmp_path, **{**kw, "model": "llava_onevision"})
    with pytest.raises(ValueError, match="tasks must name"):
        sweep(tmp_path, **{**kw, "tasks": []})
    with pytest.raises(ValueError, match="must not set retention"):
        sweep(tmp_path, **kw, model_args="frames=8,retention=0.5")
    with pytest.raises(ValueError, match="limit must be"):
        sweep(tmp_path, **kw, limit=0)


def test_cli_input_errors(monkeypatch, tmp_path, capsys):
    import importlib.util

    from tango_prune.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lmms_eval" else real(name, *a))
    assert main(["lmms-eval", "--testbed", "2", "--out", str(tmp_path)]) == 2
    assert "lmms-eval is not installed: pip install 'tango-prune[lmms-eval]'" in capsys.readouterr().err
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == "lmms_eval" else real(name, *a)
    )
    for argv, msg in (
        (["--tasks", "t"], "--pretrained is required"),
        (["--testbed", "2", "--pretrained", "/c"], "--testbed sets the model"),
        (["--pretrained", "/c", "--tasks", " , "], "--tasks must list at least one value"),
        (["--pretrained", "/c", "--tasks", "t", "--retentions", "a"], "--retentions must be"),
        (["--pretrained", "/c", "--tasks", "t", "--methods", "nope"], "methods must be registered"),
    ):
        assert main(["lmms-eval", "--out", str(tmp_path), *argv]) == 2, argv
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing was evaluated
