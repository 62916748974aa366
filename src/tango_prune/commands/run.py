"""``tango-prune run``: answer a question about a video with a pruned Hugging Face Video LLM.

Frames are decoded with PyAV (uniform sampling, real timestamps), resized and normalised as the model's
preprocessing config says, and the prompt is built with the tokenizer's chat template; video preprocessing
is done here rather than by the upstream video processors because those require torchvision. Prints the
answer, the visual token counts before/after pruning and the time split vision / pruning / prefill / decode.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch

from ._checks import load_hf_config, load_pretrained, positive_int, resolve_device

NAME = "run"
HELP = "answer a question about a video with a pruned Hugging Face Video LLM"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``tango-prune run``."""
    parser.add_argument(
        "--model", required=True, help="directory of a Hugging Face checkpoint (config + weights + tokenizer)"
    )
    parser.add_argument("--video", required=True, help="video file (anything PyAV decodes)")
    parser.add_argument("--question", required=True, help="question about the video")
    parser.add_argument("--method", default="tango", help="pruning method (default tango)")
    parser.add_argument("--retention", type=float, default=0.1, help="fraction of visual tokens kept (default 0.1)")
    parser.add_argument(
        "--frames",
        type=positive_int,
        default=None,
        help="frames sampled uniformly (default: the model family's, 32 for LLaVA, 16 for Qwen2.5-VL)",
    )
    parser.add_argument("--max-new-tokens", type=positive_int, default=32, help="answer length limit (default 32)")
    parser.add_argument("--variant", default=None, help="LLaVA token layout: llava-onevision or llava-video")
    parser.add_argument(
        "--saliency-head",
        default=None,
        metavar="DIR_OR_HUB_ID",
        help="LLaVA: score patches with this original SigLIP checkpoint's post_layernorm + "
        "attention-pooling head, the paper's setting (e.g. google/siglip-so400m-patch14-384)",
    )
    parser.add_argument(
        "--no-prune",
        action="store_true",
        help="keep every visual token (baseline: the unpruned model's logits, same time split)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (default)")


def _load_config(model_dir: str) -> tuple[Any, str]:
    from ..models import SUPPORTED

    config = load_hf_config(model_dir, "--model")
    archs = list(getattr(config, "architectures", None) or [])
    cls = next((a for a in archs if a in SUPPORTED), None)
    if cls is None:
        raise ValueError(
            f"--model: unsupported model class {archs or type(config).__name__}; supported: {sorted(SUPPORTED)}"
        )
    return config, cls


def _preprocessing(model_dir: str, family: Any) -> tuple[list[float], list[float]]:
    """Normalisation mean/std from the checkpoint's (video) preprocessor config, else the family default."""
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            if "image_mean" in data and "image_std" in data:
                return list(data["image_mean"]), list(data["image_std"])
    return list(family.normalisation[0]), list(family.normalisation[1])


class _FirstToken:
    """Logits processor that records when the first token's logits exist (end of prefill)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.t: float | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.t is None:
            if self.cuda:
                torch.cuda.synchronize()
            self.t = time.perf_counter()
        return scores


def run(args: argparse.Namespace) -> int:
    """Load, prune, generate, print; ``ValueError`` for bad input (printed as one line by the CLI)."""
    import transformers
    from transformers import AutoTokenizer, LogitsProcessorList

    import tango_prune as tp

    from ..video import load_video

    if not 0 < args.retention <= 1:
        raise ValueError(f"--retention must be in (0, 1], got {args.retention}")
    if args.method not in tp.methods():
        raise ValueError(f"--method must be one of {tp.methods()}, got {args.method!r}")
    device = resolve_device(args.device, "--device")
    config, cls = _load_config(args.model)
    family = tp.models.family_for_class(cls)
    if args.variant is not None and args.variant not in family.variants:
        raise ValueError(f"--variant must be one of {list(family.variants)} for {cls}, got {args.variant!r}")
    frames_n = args.frames or family.default_frames
    frames, ts = load_video(args.video, frames_n)
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    except Exception as exc:  # missing or broken tokenizer files
        raise ValueError(f"--model: cannot load a tokenizer from {args.model!r}: {exc}") from None
    model = load_pretrained(getattr(transformers, cls), args.model, "--model").to(device).eval()
    mean, std = _preprocessing(args.model, family)
    inputs = family.inputs_from_frames(config, tokenizer, frames, ts, args.question, mean, std)
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    if inputs["pixel_values_videos"].is_floating_point():
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(model.dtype)
    if args.no_prune:
        # why: every family's identity path (retention 1, no merging, no static collapse) reproduces the
        # unpruned logits (tested per family), works for families whose upstream class takes no video
        # argument, and splits the time the same way as the pruned run
        identity = tp.TangoConfig(retention=1.0, merge_context=False, tau_static=1.0)
        tp.apply(model, identity, variant=args.variant, saliency_head=args.saliency_head)
    else:
        stages: tuple = ()
        if args.method == "tango":
            # the family's published preset (with its intra-LLM stage), adapted to this checkpoint's geometry
            cfg, notes = family.tango_config(model.config, args.variant, args.retention)
            stages = family.stage_configs(model.config, args.variant)
            for note in notes:
                print(f"note: {note}")
        else:
            cfg = tp.make_config(args.method, retention=args.retention)
        tp.apply(model, cfg, variant=args.variant, saliency_head=args.saliency_head, stages=stages)
    first = _FirstToken(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=args.max_new_tokens, do_sample=False, logits_processor=LogitsProcessorList([first])
        )
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    new = out[0, inputs["input_ids"].shape[1] :]
    answer = str(tokenizer.decode(new, skip_special_tokens=True)).strip()
    st = tp.models.stats(model)
    ttft = (first.t or time.perf_counter()) - start
    prefill = max(0.0, ttft - st["vision_s"] - st["prune_s"])
    print(f"answer: {answer}")
    print(f"frames: {len(ts)} at {', '.join(f'{t:.2f}' for t in ts)} s")
    print(
        f"visual tokens: {st['visual_tokens_before']} -> {st['visual_tokens_after']}"
        + ("" if args.no_prune else f" ({args.method}, retention {args.retention})")
    )
    print(
        f"time: vision {st['vision_s'] * 1e3:.1f} ms | pruning {st['prune_s'] * 1e3:.1f} ms | "
        f"prefill {prefill * 1e3:.1f} ms | decode {(total - ttft) * 1e3:.1f} ms ({len(new)} tokens)"
    )
    return 0
