"""lmms-eval plugin: the ``tango_*`` model ids and their ``model_args``.

lmms-eval (>= 0.7.3) loads external models from the entry-point group ``lmms_eval.models``; this package
registers :func:`manifests` there (``pyproject.toml``). lmms-eval loads every entry point on each run, so
this module imports neither lmms-eval's model base class nor ``transformers``: the model classes live in
:mod:`tango_prune.integrations.lmms_eval_model` and are imported by lmms-eval only when a ``tango_*`` id is
requested. Usage::

    python -m lmms_eval --model tango_llava_onevision \\
        --model_args pretrained=llava-hf/llava-onevision-qwen2-7b-ov-hf,method=tango,retention=0.1 \\
        --tasks videomme,mvbench,longvideobench_val_v,mlvu_dev --batch_size 1

``model_args`` (see :data:`MODEL_ARGS`): ``pretrained`` (checkpoint directory or hub id), ``method`` (a
registered pruning method, or ``none`` for the unpruned model), ``retention``, ``variant`` (LLaVA token
layout, auto-detected as in ``tango-prune run``), ``frames``, ``config`` (a ``PruneConfig`` JSON file),
``saliency_head`` (LLaVA: the original SigLIP checkpoint whose pooling head scores patches), ``dtype``,
``attn_implementation``, ``device_map``, ``max_new_tokens``, and any field of the method's config class as an
override (e.g. ``tau_static=1.0``). Anything else is a ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ..validate import check_int

__all__ = ["MODEL_IDS", "MODEL_ARGS", "NONE", "manifests", "parse_model_args"]

#: lmms-eval model id -> (upstream ``transformers`` class, i.e. the model family in
#: :data:`tango_prune.models.FAMILIES`; class name in :mod:`.lmms_eval_model`). A new family joins with one
#: line here plus a three-line class there.
MODEL_IDS: dict[str, tuple[str, str]] = {
    "tango_llava_onevision": ("LlavaOnevisionForConditionalGeneration", "TangoLlavaOnevision"),
    "tango_qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "TangoQwen25VL"),
    "tango_qwen2_vl": ("Qwen2VLForConditionalGeneration", "TangoQwen2VL"),
    "tango_qwen3_vl": ("Qwen3VLForConditionalGeneration", "TangoQwen3VL"),
    "tango_internvl": ("InternVLForConditionalGeneration", "TangoInternVL"),
}
# the families whose adapter reads an original SigLIP pooling head (``tango_prune.apply(saliency_head=)``)
_SALIENCY_HEAD_CLASSES = ("LlavaOnevisionForConditionalGeneration",)

#: The method name of the unpruned baseline run.
NONE = "none"

#: Plugin arguments with their meaning (field overrides of the method config are accepted besides).
MODEL_ARGS: dict[str, str] = {
    "pretrained": "checkpoint directory or Hugging Face hub id (required)",
    "method": f"pruning method, or {NONE!r} for the unpruned model (default tango)",
    "retention": "fraction of visual tokens kept, in (0, 1] (default 0.1)",
    "variant": "LLaVA token layout: llava-onevision or llava-video (default: auto-detected)",
    "frames": "frames sampled uniformly per video (default: the family's, 32 for LLaVA, 16 for Qwen2.5-VL)",
    "config": "JSON file of a PruneConfig (PruneConfig.save); method/retention/overrides apply on top",
    "saliency_head": "LLaVA: original SigLIP checkpoint (directory or hub id) whose attention-pooling head "
    "scores the patches, the paper's setting (e.g. google/siglip-so400m-patch14-384)",
    "dtype": "auto, float32, bfloat16 or float16 (default auto)",
    "attn_implementation": "transformers attention backend, e.g. sdpa or flash_attention_2",
    "device_map": "transformers device_map (e.g. auto) instead of one device per process",
    "max_new_tokens": "default answer length when the task sets none (default 16)",
}

# Keys lmms-eval itself adds to every model's kwargs (``create_from_arg_string``'s additional config).
_HARNESS_KEYS = ("batch_size", "max_batch_size", "device")
_DTYPES = ("auto", "float32", "bfloat16", "float16")


def manifests() -> list[Any]:
    """The ``ModelManifest`` of every ``tango_*`` model id (the ``lmms_eval.models`` entry point)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(model_id=mid, simple_class_path=f"{__package__}.lmms_eval_model.{cls}")
        for mid, (_, cls) in MODEL_IDS.items()
    ]


def _config_class(method: str) -> type:
    import tango_prune as tp

    if method not in tp.methods():
        raise ValueError(f"model_args method must be {NONE!r} or one of {tp.methods()}, got {method!r}")
    return type(tp.make_config(method))


def _coerce_field(name: str, value: Any) -> Any:
    """lmms-eval parses ``a=1,b=true`` into numbers and bools itself; lists arrive as JSON strings."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def parse_model_args(model_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Validate the ``model_args`` of ``model_id``; returns the normalised plugin arguments.

    The result has every key of :data:`MODEL_ARGS` (``None`` where unset) plus ``model_class`` (the upstream
    class the id serves), ``batch_size``,
    ``device`` and ``overrides`` (config fields). Unknown keys, a missing ``pretrained``, an unknown method
    or a retention outside (0, 1] raise ``ValueError`` naming the argument.
    """
    if model_id not in MODEL_IDS:
        raise ValueError(f"model id must be one of {sorted(MODEL_IDS)}, got {model_id!r}")
    args = {k: v for k, v in kwargs.items() if v is not None}
    out: dict[str, Any] = {k: args.pop(k, None) for k in MODEL_ARGS}
    harness = {k: args.pop(k, None) for k in _HARNESS_KEYS}
    out["model_class"] = MODEL_IDS[model_id][0]
    if not out["pretrained"] or not isinstance(out["pretrained"], str):
        raise ValueError(f"model_args pretrained (a checkpoint directory or hub id) is required for {model_id}")
    if out["config"] is not None:
        if not os.path.isfile(str(out["config"])):
            raise ValueError(f"model_args config must be a PruneConfig JSON file, got {out['config']!r}")
        with open(str(out["config"]), encoding="utf-8") as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise ValueError(f"model_args config {out['config']!r} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("method"), str):
            raise ValueError(f"model_args config {out['config']!r} must hold a PruneConfig (with a 'method' key)")
        if out["method"] is not None and out["method"] != data["method"]:
            raise ValueError(
                f"model_args method={out['method']!r} contradicts config {out['config']!r} (method {data['method']!r})"
            )
        out["method"] = data["method"]
        out["config"] = data
    method = str(out["method"] if out["method"] is not None else "tango")
    out["method"] = method
    fields: set[str] = set()
    if method != NONE:
        fields = {f.name for f in dataclasses.fields(_config_class(method))} - {"retention"}
    overrides = {k: _coerce_field(k, args.pop(k)) for k in sorted(set(args) & fields)}
    if args:
        known = sorted(set(MODEL_ARGS) | fields)
        raise ValueError(
            f"unknown model_args {sorted(args)} for {model_id} (method {method!r}); expected some of {known}"
        )
    if method == NONE:
        if out["retention"] not in (None, 1, 1.0):
            raise ValueError(f"model_args retention must be unset or 1 with method={NONE!r}, got {out['retention']!r}")
        if out["config"] is not None:
            raise ValueError(f"model_args config cannot be combined with method={NONE!r}")
        out["retention"] = 1.0
    else:
        r = (
            out["retention"]
            if out["retention"] is not None
            else (out["config"].get("retention", 0.1) if out["config"] is not None else 0.1)
        )
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
            raise ValueError(f"model_args retention must be a number in (0, 1], got {r!r}")
        out["retention"] = float(r)
    if out["saliency_head"] is not None and out["model_class"] not in _SALIENCY_HEAD_CLASSES:
        raise ValueError(f"model_args saliency_head applies to LLaVA models only, got it for {model_id}")
    if out["variant"] is not None:
        from ..models import family_for_class

        variants = list(family_for_class(out["model_class"]).variants)
        if out["variant"] not in variants:
            raise ValueError(f"model_args variant must be one of {variants} for {model_id}, got {out['variant']!r}")
    for key in ("frames", "max_new_tokens"):
        check_int(f"model_args {key}", out[key], 1, optional=True)
    if out["dtype"] is not None and out["dtype"] not in _DTYPES:
        raise ValueError(f"model_args dtype must be one of {_DTYPES}, got {out['dtype']!r}")
    bs = harness["batch_size"] if harness["batch_size"] is not None else 1
    if str(bs) not in ("1",):
        # why: one request at a time keeps every answer independent of its batch neighbours (padding)
        raise ValueError(f"batch_size must be 1 for {model_id} (requests are answered one at a time), got {bs!r}")
    out["batch_size"] = 1
    out["device"] = harness["device"]
    out["overrides"] = overrides
    return out
