"""Turning vLLM's model-runner pruning path on for the plugin's models (and the CPU runner's bug).

vLLM's runners split appended position channels off media embeddings and call the model's
``recompute_mrope_positions`` only when ``multimodal_config.is_multimodal_pruning_enabled()``, i.e. when
``video_pruning_rate > 0`` (vLLM's own EVS switch). The plugin's model classes override everything that
reads that rate, so in the worker's config they set it to ``1 - retention`` (a small positive rate at
retention 1): the runner then takes the pruning path, and nothing prunes twice.

vLLM 0.32's ``CPUModelRunner.load_model`` never sets ``is_multimodal_pruning_enabled`` (the GPU runner does,
right after loading), so pruned embeddings reach the LLM with their position channels (``shape mismatch``).
:func:`patch_cpu_runner` wraps it to set the flag the way the GPU runner does, on the versions that need it.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = [
    "enable_runner_pruning",
    "user_video_pruning_rate",
    "check_no_evs",
    "patch_cpu_runner",
    "CPU_RUNNER_FIXED_IN",
]

SET_BY_PLUGIN = "_tango_prune_video_pruning_rate"

#: first vLLM version whose CPU runner sets the flag itself (none yet: checked up to 0.32.x)
CPU_RUNNER_FIXED_IN: tuple[int, ...] | None = None


def enable_runner_pruning(vllm_config: Any, retention: float) -> None:
    """Make ``multimodal_config.is_multimodal_pruning_enabled()`` true in this (worker) process."""
    mm = vllm_config.model_config.multimodal_config
    if mm is None or mm.is_multimodal_pruning_enabled():
        return
    rate = min(max(1.0 - retention, 1e-6), 1.0 - 1e-6)
    object.__setattr__(mm, "video_pruning_rate", rate)
    object.__setattr__(mm, SET_BY_PLUGIN, rate)  # why: an in-process frontend shares this config object


def user_video_pruning_rate(mm_config: Any) -> float | None:
    """The ``video_pruning_rate`` the user set (None when unset or set by :func:`enable_runner_pruning`)."""
    rate = getattr(mm_config, "video_pruning_rate", None)
    if not rate or rate == getattr(mm_config, SET_BY_PLUGIN, None):
        return None
    return rate


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.split("+")[0].split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def patch_cpu_runner() -> bool:
    """Wrap ``CPUModelRunner.load_model`` (once) so that it sets ``is_multimodal_pruning_enabled`` like the
    GPU runner; True when the patch is in place. A no-op on vLLM versions at or after
    :data:`CPU_RUNNER_FIXED_IN` and where the CPU runner is unavailable."""
    import vllm

    if CPU_RUNNER_FIXED_IN is not None and _version(vllm.__version__) >= CPU_RUNNER_FIXED_IN:
        return False
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner
    except Exception:  # why: the module imports CPU-only pieces; GPU builds may lack them
        return False
    original = CPUModelRunner.load_model
    if getattr(original, "_tango_prune_patched", False):
        return True

    @functools.wraps(original)
    def load_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        from vllm.model_executor.models.interfaces import supports_multimodal_pruning

        mm = self.model_config.multimodal_config
        self.is_multimodal_pruning_enabled = (
            supports_multimodal_pruning(self.get_model()) and mm is not None and mm.is_multimodal_pruning_enabled()
        )
        return out

    load_model._tango_prune_patched = True  # type: ignore[attr-defined]
    CPUModelRunner.load_model = load_model  # type: ignore[method-assign]
    return True


def check_no_evs(mm_config: Any) -> None:
    """``ValueError`` when vLLM's own video pruning (EVS) is switched on next to the plugin."""
    rate = user_video_pruning_rate(mm_config)
    if rate:
        raise ValueError(
            f"video_pruning_rate={rate}: vLLM's own video pruning cannot be combined with tango_prune; "
            "leave video_pruning_rate unset and set tango_prune.retention instead"
        )
