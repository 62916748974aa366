"""The paper's saliency source on real LLaVA checkpoints: the original SigLIP attention-pooling head.

The published Tango code scores each patch by the attention that the **original SigLIP checkpoint's**
attention-pooling probe pays to it, after that checkpoint's ``post_layernorm``, applied to the features the
LLM receives from the LLaVA vision tower. Hugging Face LLaVA-OneVision / LLaVA-Video checkpoints ship the
tower without that head, so by default the adapter falls back to the mean attention each patch receives
(and warns). ``tango_prune.apply(model, ..., saliency_head=SOURCE)`` restores the paper's setting: SOURCE is a
local directory or a hub id (``"google/siglip-so400m-patch14-384"``) of a ``SiglipModel`` or
``SiglipVisionModel`` checkpoint, and only ``post_layernorm`` and ``head`` are read from its safetensors
files (a partial read: the towers' weights are never loaded).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import torch

__all__ = ["SaliencyHead", "load_saliency_head"]

# Keys of the two modules in SiglipVisionModel / SiglipModel checkpoints (and a bare vision transformer).
_KEY = re.compile(r"^(?:.*\.)?(?:vision_model\.)?(post_layernorm|head)\.(.+)$")


class SaliencyHead(torch.nn.Module):
    """``post_layernorm`` + attention-pooling ``head`` of a SigLIP vision model, nothing else."""

    def __init__(self, config: Any) -> None:
        from transformers.models.siglip.modeling_siglip import SiglipMultiheadAttentionPoolingHead

        super().__init__()
        self.config = config
        self.post_layernorm = torch.nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = SiglipMultiheadAttentionPoolingHead(config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Head-averaged attention of the probe over the patches of ``hidden`` (N, P, D): fp32 (N, P)."""
        from .llava_onevision import siglip_head_saliency

        return siglip_head_saliency(self, hidden)


def _resolve(source: str | os.PathLike) -> str:
    """A local directory holding the checkpoint: ``source`` itself, or a hub download of just the config and
    safetensors files."""
    path = os.fspath(source)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise ValueError(f"saliency_head must be a checkpoint directory or a hub id, got the file {path!r}")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(path, allow_patterns=["config.json", "*.safetensors", "*.safetensors.index.json"])
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, bad id: one clear error
        raise ValueError(
            f"saliency_head: {path!r} is neither a local directory nor a downloadable hub id "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None


def _vision_config(directory: str) -> Any:
    from transformers import SiglipVisionConfig

    try:
        with open(os.path.join(directory, "config.json"), encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"saliency_head: {directory!r} has no readable config.json ({exc})") from None
    if raw.get("model_type") == "siglip":
        raw = dict(raw.get("vision_config") or {})
    elif raw.get("model_type") not in (None, "siglip_vision_model"):
        raise ValueError(
            f"saliency_head: {directory!r} is a {raw.get('model_type')!r} checkpoint; expected a SigLIP "
            "(siglip or siglip_vision_model) checkpoint"
        )
    raw.pop("model_type", None)
    return SiglipVisionConfig(**raw)


def _shards(directory: str) -> list[str]:
    index = [f for f in os.listdir(directory) if f.endswith(".safetensors.index.json")]
    if index:
        with open(os.path.join(directory, index[0]), encoding="utf-8") as fh:
            weight_map = json.load(fh).get("weight_map", {})
        files = sorted({f for k, f in weight_map.items() if _KEY.match(k)})
    else:
        files = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
    if not files:
        raise ValueError(f"saliency_head: no safetensors weights of post_layernorm/head in {directory!r}")
    return [os.path.join(directory, f) for f in files]


def load_saliency_head(
    source: str | os.PathLike, hidden_size: int, *, device: Any = None, dtype: torch.dtype | None = None
) -> SaliencyHead:
    """Read ``post_layernorm`` and ``head`` from the SigLIP checkpoint ``source`` (directory or hub id).

    ``hidden_size`` is the width of the features the head will score (the LLaVA vision tower's); the head's
    shapes are validated against it and against the checkpoint's own config. Returns a :class:`SaliencyHead`
    in eval mode on ``device`` / ``dtype``. Every problem is a ``ValueError`` naming ``saliency_head``.
    """
    from safetensors import safe_open

    directory = _resolve(source)
    config = _vision_config(directory)
    if config.hidden_size != hidden_size:
        raise ValueError(
            f"saliency_head: the checkpoint's hidden_size is {config.hidden_size}, but the model's "
            f"vision features have {hidden_size}"
        )
    state: dict[str, torch.Tensor] = {}
    for path in _shards(directory):
        try:
            with safe_open(path, framework="pt") as fh:
                for key in fh.keys():
                    m = _KEY.match(key)
                    if m and not key.startswith("text_model."):
                        state[f"{m.group(1)}.{m.group(2)}"] = fh.get_tensor(key)
        except Exception as exc:  # noqa: BLE001 - truncated or foreign files
            raise ValueError(f"saliency_head: cannot read {path!r} ({type(exc).__name__}: {exc})") from None
    module = SaliencyHead(config)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(
            f"saliency_head: {directory!r} lacks {missing[:4]}{' ...' if len(missing) > 4 else ''}; a "
            "SigLIP checkpoint with its attention-pooling head (vision_use_head) is needed"
        )
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise ValueError(
                f"saliency_head: {k} has shape {tuple(state[k].shape)} in the checkpoint, expected {tuple(v.shape)}"
            )
    module.load_state_dict({k: state[k] for k in expected}, strict=True)
    return module.to(device=device, dtype=dtype).eval()
