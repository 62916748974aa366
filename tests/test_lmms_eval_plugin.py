"""The lmms-eval plugin through real lmms-eval (offline): entry points, model_args errors, tiny LLaVA-Video and
Qwen2.5-VL checkpoints, the sweep's exit code, exact agreement with the in-process testbed evaluator, and
two-process data parallelism. Runs in the second environment (``make test-lmms``); skipped without lmms-eval."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

if importlib.util.find_spec("lmms_eval") is None:
    pytest.skip("lmms-eval is not installed (make test-lmms runs these tests)", allow_module_level=True)
# why: lmms-eval loads local JSON tasks through `datasets`, which reads these when first imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="tango-lmms-datasets-"))

import numpy as np  # noqa: E402

import tango_prune as tp  # noqa: E402
from tango_prune.cli import main  # noqa: E402
from tango_prune.integrations.lmms_eval import MODEL_IDS  # noqa: E402
from tango_prune.integrations.lmms_eval_testbed import TASK, write_task, write_testbed_task  # noqa: E402
from test_cli_run import _save_tokenizer, _write_video  # noqa: E402
from tiny_models import IV_CONTEXT, IV_END, IV_START, tiny_internvl, tiny_llava, tiny_qwen, tiny_qwen2, tiny_qwen3  # noqa: E402

HERE = Path(__file__).resolve().parent
TINY_TASK = "tango_tiny_video"
_TINY_UTILS = """import os
_HERE = os.path.dirname(os.path.abspath(__file__))
def doc_to_visual(doc):
    return [os.path.join(_HERE, doc["video"])]
def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]
def process_results(doc, results):
    return {"answered": 1.0}
"""


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_task")
    _write_video(root / "clip.mp4")
    rows = [{"video": "clip.mp4", "question": q} for q in ("w1 w2 w3", "w4 w5")]
    return write_task(root, TINY_TASK, rows, _TINY_UTILS, metric="answered", target="question", max_new_tokens=3)


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    d = tiny_llava(tmp_path_factory.mktemp("llava")).name_or_path
    _save_tokenizer(d, {"<image>": 120, "<video>": 121})
    return d


_QWEN_SPECIALS = {"<|image_pad|>": 150, "<|video_pad|>": 151, "<|vision_start|>": 152, "<|vision_end|>": 153}


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    d = tiny_qwen(tmp_path_factory.mktemp("qwen")).name_or_path
    _save_tokenizer(d, _QWEN_SPECIALS)
    return d


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    d = tiny_qwen2(tmp_path_factory.mktemp("qwen2")).name_or_path
    _save_tokenizer(d, _QWEN_SPECIALS)
    return d


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    d = tiny_qwen3(tmp_path_factory.mktemp("qwen3")).name_or_path
    _save_tokenizer(d, _QWEN_SPECIALS)
    return d


@pytest.fixture(scope="module")
def internvl_dir(tmp_path_factory):
    d = tiny_internvl(tmp_path_factory.mktemp("internvl")).name_or_path
    _save_tokenizer(d, {"<IMG_CONTEXT>": IV_CONTEXT, "<img>": IV_START, "</img>": IV_END})
    return d


def _evaluate(model_id, model_args, task, include, limit=None):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    return simple_evaluate(
        model=model_id,
        model_args=model_args,
        tasks=[task],
        batch_size=1,
        limit=limit,
        log_samples=True,
        task_manager=TaskManager("WARNING", include_path=str(include)),
        verbosity="WARNING",
    )


def test_entry_point_resolves_every_model_id():
    from importlib.metadata import entry_points

    from lmms_eval.api.model import lmms
    from lmms_eval.models import get_model

    eps = [ep for ep in entry_points(group="lmms_eval.models") if ep.value.startswith("tango_prune.")]
    assert [ep.value for ep in eps] == ["tango_prune.integrations.lmms_eval:manifests"]
    for model_id, (_, cls_name) in MODEL_IDS.items():
        cls = get_model(model_id)
        assert cls.__name__ == cls_name and issubclass(cls, lmms) and cls.is_simple


def test_manifest_import_is_light():
    # lmms-eval loads every entry point on every run: the payload must not pull in transformers or the model
    code = (
        "import sys; from tango_prune.integrations.lmms_eval import manifests; manifests(); "
        "print(sorted(m for m in ('transformers', 'tango_prune.integrations.lmms_eval_model', "
        "'lmms_eval.api.model') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_model_args_errors_through_lmms_eval(llava_dir, qwen_dir, tmp_path):
    from lmms_eval.models import get_model

    llava = get_model("tango_llava_onevision")
    with pytest.raises(ValueError, match=r"unknown model_args \['bogus'\]"):
        llava.create_from_arg_string(f"pretrained={llava_dir},bogus=1", {"batch_size": 1})
    with pytest.raises(ValueError, match="holds a Qwen2_5_VLForConditionalGeneration checkpoint"):
        llava.create_from_arg_string(f"pretrained={qwen_dir}", {"batch_size": 1})
    with pytest.raises(ValueError, match="model_args pretrained must be a checkpoint directory"):
        llava.create_from_arg_string(f"pretrained={tmp_path / 'missing'}", {"batch_size": 1})
    with pytest.raises(ValueError, match="model_args pretrained: .* has no config.json"):
        llava.create_from_arg_string(f"pretrained={tmp_path}", {"batch_size": 1})


def _cli_answer(capsys, model_dir, extra):
    video, question = str(extra.pop("video")), extra.pop("question")
    opts = [x for kv in extra.items() for x in kv if x is not None]  # a flag maps to None
    rc = main(
        [
            "run",
            "--model",
            model_dir,
            "--video",
            video,
            "--question",
            question,
            "--frames",
            "4",
            "--max-new-tokens",
            "3",
            "--device",
            "cpu",
            *opts,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    return out.split("answer:", 1)[1].splitlines()[0].strip()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:tango-prune. this LLaVA checkpoint has no SigLIP")
@pytest.mark.parametrize("family", ["llava-video", "qwen2.5-vl", "qwen2-vl", "qwen3-vl", "internvl"])
def test_tiny_models_through_the_plugin_answer_as_tango_prune_run(family, request, tiny_task, capsys):
    model_id, fixture, variant = {
        "llava-video": ("tango_llava_onevision", "llava_dir", "llava-video"),
        "qwen2.5-vl": ("tango_qwen2_5_vl", "qwen_dir", None),
        "qwen2-vl": ("tango_qwen2_vl", "qwen2_dir", None),
        "qwen3-vl": ("tango_qwen3_vl", "qwen3_dir", None),
        "internvl": ("tango_internvl", "internvl_dir", None),
    }[family]
    d = request.getfixturevalue(fixture)
    args = f"pretrained={d},method=tango,retention=0.25,frames=4" + (f",variant={variant}" if variant else "")
    res = _evaluate(model_id, args, TINY_TASK, tiny_task)
    assert res["results"][TINY_TASK]["answered,none"] == 1.0
    samples = sorted(res["samples"][TINY_TASK], key=lambda s: s["doc_id"])
    assert [s["doc"]["question"] for s in samples] == ["w1 w2 w3", "w4 w5"]
    th = res["throughput"]
    assert th["avg_tango_requests"] == 2.0
    assert 0 < th["avg_tango_visual_tokens_after"] < th["avg_tango_visual_tokens_before"]
    assert th["avg_tango_prune_ms"] > 0
    # the plugin is the pipeline of `tango-prune run` (same decoding, preprocessing, prompt and config)
    capsys.readouterr()
    for s in samples:
        extra = {
            "video": tiny_task / "clip.mp4",
            "question": s["doc"]["question"],
            "--method": "tango",
            "--retention": "0.25",
        }
        if variant:
            extra["--variant"] = variant
        assert s["resps"][0][0].strip() == _cli_answer(capsys, d, extra)


@pytest.mark.slow
def test_internvl_unpruned_baseline_answers_as_run_no_prune(internvl_dir, tiny_task, capsys):
    # InternVL's upstream class takes no video argument: the baseline goes through the identity path
    res = _evaluate("tango_internvl", f"pretrained={internvl_dir},method=none,frames=4", TINY_TASK, tiny_task)
    samples = sorted(res["samples"][TINY_TASK], key=lambda s: s["doc_id"])
    th = res["throughput"]
    assert th["avg_tango_visual_tokens_after"] == th["avg_tango_visual_tokens_before"] > 0
    capsys.readouterr()
    for s in samples:
        extra = {"video": tiny_task / "clip.mp4", "question": s["doc"]["question"], "--no-prune": None}
        assert s["resps"][0][0].strip() == _cli_answer(capsys, internvl_dir, extra)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:tango-prune. this LLaVA checkpoint has no SigLIP")
def test_sweep_exits_nonzero_when_lmms_eval_fails(llava_dir, tiny_task, tmp_path, capsys):
    base = [
        "lmms-eval",
        "--pretrained",
        llava_dir,
        "--include-path",
        str(tiny_task),
        "--methods",
        "topk",
        "--model-args",
        "frames=2",
    ]
    rc = main(base + ["--tasks", "no_such_task_anywhere", "--out", str(tmp_path / "a")])
    assert rc == 1
    s = json.loads((tmp_path / "a" / "sweep.json").read_text())
    assert s["failed"] == ["none", "topk@0.1"]
    assert s["runs"][0]["error"] == "ValueError: unknown lmms-eval task(s) ['no_such_task_anywhere']"
    rc = main(base[:-1] + ["frames=2,bogus=1", "--tasks", TINY_TASK, "--out", str(tmp_path / "b")])
    assert rc == 1
    s = json.loads((tmp_path / "b" / "sweep.json").read_text())
    assert s["failed"] == ["none", "topk@0.1"] and "bogus" in s["runs"][0]["error"]
    assert "2 run(s) failed: none, topk@0.1" in capsys.readouterr().err
    rc = main(base + ["--tasks", TINY_TASK, "--out", str(tmp_path / "c")])
    assert rc == 0


@functools.lru_cache(maxsize=None)
def _reference_counts(n: int) -> dict[str, int]:
    """Counts of the in-process testbed evaluator with the configs the plugin uses (Tango: the family's preset
    for this checkpoint, as `tango-prune run` resolves it)."""
    from tango_prune.testbed.evaluate import evaluate
    from tango_prune.testbed.model import load

    model, proc = load()
    preset = tp.models.family_for(model).tango_config(model.config, None, 0.1)[0].to_dict()
    default = tp.make_config("tango", retention=0.1).to_dict()
    overrides = {k: v for k, v in preset.items() if v != default[k]}
    topk = evaluate(model, proc, ["topk"], [0.1], limit=n, batch_size=1, show_progress=False)
    tango = evaluate(model, proc, ["tango"], [0.1], limit=n, batch_size=1, show_progress=False, overrides=overrides)
    return {
        "none": topk["full"]["correct"],
        "topk@0.1": topk["results"]["topk"]["0.1"]["correct"],
        "tango@0.1": tango["results"]["tango"]["0.1"]["correct"],
    }


@pytest.mark.slow
def test_testbed_sweep_equals_in_process_evaluator(tmp_path, capsys):
    n = 8
    rc = main(
        ["lmms-eval", "--testbed", str(n), "--methods", "topk,tango", "--retentions", "0.1", "--out", str(tmp_path)]
    )
    assert rc == 0
    from tango_prune.testbed import data as D
    from tango_prune.video import load_video

    frames, ts = load_video(tmp_path / "testbed_task" / "videos" / "0000.mp4", D.NUM_FRAMES)
    assert np.array_equal(frames, D.make_sample(D.TEST, 0).clip.frames)  # lossless clips, exact times
    assert np.array_equal(ts, np.arange(D.NUM_FRAMES) / D.FPS)
    s = json.loads((tmp_path / "sweep.json").read_text())
    got = {r["key"]: r["scores"][TASK]["value"] * n for r in s["runs"]}
    ref = _reference_counts(n)
    assert {k: round(v) for k, v in got.items()} == ref
    assert all(abs(v - round(v)) < 1e-9 for v in got.values())
    table = (tmp_path / "sweep.md").read_text()
    assert f"| none | {ref['none'] / n:.4g} (100.0%) |" in table
    assert (tmp_path / "sweep.png").stat().st_size > 0
    capsys.readouterr()
    assert (
        main(
            ["lmms-eval", "--testbed", str(n), "--methods", "topk,tango", "--retentions", "0.1", "--out", str(tmp_path)]
        )
        == 0
    )
    assert capsys.readouterr().err.count("done earlier, skipped") == 3  # resumed: nothing evaluated again


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_data_parallel_splits_documents_without_duplicates(tmp_path):
    n = 8
    made = write_testbed_task(tmp_path / "task", n)
    args = f"pretrained={made['pretrained']},method=topk,retention=0.1"
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        # what `accelerate launch --cpu --num_processes 2` sets
        env = {
            **os.environ,
            "ACCELERATE_USE_CPU": "true",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "_lmms_eval_worker.py"),
                    args,
                    TASK,
                    made["include_path"],
                    str(tmp_path / f"rank{rank}.json"),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["rank"], r0["world_size"], r1["rank"], r1["world_size"]) == (0, 2, 1, 2)
    assert r0["answered"] and r1["answered"] and not set(r0["answered"]) & set(r1["answered"])
    assert sorted(r0["answered"] + r1["answered"]) == list(range(n))
    assert sorted(r0["samples"]) == list(range(n))  # gathered on rank 0, each document once
    assert "samples" not in r1
    assert round(r0["accuracy"] * n) == _reference_counts(n)["topk@0.1"]
    assert r0["throughput"]["avg_tango_requests"] == n  # statistics summed over both ranks
    assert r0["throughput"]["avg_tango_visual_tokens_after"] < r0["throughput"]["avg_tango_visual_tokens_before"]
