"""benchmarks/testbed_diagnose.py runs on the shipped model and prints what the docs quote (smoke test)."""

import os
import runpy
from types import SimpleNamespace

import tango_prune as tp
from tango_prune.testbed.model import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_diagnoses_run_and_leave_no_method_registered(capsys):
    diag = SimpleNamespace(**runpy.run_path(os.path.join(ROOT, "benchmarks", "testbed_diagnose.py")))
    model, proc = load()
    diag.layout(model, proc, 3)
    diag.direction(model, proc, 20)
    diag.motion(model, proc, 8)
    diag.packing(model, proc, 40)
    diag.collapse(model, proc, 3, 0.8)
    out = capsys.readouterr().out
    assert "same positions, raw features" in out and "direction questions among the first 20" in out
    assert "after LLM layer 4: direction" in out and "moving objects: tokens kept" in out
    assert "moving objects' mean token" in out and "after the other direction questions" in out
    assert "testbed-capture" not in tp.methods()
    assert diag.FIXED not in tp.methods()  # registered only while the layout diagnosis runs
    assert not tp.models.is_applied(model)
