"""``tango-prune run``: answer a question about a video with a pruned Hugging Face Video LLM.

Frames are decoded with PyAV (uniform sampling, real timestamps), resized and normalised as the model's
preprocessing config says, and the prompt is built with the tokenizer's chat template; video preprocessing
is done here rather than by the upstream video processors because those require torchvision. Prints the
answer, the visual token counts before/after pruning and the time split vision / pruning / prefill / decode.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

import numpy as np
import torch

from ._checks import load_hf_config, load_pretrained, positive_int, resolve_device

NAME = "run"
HELP = "answer a question about a video with a pruned Hugging Face Video LLM"

_VARIANTS = {"llava": ("llava-onevision", "llava-video"), "qwen": ("qwen2.5-vl",)}
_DEFAULT_MEAN_STD = {"llava": ([0.5] * 3, [0.5] * 3),
                     "qwen": ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``tango-prune run``."""
    parser.add_argument("--model", required=True, help="directory of a Hugging Face checkpoint (config + weights + tokenizer)")
    parser.add_argument("--video", required=True, help="video file (anything PyAV decodes)")
    parser.add_argument("--question", required=True, help="question about the video")
    parser.add_argument("--method", default="tango", help="pruning method (default tango)")
    parser.add_argument("--retention", type=float, default=0.1, help="fraction of visual tokens kept (default 0.1)")
    parser.add_argument("--frames", type=positive_int, default=None,
                        help="frames sampled uniformly (default 32 for LLaVA, 16 for Qwen2.5-VL)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=32, help="answer length limit (default 32)")
    parser.add_argument("--variant", default=None, help="LLaVA token layout: llava-onevision or llava-video")
    parser.add_argument("--saliency-head", default=None, metavar="DIR_OR_HUB_ID",
                        help="LLaVA: score patches with this original SigLIP checkpoint's post_layernorm + "
                             "attention-pooling head, the paper's setting (e.g. google/siglip-so400m-patch14-384)")
    parser.add_argument("--no-prune", action="store_true", help="run the unpruned model (baseline)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (default)")


def _load_config(model_dir: str) -> tuple[Any, str]:
    from ..models import SUPPORTED

    config = load_hf_config(model_dir, "--model")
    archs = list(getattr(config, "architectures", None) or [])
    cls = next((a for a in archs if a in SUPPORTED), None)
    if cls is None:
        raise ValueError(f"--model: unsupported model class {archs or type(config).__name__}; supported: "
                         f"{sorted(SUPPORTED)}")
    return config, cls


def _preprocessing(model_dir: str, family: str) -> tuple[list[float], list[float]]:
    """Normalisation mean/std from the checkpoint's (video) preprocessor config, else the family default."""
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            if "image_mean" in data and "image_std" in data:
                return list(data["image_mean"]), list(data["image_std"])
    return _DEFAULT_MEAN_STD[family]


def _normalise(frames: np.ndarray, size: tuple[int, int], mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (T, 3, h, w), bicubic resize, rescale to [0, 1], normalise."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(0, 255) / 255.0
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _prompt(tokenizer: Any, visual: str, question: str) -> str:
    messages = [{"role": "user", "content": f"{visual}\n{question}"}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"USER: {visual}\n{question}\nASSISTANT:"


def _llava_inputs(config: Any, tokenizer: Any, frames: np.ndarray, ts: np.ndarray, question: str,
                  mean: list[float], std: list[float]) -> dict[str, Any]:
    size = config.vision_config.image_size
    pv = _normalise(frames, (size, size), mean, std)[None]
    g = size // config.vision_config.patch_size
    n = frames.shape[0] * math.ceil(g / 2) ** 2 + 1
    tok = tokenizer.convert_ids_to_tokens(config.video_token_id)
    text = _prompt(tokenizer, tok, question).replace(tok, tok * n, 1)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    return {"input_ids": ids, "pixel_values_videos": pv, "video_timestamps": torch.from_numpy(ts)[None]}


def _qwen_inputs(config: Any, tokenizer: Any, frames: np.ndarray, ts: np.ndarray, question: str,
                 mean: list[float], std: list[float]) -> dict[str, Any]:
    vc = config.vision_config
    ps, tp_, m = vc.patch_size, vc.temporal_patch_size, vc.spatial_merge_size
    unit = ps * m
    T, H, W = frames.shape[:3]
    # Fit about 256 merged tokens per step, keeping the aspect ratio, on multiples of patch * merge.
    scale = math.sqrt(256 * unit * unit / (H * W))
    h = max(unit, round(H * scale / unit) * unit)
    w = max(unit, round(W * scale / unit) * unit)
    if T % tp_:
        frames = np.concatenate([frames, np.repeat(frames[-1:], tp_ - T % tp_, axis=0)])
        ts = np.concatenate([ts, np.repeat(ts[-1:], tp_ - T % tp_)])
    x = _normalise(frames, (h, w), mean, std)  # (T', 3, h, w)
    gt, gh, gw = x.shape[0] // tp_, h // ps, w // ps
    # The upstream patch layout: (t, h-blocks, w-blocks, merge rows, merge cols) x (C, temporal, ps, ps).
    x = x.reshape(gt, tp_, 3, gh // m, m, ps, gw // m, m, ps).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    pv = x.reshape(gt * gh * gw, 3 * tp_ * ps * ps)
    n = gt * gh * gw // (m * m)
    start, pad, end = (tokenizer.convert_ids_to_tokens(i) for i in
                       (config.vision_start_token_id, config.video_token_id, config.vision_end_token_id))
    text = _prompt(tokenizer, start + pad + end, question).replace(pad, pad * n, 1)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    step_ts = torch.from_numpy(ts[::tp_].copy())
    spg = float(step_ts[1] - step_ts[0]) if gt > 1 else 1.0
    return {"input_ids": ids, "pixel_values_videos": pv, "video_grid_thw": torch.tensor([[gt, gh, gw]]),
            "second_per_grid_ts": torch.tensor([spg]), "video_timestamps": step_ts[None]}


def _method_config(tp: Any, args: argparse.Namespace, config: Any, family: str, model: Any) -> Any:
    """Tango uses the published preset of the model family; other methods their defaults.

    The preset's sink cells are for the published 27x27 SigLIP grid and its FastV layer for a 28-layer LLM;
    on other geometries they are dropped, with a note, instead of failing.
    """
    if args.method != "tango":
        return tp.make_config(args.method, retention=args.retention)
    if family == "qwen":
        return tp.TangoConfig.preset("qwen2.5-vl", retention=args.retention)
    from ..models.llava_onevision import LlavaOnevisionAdapter

    variant = args.variant or LlavaOnevisionAdapter.detect_variant(model)
    overrides: dict[str, Any] = {}
    if config.vision_config.image_size // config.vision_config.patch_size != 27:
        overrides["sinks"] = ()
        print("note: non-standard vision grid: the preset's sink cells are not used")
    layers = config.text_config.num_hidden_layers
    if variant == "llava-video" and layers <= 18:
        overrides["fastv_layer"] = None
        print(f"note: {layers}-layer language model: the intra-LLM FastV stage (layer 18) is off")
    return tp.TangoConfig.preset(variant, retention=args.retention, **overrides)


class _FirstToken:
    """Logits processor that records when the first token's logits exist (end of prefill)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.t = None

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
    family = "qwen" if cls.startswith("Qwen") else "llava"
    variants = _VARIANTS[family]
    if args.variant is not None and args.variant not in variants:
        raise ValueError(f"--variant must be one of {list(variants)} for {cls}, got {args.variant!r}")
    frames_n = args.frames or (16 if family == "qwen" else 32)
    frames, ts = load_video(args.video, frames_n)
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    except Exception as exc:  # missing or broken tokenizer files
        raise ValueError(f"--model: cannot load a tokenizer from {args.model!r}: {exc}") from None
    model = load_pretrained(getattr(transformers, cls), args.model, "--model").to(device).eval()
    mean, std = _preprocessing(args.model, family)
    build = _qwen_inputs if family == "qwen" else _llava_inputs
    inputs = build(config, tokenizer, frames, ts, args.question, mean, std)
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    if inputs["pixel_values_videos"].is_floating_point():
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(model.dtype)
    if args.no_prune:
        n_visual = int((inputs["input_ids"] == config.video_token_id).sum())
        inputs.pop("video_timestamps")
    else:
        cfg = _method_config(tp, args, config, family, model)
        tp.apply(model, cfg, variant=args.variant, saliency_head=args.saliency_head)
    first = _FirstToken(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False,
                             logits_processor=LogitsProcessorList([first]))
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    new = out[0, inputs["input_ids"].shape[1]:]
    answer = tokenizer.decode(new, skip_special_tokens=True).strip()
    st = {"vision_s": 0.0, "prune_s": 0.0, "visual_tokens_before": n_visual, "visual_tokens_after": n_visual} \
        if args.no_prune else tp.models.stats(model)
    ttft = (first.t or time.perf_counter()) - start
    prefill = max(0.0, ttft - st["vision_s"] - st["prune_s"])
    print(f"answer: {answer}")
    print(f"frames: {len(ts)} at {', '.join(f'{t:.2f}' for t in ts)} s")
    print(f"visual tokens: {st['visual_tokens_before']} -> {st['visual_tokens_after']}"
          + ("" if args.no_prune else f" ({args.method}, retention {args.retention})"))
    print(f"time: vision {st['vision_s'] * 1e3:.1f} ms | pruning {st['prune_s'] * 1e3:.1f} ms | "
          f"prefill {prefill * 1e3:.1f} ms | decode {(total - ttft) * 1e3:.1f} ms ({len(new)} tokens)")
    if args.no_prune:
        print("note: --no-prune: vision time is included in prefill")
    return 0
