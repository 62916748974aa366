"""The model-family contract and its registry.

A *model family* is one upstream ``transformers`` model class (LLaVA-OneVision, Qwen2.5-VL, ...) and
everything this library needs to know about it, in **one module**: a subclass of :class:`ModelFamily` that

- detects its variant (e.g. the LLaVA-Video token layout) from a model or a config;
- encodes videos through the narrowest hook, computes the saliency and re-inserts the kept tokens with
  their positions (:meth:`ModelFamily.rewrite`, called by the generic patch layer with each call's kwargs);
- builds the model inputs from decoded frames (:meth:`ModelFamily.inputs_from_frames`, used by
  ``tango-prune run``), with its normalisation constants and default frame count;
- gives its default Tango configuration for a checkpoint's geometry (:meth:`ModelFamily.tango_config`);
- drives the benchmark (:meth:`ModelFamily.bench_inputs` and the ``bench_*`` methods);
- opts into intra-LLM stages (:meth:`ModelFamily.install` / :meth:`ModelFamily.uninstall`).

The generic patch layer (:func:`tango_prune.apply`, ``remove``, ``stats``) knows no family: it looks the
model's class up in :data:`FAMILIES`. Adding a family is one module plus one line in :data:`FAMILIES`
(or a call to :func:`register_family` from outside the package).
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import numpy as np
import torch

__all__ = ["ModelFamily", "Stage", "FAMILIES", "register_family", "family_for", "family_for_class", "supported_classes"]


class Stage:
    """An intra-LLM stage that a family opts into (e.g. FastV): hooks inside the language model plus the
    per-call state they need. The generic patch layer calls :meth:`enter` before and :meth:`exit` after every
    upstream ``forward`` of a patched model, knowing nothing else about the stage."""

    def enter(self, kwargs: dict[str, Any], rewritten: bool) -> None:
        """Before a forward; ``rewritten`` is True when this forward's videos were just pruned."""

    def exit(self, out: Any) -> None:
        """After a forward (``out`` is None when it raised)."""

    def remove(self) -> None:
        """Remove the stage's hooks."""


class StageConfig:
    """Base of the configs of intra-LLM stages (e.g. :class:`~tango_prune.models.fastv.FastVConfig`), passed
    as ``apply(..., stages=[...])``. A family installs the ones whose type is in its ``stage_types``."""

    #: the stage's name in messages
    stage_name: ClassVar[str] = "stage"


class ModelFamily:
    """Base class of the model families; one instance serves one patched model (it holds no per-call state:
    that lives in the patch state, which is passed to every method that needs it)."""

    #: upstream ``transformers`` class name this family handles
    model_class: ClassVar[str] = ""
    #: token layouts / variants accepted by ``apply(..., variant=)``; the first is the default
    variants: ClassVar[tuple[str, ...]] = ()
    #: frames ``tango-prune run`` samples when ``--frames`` is not given
    default_frames: ClassVar[int] = 32
    #: (mean, std) per channel when the checkpoint's preprocessor config has none
    normalisation: ClassVar[tuple[tuple[float, ...], tuple[float, ...]]] = ((0.5,) * 3, (0.5,) * 3)
    #: the intra-LLM stage configs this family can install (``apply(..., stages=[...])``)
    stage_types: ClassVar[tuple[type, ...]] = ()

    def __init__(self, model: Any, variant: str | None = None, saliency_head: Any = None) -> None:
        raise NotImplementedError

    # -- detection -------------------------------------------------------------------------------------
    @classmethod
    def detect_variant(cls, model: Any) -> str:
        """The variant of ``model`` (a model instance or its config); default: the family's first variant."""
        return cls.variants[0]

    # -- the call rewrite (hook, saliency, re-insertion) ------------------------------------------------
    def rewrite(self, model: Any, state: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Encode and prune the videos of one call; return the kwargs for the upstream forward/generate."""
        raise NotImplementedError

    def install(self, model: Any, state: Any) -> None:
        """Install the intra-LLM stages ``apply`` was given (``state.stage_configs``) into ``state.stages``.

        Raises ``ValueError`` before anything is patched for a stage this family does not have. Families
        with stages check with this base method, then build theirs."""
        for sc in state.stage_configs:
            if not isinstance(sc, self.stage_types):
                raise ValueError(f"stages: {self.model_class} has no intra-LLM {sc.stage_name} stage")

    def uninstall(self, model: Any, state: Any) -> None:
        """Remove the stages :meth:`install` installed."""
        for stage in state.stages:
            stage.remove()
        state.stages.clear()

    # -- inputs from decoded frames (tango-prune run) --------------------------------------------------
    @classmethod
    def inputs_from_frames(
        cls, config: Any, tokenizer: Any, frames: np.ndarray, timestamps: np.ndarray, question: str, mean: Any, std: Any
    ) -> dict[str, Any]:
        """``generate`` kwargs for one video (uint8 frames (T, H, W, 3), times in seconds) and a question."""
        raise NotImplementedError

    @classmethod
    def tango_config(cls, config: Any, variant: str | None, retention: float) -> tuple[Any, list[str]]:
        """The family's published Tango preset adapted to this checkpoint's geometry; returns
        ``(TangoConfig, notes)`` where ``notes`` say what was adapted."""
        raise NotImplementedError

    @classmethod
    def stage_configs(cls, config: Any, variant: str | None) -> tuple[Any, ...]:
        """The intra-LLM stages the family's published preset runs on this checkpoint (pass them to
        ``apply(..., stages=...)``); :meth:`tango_config` accounts for them. Default: none."""
        return ()

    # -- benchmark driver -------------------------------------------------------------------------------
    @classmethod
    def bench_frame_size(cls, model: Any, requested: int | None, default: int | None = None) -> int:
        """Frame size in pixels for the benchmark."""
        raise NotImplementedError

    @classmethod
    def bench_inputs(cls, model: Any, spec: Any, size: int, device: torch.device) -> Any:
        """The benchmark's :class:`~tango_prune.bench.families.BenchInputs` for this family."""
        raise NotImplementedError

    @classmethod
    def bench_upstream_encode(cls, model: Any, inp: Any) -> dict[str, Any]:
        """The unpruned run's encoder pass: the upstream encoder method on ``inp``'s videos, returned as the
        ``mm_encoder_outputs`` dict its upstream ``generate`` takes (the benchmark times this call)."""
        raise NotImplementedError


#: Upstream class name -> ``"module:Class"`` of its family (modules under :mod:`tango_prune.models`).
#: Imported lazily, so ``import tango_prune`` stays light. A new family is one module plus one line here.
FAMILIES: dict[str, str] = {
    "LlavaOnevisionForConditionalGeneration": "llava_onevision:LlavaOnevisionAdapter",
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl:Qwen25VLAdapter",
    "Qwen2VLForConditionalGeneration": "qwen2_vl:Qwen2VLAdapter",
    "Qwen3VLForConditionalGeneration": "qwen3_vl:Qwen3VLAdapter",
    "InternVLForConditionalGeneration": "internvl:InternVLAdapter",
}


def register_family(model_class: str, family: str | type[ModelFamily]) -> None:
    """Register a family for an upstream class name: a :class:`ModelFamily` subclass, or ``"module:Class"``
    (a module path; relative names are taken inside :mod:`tango_prune.models`)."""
    if not isinstance(model_class, str) or not model_class:
        raise ValueError(f"model_class must be a class name, got {model_class!r}")
    if isinstance(family, type):
        if not issubclass(family, ModelFamily):
            raise ValueError(f"family must subclass ModelFamily, got {family!r}")
        _LOADED[model_class] = family
        FAMILIES[model_class] = f"{family.__module__}:{family.__qualname__}"
        return
    if not isinstance(family, str) or ":" not in family:
        raise ValueError(f"family must be a ModelFamily subclass or 'module:Class', got {family!r}")
    FAMILIES[model_class] = family
    _LOADED.pop(model_class, None)


_LOADED: dict[str, type[ModelFamily]] = {}


def supported_classes() -> list[str]:
    """Sorted upstream class names that :func:`tango_prune.apply` accepts."""
    return sorted(FAMILIES)


def family_for_class(model_class: str) -> type[ModelFamily]:
    """The family registered for an upstream class name; ``ValueError`` naming the supported classes."""
    if model_class not in FAMILIES:
        raise ValueError(f"model must be one of {supported_classes()}, got {model_class}")
    if model_class not in _LOADED:
        module, name = FAMILIES[model_class].split(":")
        mod = importlib.import_module(module if "." in module else f"{__package__}.{module}")
        _LOADED[model_class] = getattr(mod, name)
    return _LOADED[model_class]


def family_for(model: Any) -> type[ModelFamily]:
    """The family of a model instance (by its class name)."""
    return family_for_class(type(model).__name__)
