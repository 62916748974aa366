import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tango_prune as tp
from tango_prune.methods._common import frame_budget
from tango_prune.testbed import data as D
from tango_prune.testbed.evaluate import _oracle_config
from tango_prune.testbed.oracle import ORACLE, OracleConfig, cell_objects, evidence_cells, registered, select

CELL = 12  # pixels per LLM token side: 6 px patches, 2x2 pooled


@settings(max_examples=30, deadline=None)
@given(
    split=st.sampled_from([D.TRAIN, D.TEST]),
    index=st.integers(0, 10**6),
    retention=st.sampled_from([0.05, 0.1, 0.15, 0.25, 1.0]),
)
def test_oracle_keeps_the_evidence_cells_of_generated_questions(split, index, retention):
    s = D.make_sample(split, index)
    T = s.clip.frames.shape[0]
    cfg = _oracle_config(s, retention, CELL)
    g = D.IMAGE_SIZE // CELL
    ev = set(cfg.evidence)
    # the evidence is the subject's cells (every object's for count), each really covering that object
    for k in ev:
        t, r, c = k // (g * g), (k % (g * g)) // g, k % g
        patch = s.clip.shape_ids[t, r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL]
        if s.question.subject is None:
            assert (patch > 0).sum() >= 4
        else:
            assert (patch == D.SHAPES.index(s.question.subject) + 1).sum() >= 4
    if s.question.qtype != "end":  # every question's subject is visible somewhere ("end": its last 3 frames)
        assert ev, s.question
    tokens = tp.VideoTokens(features=torch.randn(T, g, g, 4, generator=torch.Generator().manual_seed(index)))
    res = select(tokens, cfg)
    kept = set(res.indices.tolist())
    budget = T * frame_budget(g * g, retention)
    assert res.num_kept == min(budget, T * g * g)
    if len(ev) <= budget:
        assert ev <= kept  # every evidence cell survives
    else:
        assert kept <= ev  # the budget is spent on evidence only
    assert torch.equal(select(tokens, cfg).indices, res.indices)  # deterministic


def test_evidence_cells_follow_the_question_type():
    for i in range(60):
        s = D.make_sample(D.TEST, i)
        T = s.clip.frames.shape[0]
        cells = cell_objects(s.clip.shape_ids, CELL)
        ev = evidence_cells(s.question, s.clip.objects, cells, T)
        frame = np.arange(ev.shape[0]) // (ev.shape[0] // T)
        if s.question.qtype == "end":
            assert (frame[ev] >= T - 3).all()
        if s.question.qtype == "count":
            assert np.array_equal(ev, cells >= 0)


def test_oracle_is_registered_only_inside_the_eval():
    assert ORACLE not in tp.methods()
    with registered():
        assert ORACLE in tp.methods()
        with pytest.raises(ValueError, match="already registered"):
            with registered():
                pass
    assert ORACLE not in tp.methods()
    with pytest.raises(ValueError, match="evidence"):
        OracleConfig(retention=0.1, evidence=(3, 1))
    tokens = tp.VideoTokens(features=torch.randn(2, 2, 2, 4))
    with pytest.raises(ValueError, match="evidence indices"):
        select(tokens, OracleConfig(retention=0.5, evidence=(9,)))
