"""benchmarks/prune_speed.py: config variants (``--set``) and the overlap of their kept indices."""

from __future__ import annotations

import json
import os
import runpy
import sys
from types import SimpleNamespace

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def prune_speed():
    # The script's globals, without running its main.
    return SimpleNamespace(**runpy.run_path(os.path.join(ROOT, "benchmarks", "prune_speed.py")))


def test_variants_are_parsed_as_literals(prune_speed):
    assert prune_speed.parse_variant("") == {}
    assert prune_speed.parse_variant("max_cluster_tokens=4096,gram_bytes=1073741824") == {
        "max_cluster_tokens": 4096,
        "gram_bytes": 1073741824,
    }
    assert prune_speed.parse_variant("segmentation=none") == {"segmentation": "none"}
    with pytest.raises(ValueError, match="config variant"):
        prune_speed.parse_variant("max_cluster_tokens")


def test_set_rows_report_the_overlap_with_the_unchanged_config(prune_speed, tmp_path, monkeypatch, capsys):
    out = tmp_path / "rows.json"
    argv = ["prune_speed.py", "--frames", "8", "--dims", "32", "--modes", "one-segment", "--repeats", "1"]
    argv += ["--set", "max_cluster_tokens=64", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    prune_speed.main()
    rows = json.loads(out.read_text())
    assert [r["set"] for r in rows] == [{}, {"max_cluster_tokens": 64}]
    assert rows[0]["overlap"] == 1.0
    assert 0.0 <= rows[1]["overlap"] <= 1.0 and rows[1]["kept"] > 0
    assert rows[1]["x_default_mode"] is None  # the default mode was not run
    table = capsys.readouterr().out
    assert "| max_cluster_tokens=64 |" in table and "overlap with unchanged" in table


def test_against_compares_config_variants_in_one_process(monkeypatch, capsys):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    against = SimpleNamespace(**runpy.run_path(os.path.join(ROOT, "benchmarks", "against.py")))
    argv = ["against.py", "--preset", "llava-onevision", "--frames", "4", "--dim", "16", "--repeats", "1"]
    monkeypatch.setattr(sys, "argv", argv + ["--variants", "", "segmentation=none,max_cluster_tokens=64"])
    against.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].startswith("| (base) | ") and "| 1.0000 | " in lines[3] and lines[3].endswith("| 1.00 | 1.00 |")
    assert lines[4].startswith("| segmentation=none,max_cluster_tokens=64 | ")
    monkeypatch.setattr(sys, "argv", argv + ["--variants", "", "no_such_field=1"])
    with pytest.raises(SystemExit, match="no_such_field"):
        against.main()


def test_against_times_another_checkout_on_bf16_features(monkeypatch, capsys):
    # The other side here is this very package, loaded a second time under another name: the same code
    # must give the same indices and features, in bf16 as Video LLMs run it.
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    against = SimpleNamespace(**runpy.run_path(os.path.join(ROOT, "benchmarks", "against.py")))
    pkg = os.path.join(ROOT, "src", "tango_prune")
    argv = ["against.py", "--against", pkg, "--frames", "4", "--dim", "16", "--repeats", "1", "--dtype", "bfloat16"]
    monkeypatch.setattr(sys, "argv", argv)
    against.main()
    out = capsys.readouterr().out
    assert "same indices: True; same features: True" in out and "ratio against / ours" in out


def test_static_camera_mode_times_the_default_config_on_a_video_without_cuts(prune_speed, monkeypatch, capsys):
    argv = ["prune_speed.py", "--frames", "8", "--dims", "32", "--modes", "static-camera", "--repeats", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    prune_speed.main()
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tango | static-camera |")]
    assert len(row) == 1 and "failed" not in row[0]
    with pytest.raises(SystemExit):  # an unknown mode is an argparse error, not a traceback
        monkeypatch.setattr(sys, "argv", ["prune_speed.py", "--modes", "static"])
        prune_speed.main()
