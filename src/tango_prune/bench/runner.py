"""The efficiency benchmark: TTFT split into vision / pruning / prefill, decode speed and peak memory.

For one model and one video, :func:`run_bench` measures:

- **vision**, once per video (it does not depend on the method): the upstream ``get_video_features`` for the
  unpruned model, and the adapter's encoder pass (the same plus the saliency map) for the pruned runs;
- the **unpruned** run: the upstream ``generate`` with the encoder output passed in (``mm_encoder_outputs``),
  so its TTFT minus nothing is the prefill;
- for every method and retention, ``tango_prune.apply`` with the encoder pass served from the cache:
  ``prune_s`` comes from ``tango_prune.models.stats`` and prefill = measured TTFT - cached encoder call -
  ``prune_s``.

TTFT = vision + pruning + prefill. Every repeat is timed separately and the median is reported; warm-up runs
are discarded. Speedups are ratios to the unpruned run of the same process. The "overhead" of a method is its
pruning time divided by the prefill time it saves (target for Tango: below 10%).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import torch

from .. import models as _models
from ..api import make_config
from .profiler import sync, timed_generate
from .video import load_video, synthetic_video, to_pixels, tokens_per_frame

__all__ = ["BenchSpec", "run_bench", "load_model", "markdown_table", "Progress"]


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    """What to measure. ``model`` is a preset name or a directory saved with ``save_pretrained``."""

    model: str
    methods: tuple[str, ...] = ("tango",)
    retentions: tuple[float, ...] = (0.1,)
    video: str | None = None
    frames: int = 32
    warmup: int = 1
    repeats: int = 3
    new_tokens: int = 8
    prompt_tokens: int = 32
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("methods must name at least one pruning method")
        for m in self.methods:
            make_config(m)  # raises ValueError listing the known methods
        for r in self.retentions:
            make_config("topk", retention=r)  # the shared retention check
        for name, minimum in (("frames", 1), ("repeats", 1), ("warmup", 0), ("new_tokens", 1),
                              ("prompt_tokens", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Progress:
    """A one-line progress bar on a stream (stderr by default); silent when ``enabled`` is False."""

    def __init__(self, total: int, enabled: bool = True, stream: Any = None, width: int = 24) -> None:
        self.total, self.enabled, self.width = max(1, total), enabled, width
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.t0 = time.perf_counter()

    def step(self, label: str) -> None:
        """Mark one unit done and redraw with ``label``."""
        self.done += 1
        if not self.enabled:
            return
        frac = self.done / self.total
        bar = "#" * int(frac * self.width) + "-" * (self.width - int(frac * self.width))
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} {elapsed:6.0f}s eta {eta:5.0f}s {label[:40]:<40}")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def load_model(name_or_dir: str, dtype: torch.dtype, device: str) -> tuple[Any, str]:
    """A model from a preset name or a ``save_pretrained`` directory; returns (model on device, description)."""
    from .presets import PRESETS, build

    if name_or_dir in PRESETS:
        model, preset = build(name_or_dir, dtype=dtype)
        desc = f"{preset.name} ({preset.description}; random weights)"
    elif os.path.isdir(name_or_dir):
        import transformers

        with open(os.path.join(name_or_dir, "config.json"), encoding="utf-8") as fh:
            arch = (json.load(fh).get("architectures") or [""])[0]
        cls = getattr(transformers, arch, None)
        if cls is None:
            raise ValueError(f"model directory {name_or_dir!r} names an unknown architecture {arch!r}")
        model = cls.from_pretrained(name_or_dir, dtype=dtype).eval()
        desc = f"{arch} from {name_or_dir}"
    else:
        raise ValueError(f"model must be a preset ({sorted(PRESETS)}) or a model directory, got {name_or_dir!r}")
    return model.to(device), desc


def _check_supported(model: Any) -> None:
    cls = type(model).__name__
    if cls != "LlavaOnevisionForConditionalGeneration":
        have = importlib.util.find_spec("tango_prune.models.qwen2_5_vl") is not None
        raise ValueError(f"model: the benchmark drives LlavaOnevisionForConditionalGeneration only in this build, "
                         f"got {cls}" + ("" if have else " (its tango_prune adapter is not available yet)"))


def _inputs(model: Any, spec: BenchSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """(pixel_values_videos, input_ids, video info) for the spec's video in the model's layout."""
    vc = model.config.vision_config
    size = vc.image_size
    if spec.video:
        frames, ts = load_video(spec.video, spec.frames)
        source = os.path.basename(spec.video)
    else:
        frames, ts = synthetic_video(spec.frames, size, seed=spec.seed)
        source = "synthetic"
    pv = to_pixels(frames, size).to(device)
    per_frame = tokens_per_frame(size, vc.patch_size)
    n_video = spec.frames * per_frame + 1                      # upstream OV layout: one newline per video
    gen = torch.Generator().manual_seed(spec.seed)
    # Prompt text ids from the low vocabulary (any ids below the special tokens behave alike for timing).
    pre = torch.randint(10, 1000, (spec.prompt_tokens,), generator=gen)
    post = torch.randint(10, 1000, (max(1, spec.prompt_tokens // 2),), generator=gen)
    vid = torch.full((n_video,), model.config.video_token_id, dtype=torch.long)
    ids = torch.cat([pre, vid, post])[None].to(device)
    info = {"source": source, "frames": spec.frames, "frame_size": size, "tokens_per_frame": per_frame,
            "video_tokens": n_video, "prompt_tokens": int(ids.shape[1] - n_video), "timestamps": ts.tolist()}
    return pv, ids.to(dtype=torch.long), info


def _median(rows: list[dict[str, float]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def _encode_once(model: Any, spec: BenchSpec, pv: torch.Tensor, device: torch.device) -> dict[str, Any]:
    """One encoder pass that serves every run: the adapter's encode (vision + saliency) with the upstream
    ``get_video_features`` inside it timed separately.

    Returns ``vision_s`` (upstream encoder), ``vision_saliency_s`` (the adapter's whole encode), ``video``
    (the upstream encoder output, for the unpruned run) and ``encoded`` (the adapter's output, for the
    pruned runs).
    """
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    cfg = model.config
    vfl, vfss = cfg.vision_feature_layer, cfg.vision_feature_select_strategy
    base = model.model
    inner: dict[str, Any] = {}
    upstream = base.get_video_features                       # bound class method

    def timed_upstream(*args: Any, **kwargs: Any) -> Any:
        out, inner["s"] = _timed(lambda: upstream(*args, **kwargs), device)
        inner["video"] = BaseModelOutputWithPooling(pooler_output=out.pooler_output)  # not the hidden states
        return out

    _models.apply(model, name=spec.methods[0], retention=spec.retentions[0])
    try:
        adapter = getattr(model, "_tango_prune_state").adapter
        with torch.no_grad():
            # why: one-frame warm-up so the single timed pass does not pay first-call costs.
            adapter.encode(model, pv[:, :1], vfl, vfss)
            base.get_video_features = timed_upstream          # instance attribute, deleted below
            try:
                encoded, total = _timed(lambda: adapter.encode(model, pv, vfl, vfss), device)
            finally:
                del base.get_video_features
    finally:
        _models.remove(model)
    return {"vision_s": inner["s"], "vision_saliency_s": total, "video": inner["video"], "encoded": encoded}


def run_bench(spec: BenchSpec, progress: bool = True, model: Any = None,
              log: Callable[[str], None] | None = None,
              on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the benchmark described by ``spec``; returns a JSON-serialisable report (see module docstring).

    ``model`` may be passed in already built (tests); otherwise it is loaded from ``spec.model``. ``on_row``
    is called with every finished row (for partial reports on long runs).
    """
    log = log or (lambda s: None)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = torch.device(spec.device)
    dtype = _DTYPES[spec.dtype]
    t0 = time.perf_counter()
    if model is None:
        model, desc = load_model(spec.model, dtype, spec.device)
    else:
        desc = type(model).__name__
    _check_supported(model)
    log(f"model ready in {time.perf_counter() - t0:.0f}s: {desc}")
    pv, ids, vinfo = _inputs(model, spec, device)
    pv = pv.to(dtype)
    attn = torch.ones_like(ids)
    n_runs = spec.warmup + spec.repeats
    bar = Progress(1 + n_runs * (1 + len(spec.methods) * len(spec.retentions)), enabled=progress)

    enc = _encode_once(model, spec, pv, device)
    bar.step("vision (+ saliency)")
    log(f"vision {enc['vision_s']:.2f}s, with saliency {enc['vision_saliency_s']:.2f}s")

    # -- unpruned baseline: the upstream generate with the encoder output passed in ---------------------------
    base_runs = []
    for i in range(n_runs):
        r = timed_generate(model, dict(input_ids=ids, attention_mask=attn, mm_encoder_outputs={"video": enc["video"]}),
                           spec.new_tokens, device)
        if i >= spec.warmup:
            base_runs.append(r)
        bar.step("unpruned")
    base = {"method": "none", "retention": 1.0, "visual_tokens": vinfo["video_tokens"], "kept": None,
            "vision_s": enc["vision_s"], "prune_s": 0.0, "prefill_s": _median(base_runs, "ttft_s"),
            "decode_tok_s": _median(base_runs, "decode_tok_s"), "peak_mib": max(r["peak_mib"] for r in base_runs),
            "repeats": [r["ttft_s"] for r in base_runs]}
    base["ttft_s"] = base["vision_s"] + base["prefill_s"]
    rows = [base]
    _finish(base, base)
    if on_row:
        on_row(base)

    # -- every method and retention through tango_prune.apply, the encoder pass served from the cache -------
    first = True
    for method in spec.methods:
        for r_keep in spec.retentions:
            _models.apply(model, name=method, retention=r_keep)
            # why: an instance attribute of this adapter object only; it goes with the adapter at remove().
            getattr(model, "_tango_prune_state").adapter.encode = lambda *a, **k: enc["encoded"]
            runs = []
            # With no per-configuration warm-up, the first pruned configuration still gets one untimed run.
            extra = 1 if first and spec.warmup == 0 else 0
            first = False
            try:
                for i in range(n_runs + extra):
                    r = timed_generate(model, dict(input_ids=ids, attention_mask=attn, pixel_values_videos=pv),
                                       spec.new_tokens, device)
                    st = _models.stats(model)
                    r.update(prune_s=st["prune_s"], prefill_s=r["ttft_s"] - st["vision_s"] - st["prune_s"],
                             visual_tokens=st["visual_tokens_after"], kept=sum(st.get("kept_per_video", [0])))
                    if i >= spec.warmup + extra:
                        runs.append(r)
                    if i >= extra:
                        bar.step(f"{method} r={r_keep}")
            finally:
                _models.remove(model)
            row = {"method": method, "retention": r_keep, "visual_tokens": runs[0]["visual_tokens"],
                   "kept": runs[0]["kept"], "vision_s": enc["vision_saliency_s"], "prune_s": _median(runs, "prune_s"),
                   "prefill_s": _median(runs, "prefill_s"), "decode_tok_s": _median(runs, "decode_tok_s"),
                   "peak_mib": max(r["peak_mib"] for r in runs), "repeats": [r["ttft_s"] for r in runs]}
            row["ttft_s"] = row["vision_s"] + row["prune_s"] + row["prefill_s"]
            _finish(row, base)
            rows.append(row)
            if on_row:
                on_row(row)
    return {"spec": dataclasses.asdict(spec), "model": desc, "video": vinfo, "environment": _environment(device),
            "vision_note": "vision is measured once per video (it does not depend on the method) in one encoder "
                           "pass: the upstream encoder alone for 'none', the encoder plus the saliency map for "
                           "the pruning methods",
            "rows": rows}


def _finish(row: dict[str, Any], base: dict[str, Any]) -> None:
    """Add the ratios to the unpruned run."""
    row["ttft_speedup"] = base["ttft_s"] / row["ttft_s"]
    row["prefill_speedup"] = base["prefill_s"] / row["prefill_s"] if row["prefill_s"] > 0 else math.inf
    saved = base["prefill_s"] - row["prefill_s"]
    row["overhead_of_saved"] = row["prune_s"] / saved if row["method"] != "none" and saved > 0 else None


def _environment(device: torch.device) -> dict[str, Any]:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        import transformers
        env["transformers"] = transformers.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def markdown_table(report: dict[str, Any]) -> str:
    """The report's rows as a markdown table (times in ms, memory in MiB)."""
    head = ("| method | retention | visual tokens | vision ms | prune ms | prefill ms | TTFT ms | TTFT speedup "
            "| prefill speedup | prune / prefill saved | decode tok/s | peak MiB |")
    lines = [head, "|" + "---|" * 12]
    for r in report["rows"]:
        ov = "-" if r["overhead_of_saved"] is None else f"{100 * r['overhead_of_saved']:.1f}%"
        lines.append(f"| {r['method']} | {r['retention']:g} | {r['visual_tokens']} | {1e3 * r['vision_s']:.0f} "
                     f"| {1e3 * r['prune_s']:.1f} | {1e3 * r['prefill_s']:.0f} | {1e3 * r['ttft_s']:.0f} "
                     f"| {r['ttft_speedup']:.2f}x | {r['prefill_speedup']:.2f}x | {ov} | {r['decode_tok_s']:.1f} "
                     f"| {r['peak_mib']:.0f} |")
    v = report["video"]
    lines.append("")
    lines.append(f"Model: {report['model']}. Video: {v['source']}, {v['frames']} frames at {v['frame_size']} px, "
                 f"{v['video_tokens']} video tokens + {v['prompt_tokens']} prompt tokens. Device: "
                 f"{report['environment'].get('gpu', report['environment']['device'])}, "
                 f"{report['environment']['threads']} threads. {report['vision_note']}. Medians of "
                 f"{report['spec']['repeats']} repeats after {report['spec']['warmup']} warm-up(s).")
    return "\n".join(lines) + "\n"
