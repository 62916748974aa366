"""vLLM plugin: every registered tango_prune method inside an unmodified vLLM.

vLLM loads :func:`tango_prune.vllm.plugin.register` (entry point group ``vllm.general_plugins``) in every
process; it registers one pruning subclass of vLLM's model class per supported family under the
architecture names of :data:`ARCHITECTURES`. A user selects one with ``hf_overrides`` and configures the
method in the same dict (see docs/vllm.md)::

    LLM("Qwen/Qwen2.5-VL-7B-Instruct", hf_overrides={
        "architectures": ["TangoQwen2_5_VLForConditionalGeneration"],
        "tango_prune": {"method": "tango", "retention": 0.1}})

This package imports nothing from vLLM at import time; the family modules do.
"""

from .config import ARCHITECTURES, CONFIG_KEY, VllmPruneConfig, parse_config

__all__ = ["ARCHITECTURES", "CONFIG_KEY", "VllmPruneConfig", "parse_config"]
