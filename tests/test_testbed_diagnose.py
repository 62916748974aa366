"""benchmarks/testbed_diagnose.py runs on the shipped model and prints what the docs quote (smoke test)."""

import os
import runpy
from types import SimpleNamespace

import numpy as np

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
    diag.count(model, proc, 12)
    out = capsys.readouterr().out
    assert "same positions, raw features" in out and "direction questions among the first 20" in out
    assert "after LLM layer 4: direction" in out and "moving objects: tokens kept" in out
    assert "moving objects' mean token" in out and "after the other direction questions" in out
    assert "count questions among the first 12" in out and "each object once" in out
    assert "testbed-capture" not in tp.methods() and "evidence-oracle" not in tp.methods()
    assert diag.FIXED not in tp.methods()  # registered only while the layout diagnosis runs
    assert not tp.models.is_applied(model)


def test_count_layouts_stay_within_the_evidence_and_the_budget():
    diag = SimpleNamespace(**runpy.run_path(os.path.join(ROOT, "benchmarks", "testbed_diagnose.py")))
    rng = np.random.default_rng(0)
    T, L, budget = 16, 36, 64
    cells = np.where(rng.random(T * L) < 0.3, rng.integers(0, 3, T * L), -1).astype(np.int8)
    ev = cells >= 0
    lay = diag._evidence_layouts(ev, cells, T, budget, seed=5)
    rand = lay.pop("random thinning and fill")
    assert rand.sum() == budget and np.array_equal(lay.pop("oracle (evidence thinned evenly)"), ev)
    for name, mask in lay.items():
        assert not (mask & ~ev).any(), name  # evidence only: the oracle fills the rest of the budget
    per_frame = lay["one cell per object per frame"].reshape(T, L)
    c = cells.reshape(T, L)
    for t in range(T):
        assert sorted(c[t][per_frame[t]]) == sorted(set(c[t][c[t] >= 0]))  # one cell of each object shown
    frames = lay["whole frames"].reshape(T, L)
    shown = frames.any(1)
    assert frames.sum() <= budget and np.array_equal(frames[shown], ev.reshape(T, L)[shown])
    once = lay["each object once"]
    assert sorted(set(cells[once])) == sorted(set(cells[ev]))
    assert len({int(i) // L for i in np.nonzero(once & (cells == 0))[0]}) == 1  # one frame per object
