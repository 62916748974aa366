"""Installed by ``make venv-vllm`` (with a .pth that imports it) into the vLLM test environment only.

The PyPI torchvision wheel is a CUDA build: its C ops never load next to CPU torch, and its import then dies
registering fake kernels for two of them (``operator torchvision::nms does not exist``). The HF Qwen video
processors only need torchvision's pure-Python transforms, so the two schemas are declared here, before
torchvision is imported; its C ops stay unavailable (nothing in the tests calls them).
"""

import torch

_LIB = torch.library.Library("torchvision", "FRAGMENT")
for _name in ("nms", "qnms"):
    _LIB.define(f"{_name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
