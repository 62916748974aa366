import json
import math

import pytest

import tango_prune as tp


def test_defaults_are_published_values():
    c = tp.TangoConfig()
    assert (c.retention, c.context_ratio, c.alpha, c.beta, c.k_neighbors) == (0.1, 0.4, 1.5, 0.6, 7)
    assert (c.segmentation, c.tau_segment, c.tau_static, c.base_time, c.base_space) == ("holitom", 0.8, 0.8, 1e4, 1e3)
    assert c.sinks == () and c.compat == "fixed"


def test_json_round_trip(tmp_path):
    c = tp.TangoConfig.preset("llava-onevision", retention=0.15, compat="published")
    c.save(tmp_path)
    assert tp.TangoConfig.load(tmp_path) == c
    assert tp.TangoConfig.from_dict(json.loads(c.to_json())) == c
    assert isinstance(hash(c), int)


def test_presets():
    ov = tp.TangoConfig.preset("llava-onevision", retention=0.1)
    assert ov.tau_segment == 0.65 and ov.retention == 0.1
    assert ov.sinks == ((2, 0), (1, 13), (2, 13), (12, 1), (0, 11), (0, 12))
    # flat indices of the published list on the 14-wide grid
    assert [r * 14 + c for r, c in ov.sinks] == [28, 27, 41, 169, 11, 12]
    assert tp.TangoConfig.preset("llava-onevision", retention=0.2).tau_segment == 0.8
    fv = tp.FastVConfig()
    assert (fv.layer, fv.keep) == (18, 0.5)  # the published stage
    vid = tp.TangoConfig.preset("llava-video", retention=0.1, fastv=fv)
    assert [r * 13 + c for r, c in vid.sinks] == [26, 157, 11]
    assert math.isclose(vid.retention, 0.12174, abs_tol=1e-5)
    assert math.isclose(tp.TangoConfig.preset("llava-video", retention=0.15, fastv=fv).retention, 0.18261, abs_tol=1e-5)
    assert tp.TangoConfig.preset("llava-video", retention=0.9, fastv=fv).retention == 1.0
    assert tp.TangoConfig.preset("llava-video", retention=0.1, fastv=None).retention == 0.1
    # the stage is its own object: without saying whether it runs, the llava-video retention is ambiguous
    with pytest.raises(ValueError, match="fastv"):
        tp.TangoConfig.preset("llava-video", retention=0.1)
    with pytest.raises(ValueError, match="fastv"):
        tp.TangoConfig.preset("llava-video", retention=0.1, fastv={"layer": 18})
    q = tp.TangoConfig.preset("qwen2.5-vl", retention=0.2)
    assert q.sinks == () and "fastv_layer" not in q.to_dict()
    assert tp.TangoConfig.preset("qwen2.5-vl", retention=0.1, alpha=2.0).alpha == 2.0


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("retention", 0.0, "retention"),
        ("retention", 1.5, "retention"),
        ("retention", float("nan"), "retention"),
        ("retention", "0.1", "retention"),
        ("context_ratio", -0.1, "context_ratio"),
        ("alpha", 0.5, "alpha"),
        ("beta", 2.0, "beta"),
        ("k_neighbors", 0, "k_neighbors"),
        ("k_neighbors", 2.5, "k_neighbors"),
        ("segmentation", "dp", "segmentation"),
        ("tau_segment", 1.5, "tau_segment"),
        ("tau_static", -1, "tau_static"),
        ("base_time", 0.5, "base_time"),
        ("compat", "legacy", "compat"),
        ("sinks", ((1, -1),), "sinks"),
        ("sinks", ((1,),), "sinks"),
        ("sinks", 3, "sinks"),
        ("diversity", 1, "diversity"),
        ("max_cluster_tokens", 10, "max_cluster_tokens"),
    ],
)
def test_invalid_fields_raise(field, value, match):
    with pytest.raises(ValueError, match=match):
        tp.TangoConfig(**{field: value})


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"layer": 0}, "fastv.layer"),
        ({"layer": True}, "fastv.layer"),
        ({"layer": 2.0}, "fastv.layer"),
        ({"keep": 0.0}, "fastv.keep"),
        ({"keep": 1.5}, "fastv.keep"),
    ],
)
def test_invalid_fastv_fields_raise(fields, match):
    with pytest.raises(ValueError, match=match):
        tp.FastVConfig(**fields)
    with pytest.raises(ValueError, match="llm_layers"):
        tp.TangoConfig.preset("llava-video", 0.1, llm_layers=18, fastv=tp.FastVConfig(layer=18))


def test_from_dict_rejects_unknown_and_wrong_method():
    with pytest.raises(ValueError, match="unknown"):
        tp.TangoConfig.from_dict({"retention": 0.1, "gamma": 3})
    with pytest.raises(ValueError, match="method"):
        tp.TangoConfig.from_dict({"method": "topk", "retention": 0.1})


def test_preset_errors():
    with pytest.raises(ValueError, match="model"):
        tp.TangoConfig.preset("llava-1.5")
    with pytest.raises(ValueError, match="retention"):
        tp.TangoConfig.preset("qwen2.5-vl", retention=0)


def test_frozen():
    c = tp.TangoConfig()
    with pytest.raises(Exception):
        c.retention = 0.5
    assert c.replace(retention=0.5).retention == 0.5 and c.retention == 0.1


@pytest.mark.parametrize(
    "make",
    [
        lambda: tp.TangoConfig(no_such=1),
        lambda: tp.TangoConfig().replace(no_such=1),
        lambda: tp.make_config("topk", no_such=1),
    ],
)
def test_unknown_fields_are_value_errors(make):
    """An unknown field is a bad value (ValueError naming it), never a TypeError from the dataclass."""
    with pytest.raises(ValueError, match="no_such"):
        make()
