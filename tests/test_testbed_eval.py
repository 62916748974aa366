import json

import torch

import tango_prune as tp
from tango_prune.cli import main
from tango_prune.testbed.demo import run_demo
from tango_prune.testbed.evaluate import evaluate, markdown_table


def test_evaluate_end_to_end_on_a_tiny_subset():
    torch.set_num_threads(1)
    from tango_prune.testbed.model import load

    model, proc = load()
    rep = evaluate(model, proc, ["tango"], [1.0, 0.1], limit=4, batch_size=4, show_progress=False)
    assert rep["n"] == 4 and rep["full"]["total"] == 4
    for r in ("1.0", "0.1"):
        x = rep["results"]["tango"][r]
        assert x["total"] == 4 and 0 <= x["correct"] <= 4
    table = markdown_table(rep)
    assert "| tango |" in table and "r=0.1" in table
    assert not tp.models.is_applied(model)  # restored after every retention


def test_eval_cli_writes_json_and_markdown(tmp_path, capsys):
    js, md = tmp_path / "e.json", tmp_path / "e.md"
    rc = main(
        [
            "eval",
            "--benchmark",
            "testbed",
            "--limit",
            "2",
            "--methods",
            "tango",
            "--retentions",
            "0.2",
            "--json",
            str(js),
            "--markdown",
            str(md),
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    rep = json.loads(js.read_text())
    assert rep["results"]["tango"]["0.2"]["total"] == 2
    assert md.read_text().startswith("| method |")
    assert main(["eval", "--limit", "2", "--methods", "nope", "--no-progress"]) == 2
    # config overrides reach every method and are recorded; a field the method lacks is a clear error
    rc = main(
        [
            "eval",
            "--limit",
            "2",
            "--methods",
            "tango",
            "--retentions",
            "1.0",
            "--set",
            "tau_static=1.0",
            "--json",
            str(js),
            "--markdown",
            str(md),
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    assert rc == 0 and json.loads(js.read_text())["overrides"] == {"tau_static": 1.0}
    assert "tau_static=1.0" in md.read_text()
    assert main(["eval", "--limit", "2", "--methods", "topk", "--set", "tau_static=1.0", "--no-progress"]) == 2
    assert main(["eval", "--limit", "2", "--methods", "tango", "--set", "oops", "--no-progress"]) == 2


def test_demo_writes_video_and_picture(tmp_path):
    torch.set_num_threads(1)
    rep = run_demo(tmp_path, subset=range(2))
    assert rep["subset"]["full"]["total"] == 2 and rep["subset"]["pruned"]["visual_tokens"] < 577
    assert (tmp_path / "demo.mp4").is_file() and (tmp_path / "kept_tokens.png").is_file()
    assert rep["pruned"]["visual_tokens"] < rep["full"]["visual_tokens"]
    assert rep["kept"] == sum(rep["kinds"].values())


def test_show_cli(tmp_path, capsys):
    from tango_prune.testbed import data as D

    video = D.write_mp4(D.make_clip(D.TEST, 5).frames, tmp_path / "v.mp4")
    png = tmp_path / "k.png"
    rc = main(["show", "--video", str(video), "--question", "how many shapes appear in the video ?", "--out", str(png)])
    assert rc == 0 and png.is_file()
    out = capsys.readouterr().out
    assert "all tokens" in out and "tango @ 0.1" in out
    assert main(["show", "--video", str(tmp_path / "missing.mp4"), "--question", "x"]) == 2
