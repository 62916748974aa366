"""The ``vllm.general_plugins`` entry point: vLLM calls :func:`register` in every process it starts."""

from __future__ import annotations

from .config import ARCHITECTURES
from .runner import patch_cpu_runner

__all__ = ["register"]


def register() -> None:
    """Register the plugin's model classes (lazily, by ``"module:Class"``) with vLLM's ``ModelRegistry``
    and apply the CPU-runner fix; idempotent."""
    from vllm import ModelRegistry

    for arch, (target, _upstream) in ARCHITECTURES.items():
        if arch not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(arch, target)
    patch_cpu_runner()
