"""The model-family contract: every registered family implements it; the generic layer knows no family."""

from __future__ import annotations

import inspect

import pytest
import torch

import tango_prune as tp
from tango_prune.models import FAMILIES, ModelFamily, family_for_class, register_family
from tango_prune.models.base import _LOADED

CONTRACT = (
    "rewrite",
    "inputs_from_frames",
    "tango_config",
    "bench_frame_size",
    "bench_inputs",
    "bench_encode",
    "bench_first_video_features",
    "bench_upstream_encode",
)


@pytest.mark.parametrize("cls_name", sorted(FAMILIES))
def test_every_registered_family_implements_the_contract(cls_name):
    fam = family_for_class(cls_name)
    assert issubclass(fam, ModelFamily) and fam.model_class == cls_name
    assert fam.variants and fam.default_frames >= 1 and len(fam.normalisation) == 2
    for name in CONTRACT:
        assert getattr(fam, name) is not getattr(ModelFamily, name, None), f"{cls_name} lacks {name}"
    assert fam.detect_variant(type("Cfg", (), {"_name_or_path": ""})()) in fam.variants


def test_generic_patch_layer_names_no_family():
    """apply / remove / stats know no model family and no intra-LLM stage by name."""
    import ast

    import tango_prune.models as generic

    tree = ast.parse(inspect.getsource(generic))
    for node in ast.walk(tree):  # docstrings may give examples; the code itself may not
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body.pop(0)
    code = ast.unparse(tree).lower()
    for word in ("llava", "qwen", "fastv", "siglip"):
        assert word not in code, word


class _Toy(torch.nn.Module):
    """A stand-in upstream class (its name is what the registry keys on)."""

    def forward(self, input_ids=None, pixel_values_videos=None, **kw):  # noqa: D401 - a tiny model
        return input_ids.float().sum() if pixel_values_videos is None else pixel_values_videos.sum()

    def generate(self, **kw):
        return self.forward(**kw)


class _ToyFamily(ModelFamily):
    model_class = "_Toy"
    variants = ("toy",)

    def __init__(self, model, variant=None, saliency_head=None):
        if variant not in (None, "toy"):
            raise ValueError(f"variant must be 'toy', got {variant!r}")

    def rewrite(self, model, state, kwargs):
        kwargs["pixel_values_videos"] = kwargs["pixel_values_videos"] * 0 + 7  # the family's own rewrite
        return kwargs


def test_a_family_registered_from_outside_is_used_by_apply():
    register_family("_Toy", _ToyFamily)
    try:
        m = _Toy()
        tp.apply(m, name="topk", retention=0.5)
        assert float(m(input_ids=torch.ones(1, 2), pixel_values_videos=torch.ones(2))) == 14.0
        tp.remove(m)
        assert float(m(input_ids=torch.ones(1, 2), pixel_values_videos=torch.ones(2))) == 2.0
        with pytest.raises(ValueError, match="variant must be 'toy'"):
            tp.apply(m, name="topk", variant="other")
    finally:
        FAMILIES.pop("_Toy")
        _LOADED.pop("_Toy", None)


def test_registry_errors():
    with pytest.raises(ValueError, match="model must be one of"):
        family_for_class("BertModel")
    with pytest.raises(ValueError, match="ModelFamily"):
        register_family("X", int)
    with pytest.raises(ValueError, match="module:Class"):
        register_family("X", "no_colon")


def test_llava_video_preset_reads_the_llm_depth_from_the_checkpoint():
    """The pre-LLM retention of LLaVA-Video keeps the layer-averaged retention at r for this LLM's depth."""
    from types import SimpleNamespace

    fam = family_for_class("LlavaOnevisionForConditionalGeneration")
    cfg = SimpleNamespace(
        vision_config=SimpleNamespace(image_size=384, patch_size=14),
        text_config=SimpleNamespace(num_hidden_layers=32),
        _name_or_path="LLaVA-Video-7B-Qwen2",
    )
    tango, notes = fam.tango_config(cfg, None, 0.1)
    assert notes == [] and fam.stage_configs(cfg, None) == (tp.FastVConfig(layer=18, keep=0.5),)
    assert tango.retention == pytest.approx(32 * 0.1 / (18 + 14 * 0.5))
    assert tp.TangoConfig.preset("llava-video", 0.1, fastv=tp.FastVConfig()).retention == pytest.approx(2.8 / 23)
    with pytest.raises(ValueError, match="llm_layers"):
        tp.TangoConfig.preset("llava-video", 0.1, llm_layers=0, fastv=tp.FastVConfig())
    # an LLM of 18 layers or fewer has no layer 18 to prune at: no stage, the retention as asked, and a note
    shallow = SimpleNamespace(**{**vars(cfg), "text_config": SimpleNamespace(num_hidden_layers=12)})
    tango, notes = fam.tango_config(shallow, None, 0.1)
    assert fam.stage_configs(shallow, None) == () and tango.retention == 0.1 and "FastV" in notes[0]
    assert fam.stage_configs(cfg, "llava-onevision") == ()
