"""Pruning inside unmodified upstream ``transformers`` Video LLMs: :func:`apply`, :func:`remove`, :func:`stats`.

``apply`` patches one model *instance* (never its class): its ``forward`` and ``generate`` attributes are
replaced by thin wrappers that, when a call carries ``pixel_values_videos``, encode the videos with the
upstream code, prune each video with the configured method (any registered one) and hand the shorter
sequence back to the upstream ``forward`` through its ``mm_encoder_outputs`` argument. Calls without videos
go straight through. ``remove`` deletes the instance attributes, so the class methods are visible again and
behaviour is bit-identical to before.

Per-call metadata: pass ``video_timestamps=`` (one sequence of frame times in seconds per video) to
``forward``/``generate``; it is consumed by the wrapper. Without it LLaVA uses 0, 1, ..., T-1 seconds and
Qwen2.5-VL uses the processor's ``second_per_grid_ts``.

``generate`` returns the original ``input_ids`` followed by the new tokens, as without pruning, so the usual
``out[:, inputs.input_ids.shape[1]:]`` slicing keeps working. ``forward`` returns logits for the pruned
sequence.
"""

from __future__ import annotations

import copy
import functools
import inspect
import warnings
from typing import Any

import torch

from ..api import make_config
from ..config import PruneConfig
from .base import FAMILIES, ModelFamily, StageConfig, family_for, family_for_class, register_family
from .common import STATE_ATTR, PatchState

__all__ = [
    "apply",
    "remove",
    "stats",
    "last_results",
    "stages",
    "reuse_encoding",
    "last_encoding",
    "on_phase",
    "is_applied",
    "SUPPORTED",
    "ModelFamily",
    "FAMILIES",
    "register_family",
    "family_for",
    "family_for_class",
]

#: Upstream classes :func:`apply` accepts -> their family (see :mod:`.base`; one module and one line each).
SUPPORTED = FAMILIES


def _make_adapter(model: Any, variant: str | None, saliency_head: Any = None) -> Any:
    return family_for(model)(model, variant, saliency_head)


def _state(model: Any) -> PatchState:
    """The patch state of ``model``; ``ValueError`` when :func:`apply` has not patched it."""
    state = getattr(model, STATE_ATTR, None)
    if not isinstance(state, PatchState):
        raise ValueError("model is not patched by tango_prune.apply")
    return state


def is_applied(model: Any) -> bool:
    """True when :func:`apply` has patched ``model`` and :func:`remove` has not undone it."""
    return isinstance(getattr(model, STATE_ATTR, None), PatchState)


def apply(
    model: Any,
    config: PruneConfig | str | None = None,
    *,
    name: str | None = None,
    retention: float | None = None,
    variant: str | None = None,
    saliency_head: Any = None,
    stages: Any = (),
    **fields: Any,
) -> Any:
    """Enable visual token pruning on an upstream Hugging Face Video LLM instance; returns the same model.

    ``config`` is a method config (e.g. ``TangoConfig.preset("llava-onevision", retention=0.1)``) or a
    method name; alternatively ``name="topk", retention=0.1``. Extra keyword ``fields`` override config
    fields. ``variant`` selects the LLaVA token layout, ``"llava-onevision"`` or ``"llava-video"`` (default:
    ``"llava-video"`` when the checkpoint path names LLaVA-Video, else OneVision). ``saliency_head`` (LLaVA
    only) is a directory or hub id of an original SigLIP checkpoint whose ``post_layernorm`` and
    attention-pooling ``head`` score the patches, the paper's setting (e.g.
    ``"google/siglip-so400m-patch14-384"``); without it, a checkpoint that has no head falls back to the
    mean received attention. ``stages`` are intra-LLM stage configs
    (:class:`~tango_prune.models.base.StageConfig`, e.g. ``FastVConfig()``) that run after the pre-LLM
    method; a family without such a stage raises ``ValueError``.
    Applying twice raises ``ValueError``; call :func:`remove` first.
    """
    if is_applied(model):
        raise ValueError("model is already patched by tango_prune.apply; call tango_prune.remove(model) first")
    if config is not None and name is not None:
        raise ValueError("pass either config or name, not both")
    if retention is not None:
        fields["retention"] = retention
    if stages is None:
        stages = ()
    elif isinstance(stages, StageConfig) or not isinstance(stages, (list, tuple)):
        stages = (stages,)  # one config, or a mistake the check below names
    stages = tuple(stages)
    for sc in stages:
        if not isinstance(sc, StageConfig):
            raise ValueError(f"stages must hold intra-LLM stage configs (StageConfig instances), got {sc!r}")
    cfg = make_config(config if config is not None else name, **fields)
    adapter = _make_adapter(model, variant, saliency_head)
    state = PatchState(
        adapter=adapter, config=cfg, originals={}, variant=variant, saliency_head=saliency_head, stage_configs=stages
    )
    orig_forward = model.forward  # bound class method
    orig_generate = model.generate
    sig = inspect.signature(orig_forward)
    params = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]

    @functools.wraps(orig_forward)
    def forward(*args: Any, **kwargs: Any) -> Any:
        for p, a in zip(params, args):
            kwargs[p.name] = a
        rewritten = kwargs.get("pixel_values_videos") is not None
        if rewritten:
            kwargs = adapter.rewrite(model, state, kwargs)
        else:
            kwargs.pop("video_timestamps", None)
        if not state.stages:
            return orig_forward(**kwargs)
        for stage in state.stages:
            stage.enter(kwargs, rewritten)
        out = None
        try:
            out = orig_forward(**kwargs)
        finally:
            for stage in state.stages:
                stage.exit(out)
        return out

    @functools.wraps(orig_generate)
    def generate(*args: Any, **kwargs: Any) -> Any:
        if args:
            kwargs["inputs"] = args[0]
            if len(args) > 1:
                raise ValueError("generate: pass arguments after inputs by keyword")
        if kwargs.get("inputs") is not None:
            kwargs["input_ids"] = kwargs.pop("inputs")
        kwargs.pop("inputs", None)
        if kwargs.get("pixel_values_videos") is None:
            kwargs.pop("video_timestamps", None)
            return orig_generate(**kwargs)
        original_ids = kwargs["input_ids"] if kwargs.get("input_ids") is not None else None
        kwargs = adapter.rewrite(model, state, kwargs)
        out = orig_generate(**kwargs)
        return _restore_prompt(out, original_ids, kwargs["input_ids"].shape[1])

    # Instance attributes that already existed (e.g. accelerate's dispatch hook replaces ``forward`` on the
    # instance) are remembered so that ``remove`` puts them back instead of deleting them.
    state.originals = {attr: model.__dict__[attr] for attr in ("forward", "generate") if attr in model.__dict__}
    adapter.install(model, state)  # may raise ValueError: nothing is patched yet
    setattr(model, STATE_ATTR, state)
    model.forward = forward
    model.generate = generate
    # why: the wrappers above are closures over this instance; a plain deepcopy would copy them as they are
    # and the copy would run the original's weights. copy.deepcopy looks __deepcopy__ up on the instance.
    model.__deepcopy__ = functools.partial(_deepcopy_patched, model)
    return model


def _deepcopy_patched(model: Any, memo: dict[int, Any]) -> Any:
    """``copy.deepcopy`` of a patched model: an independent copy, patched with the same config."""
    state = getattr(model, STATE_ATTR)
    cfg, variant, head, last = state.config, state.variant, state.saliency_head, dict(state.stats)
    stage_cfgs = state.stage_configs
    remove(model)
    try:
        clone = copy.deepcopy(model, memo)
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the adapter warned once already at the first apply
            apply(model, cfg, variant=variant, saliency_head=head, stages=stage_cfgs)
        getattr(model, STATE_ATTR).stats.update(last)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        apply(clone, cfg, variant=variant, saliency_head=head, stages=stage_cfgs)
    return clone


def _restore_prompt(out: Any, original_ids: torch.Tensor | None, pruned_len: int) -> Any:
    """Put the caller's unpruned prompt back in front of the generated tokens."""
    if original_ids is None:
        return out
    seq = out if isinstance(out, torch.Tensor) else out.sequences
    reps = seq.shape[0] // original_ids.shape[0]  # num_return_sequences / beams expand rows
    full = torch.cat([original_ids.repeat_interleave(reps, dim=0).to(seq.device), seq[:, pruned_len:]], dim=1)
    if isinstance(out, torch.Tensor):
        return full
    out.sequences = full
    return out


def remove(model: Any) -> Any:
    """Undo :func:`apply`: drop the instance patches and hooks; the model behaves exactly as before."""
    state = _state(model)
    state.adapter.uninstall(model, state)
    for attr in ("forward", "generate"):
        if attr in state.originals:
            model.__dict__[attr] = state.originals[attr]
        else:
            model.__dict__.pop(attr, None)
    model.__dict__.pop("__deepcopy__", None)
    delattr(model, STATE_ATTR)
    return model


def stats(model: Any) -> dict[str, Any]:
    """Figures of the last prefill with videos: ``vision_s``, ``prune_s``, ``visual_tokens_before``,
    ``visual_tokens_after`` (tokens reaching the LLM, newlines included), plus adapter extras."""
    state = _state(model)
    return dict(state.stats)


def last_results(model: Any) -> list[Any]:
    """The :class:`~tango_prune.PruneResult` of every video of the last call with videos, in input order
    (kept indices into each video's (T, H, W) grid, their positions, features and the method's ``info``)."""
    state = _state(model)
    return list(state.last_results)


def reuse_encoding(model: Any, encoded: Any) -> None:
    """Serve ``encoded`` (the output of the model family's ``encode`` for the videos of the coming calls)
    to every later call instead of running the vision encoder again; ``None`` switches it off.

    For benchmarks that time many methods on one video: the calls must carry the same videos as the ones
    that were encoded (only their shapes are checked downstream).
    """
    state = _state(model)
    state.encoded = encoded


def last_encoding(model: Any) -> Any:
    """The encoder output (the family's ``encode`` result) of the last call with videos, computed or served
    by :func:`reuse_encoding`; ``None`` before the first such call. Hand it to :func:`reuse_encoding` to
    serve later calls with the same videos (an evaluation scoring many methods on one batch)."""
    return _state(model).last_encoded


def on_phase(model: Any, fn: Any) -> None:
    """Call ``fn(phase)`` at the phase boundaries of every pruned call of ``model``: ``"vision_start"`` (before
    the encoder), ``"vision_end"`` (encoder and saliency done), ``"prune_end"`` (selection, merging and the
    shortened inputs done; the LLM comes next). ``None`` removes every callback.

    For profilers that place their own timing points (e.g. CUDA events, ``benchmarks/gpu_profile.py``)
    without wrapping the model's methods.
    """
    state = _state(model)
    if fn is None:
        state.phase_callbacks.clear()
    elif not callable(fn):
        raise ValueError(f"fn must be callable or None, got {fn!r}")
    else:
        state.phase_callbacks.append(fn)


def stages(model: Any) -> tuple[Any, ...]:
    """The intra-LLM stages the model's family installed for its config (e.g. the LLaVA-Video FastV stage,
    whose ``last_scores`` and ``plan`` describe the last prefill)."""
    state = _state(model)
    return tuple(state.stages)
