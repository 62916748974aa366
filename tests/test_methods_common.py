"""Properties every registered method must have: budget, determinism, no mutation, shapes, both APIs."""

from __future__ import annotations

import math

import pytest
import torch

import tango_prune as tp
from tango_prune.methods import get
from _videos import dynamic_video, scene_video

BASELINES = ["topk", "random", "uniform", "visionzip", "divprune", "dycoke", "fastvid", "holitom"]
NEEDS_SALIENCY = {"topk", "visionzip", "fastvid", "holitom", "tango"}


def test_all_methods_registered():
    assert set(BASELINES + ["tango"]) <= set(tp.methods())
    for name in tp.methods():
        spec = get(name)
        assert spec.config_class.method == name
        assert spec.summary
        assert spec.fn.__doc__ and spec.config_class.__doc__


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("r", [0.05, 0.1, 0.25, 0.5, 1.0])
def test_budget_matches_tango_within_one_per_frame(name, r):
    v = dynamic_video(T=5, H=6, W=7)
    T, H, W = v.grid
    expected = T * max(1, math.ceil(H * W * r))
    res = tp.prune(v, name, retention=r)
    tango = tp.prune(v, "tango", retention=r)
    assert res.num_kept == expected
    assert abs(res.num_kept - tango.num_kept) <= T
    assert res.info["kept"] == res.num_kept


def test_tango_paper_budget_32x196():
    v = dynamic_video(T=32, H=14, W=14, D=64)
    assert tp.prune(v, "topk", retention=0.1).num_kept == 640
    assert tp.prune(v, "tango", retention=0.1).num_kept == 640


@pytest.mark.parametrize("name", BASELINES + ["tango"])
def test_result_well_formed(name):
    v = dynamic_video()
    res = tp.prune(v, name, retention=0.2)
    T, H, W = v.grid
    K = res.num_kept
    assert res.indices.dtype == torch.long and torch.equal(res.indices, torch.unique(res.indices))
    assert res.features.shape == (K, v.features.shape[-1]) and res.features.dtype == v.features.dtype
    assert bool(torch.isfinite(res.features).all())
    assert res.positions.shape == (K, 3) and res.grid == (T, H, W)
    assert res.kinds is None or res.kinds.shape == (K,)


@pytest.mark.parametrize("name", BASELINES + ["tango"])
def test_deterministic(name):
    a = tp.prune(scene_video(), name, retention=0.15)
    b = tp.prune(scene_video(), name, retention=0.15)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.features, b.features)


@pytest.mark.parametrize("name", BASELINES + ["tango"])
def test_inputs_unchanged(name):
    v = scene_video()
    before = [v.features.clone(), v.saliency.clone(), v.timestamps.clone()]
    tp.prune(v, name, retention=0.2)
    assert torch.equal(v.features, before[0])
    assert torch.equal(v.saliency, before[1])
    assert torch.equal(v.timestamps, before[2])


@pytest.mark.parametrize("name", BASELINES + ["tango"])
@pytest.mark.parametrize("grid", [(1, 6, 6), (3, 4, 9), (2, 7, 3), (1, 1, 1)])
def test_single_frame_and_non_square(name, grid):
    T, H, W = grid
    v = dynamic_video(T=T, H=H, W=W, D=12, seed=3)
    res = tp.prune(v, name, retention=0.3)
    assert res.num_kept == T * max(1, math.ceil(H * W * 0.3))
    assert torch.equal(res.per_frame_counts().sum(), torch.tensor(res.num_kept))


@pytest.mark.parametrize("name", BASELINES)
def test_both_call_styles_agree(name):
    v = dynamic_video()
    cls = get(name).config_class
    a = tp.prune(v, name, retention=0.2)
    b = tp.prune(v, cls(retention=0.2))
    c = tp.prune(v, tp.make_config(name, retention=0.2))
    assert torch.equal(a.indices, b.indices) and torch.equal(a.indices, c.indices)
    assert torch.equal(a.features, b.features)


@pytest.mark.parametrize("name", BASELINES)
def test_config_json_round_trip(name):
    cfg = tp.make_config(name, retention=0.3)
    assert type(cfg).from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name", sorted(NEEDS_SALIENCY))
def test_saliency_required(name):
    with pytest.raises(ValueError, match="saliency"):
        tp.prune(dynamic_video(saliency=False), name, retention=0.2)


@pytest.mark.parametrize("name", sorted(set(BASELINES) - NEEDS_SALIENCY))
def test_saliency_not_needed(name):
    assert tp.prune(dynamic_video(saliency=False), name, retention=0.2).num_kept == 4 * 8


@pytest.mark.parametrize("name", BASELINES)
def test_bad_retention_and_unknown_option(name):
    with pytest.raises(ValueError, match="retention"):
        tp.prune(dynamic_video(), name, retention=0.0)
    with pytest.raises(ValueError, match="invalid option"):
        tp.prune(dynamic_video(), name, retention=0.2, no_such_field=1)


@pytest.mark.parametrize(
    "name,field,value",
    [
        ("random", "seed", -1),
        ("random", "seed", 1.5),
        ("visionzip", "context_ratio", 1.0),
        ("divprune", "scope", "clip"),
        ("dycoke", "merge_ratio", 1.0),
        ("fastvid", "num_segments", 0),
        ("fastvid", "tau", 2.0),
        ("fastvid", "salient_ratio", -0.1),
        ("fastvid", "anchor_step", 0),
        ("holitom", "k_neighbors", 0),
        ("holitom", "tau_segment", 1.5),
        ("holitom", "context_ratio", 2.0),
    ],
)
def test_field_validation_names_the_field(name, field, value):
    with pytest.raises(ValueError, match=field):
        tp.make_config(name, **{field: value})
