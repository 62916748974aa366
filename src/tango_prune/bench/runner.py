"""The efficiency benchmark: TTFT split into vision / pruning / prefill, decode speed and peak memory.

For one model and one video, :func:`run_bench` measures (every registered model family, driven the same way
through its ``bench_*`` methods):

- **vision**, once per video (it does not depend on the method): the family's upstream encoder call
  (``bench_upstream_encode``: ``get_video_features``, or InternVL's ``get_image_features``) for the
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
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from typing import Any, Callable

import torch

from .. import models as _models
from ..api import make_config
from ..validate import check_choice, check_int
from .families import BenchInputs, family_for, pruned_kwargs, unpruned_kwargs
from .profiler import sync, timed_generate

__all__ = ["BenchSpec", "run_bench", "load_model", "markdown_table", "markdown_summary", "Progress"]


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    """What to measure. ``model`` is a preset name or a directory saved with ``save_pretrained``."""

    model: str
    methods: tuple[str, ...] = ("tango",)
    retentions: tuple[float, ...] = (0.1,)
    video: str | None = None
    frames: int = 32
    #: frame size in pixels; None: the preset's (LLaVA-OneVision accepts only its vision tower's size)
    frame_size: int | None = None
    warmup: int = 1
    repeats: int = 3
    new_tokens: int = 8
    prompt_tokens: int = 32
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0
    threads: int | None = None
    #: per-method config overrides, e.g. ``{"tango": {"tau_static": 1.0}}``
    overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("methods must name at least one pruning method")
        for m in self.methods:
            make_config(m)  # raises ValueError listing the known methods
        for m, fields in self.overrides.items():
            if m not in self.methods:
                raise ValueError(f"overrides name method {m!r}, which is not in methods {list(self.methods)}")
            make_config(m, **fields)  # raises ValueError naming an unknown or invalid field
        for r in self.retentions:
            make_config("topk", retention=r)  # the shared retention check
        for name, minimum in (("frames", 1), ("repeats", 1), ("warmup", 0), ("new_tokens", 1), ("prompt_tokens", 0)):
            check_int(name, getattr(self, name), minimum)
        check_int("frame_size", self.frame_size, 1, optional=True)
        check_int("threads", self.threads, 1, optional=True)
        check_choice("dtype", self.dtype, _DTYPES)


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

        try:
            with open(os.path.join(name_or_dir, "config.json"), encoding="utf-8") as fh:
                arch = (json.load(fh).get("architectures") or [""])[0]
        except (OSError, ValueError, AttributeError) as exc:
            raise ValueError(f"model directory {name_or_dir!r} has no valid config.json ({exc})") from None
        cls = getattr(transformers, str(arch), None)
        if cls is None:
            raise ValueError(f"model directory {name_or_dir!r} names an unknown architecture {arch!r}")
        from ..checkpoints import load_pretrained

        model = load_pretrained(cls, name_or_dir, "model", dtype=dtype).eval()
        desc = f"{arch} from {name_or_dir}"
    else:
        raise ValueError(f"model must be a preset ({sorted(PRESETS)}) or a model directory, got {name_or_dir!r}")
    return model.to(device), desc


def _check_supported(model: Any) -> None:
    family_for(model)  # raises ValueError naming the supported classes


def _inputs(model: Any, spec: BenchSpec, device: torch.device) -> BenchInputs:
    """The spec's video and prompt in the model's layout (frame size: the spec's, else the preset's)."""
    from .presets import PRESETS

    family = family_for(model)
    default = PRESETS[spec.model].image_size if spec.model in PRESETS else None
    return family.bench_inputs(model, spec, family.bench_frame_size(model, spec.frame_size, default), device)


def _median(rows: list[dict[str, float]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def _encode_once(model: Any, spec: BenchSpec, inp: BenchInputs, device: torch.device) -> dict[str, Any]:
    """The encoder passes that serve every run, each timed once: the family's upstream encoder call for the
    unpruned run, and the adapter's encode (the same encoder plus the saliency map) for the pruned runs.

    Returns ``vision_s`` (upstream encoder), ``vision_saliency_s`` (the adapter's whole encode), ``video``
    (the upstream ``mm_encoder_outputs``, for the unpruned run) and ``encoded`` (the adapter's output, for the
    pruned runs, served through :func:`tango_prune.models.reuse_encoding`).
    """
    family = family_for(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the saliency fallback warning is the pruned runs' (apply) to give
        adapter = family(model)
    with torch.no_grad():
        # why: a one-frame (one-step) warm-up so the timed passes do not pay first-call costs.
        adapter.bench_encode(model, inp, warmup=True)
        video, vision_s = _timed(lambda: family.bench_upstream_encode(model, inp), device)
        encoded, total = _timed(lambda: adapter.bench_encode(model, inp), device)
    return {"vision_s": vision_s, "vision_saliency_s": total, "video": video, "encoded": encoded}


def run_bench(
    spec: BenchSpec,
    progress: bool = True,
    model: Any = None,
    log: Callable[[str], None] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    done_rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the benchmark described by ``spec``; returns a JSON-serialisable report (see module docstring).

    ``model`` may be passed in already built (tests); otherwise it is loaded from ``spec.model``. ``on_row``
    is called with every finished row (for partial reports on long runs). ``done_rows`` are rows of an
    interrupted run of the same spec: they are kept as they are and not measured again (the unpruned row
    among them stays the reference of the ratios); the report counts them in ``resumed_rows``.
    """
    done = {(r["method"], float(r["retention"])): r for r in (done_rows or [])}
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
    family = family_for(model)
    log(f"model ready in {time.perf_counter() - t0:.0f}s: {desc}")
    inp = _inputs(model, spec, device)
    inp = dataclasses.replace(inp, pixels=inp.pixels.to(dtype))
    vinfo = inp.info
    attn = torch.ones_like(inp.input_ids)
    n_runs = spec.warmup + spec.repeats
    bar = Progress(1 + n_runs * (1 + len(spec.methods) * len(spec.retentions)), enabled=progress)

    enc = _encode_once(model, spec, inp, device)
    bar.step("vision (+ saliency)")
    log(f"vision {enc['vision_s']:.2f}s, with saliency {enc['vision_saliency_s']:.2f}s")

    # -- unpruned baseline: the upstream generate with the encoder output passed in ---------------------------
    if ("none", 1.0) in done:
        base = done[("none", 1.0)]
    else:
        base_runs = []
        for i in range(n_runs):
            r = timed_generate(model, unpruned_kwargs(inp, attn, enc["video"]), spec.new_tokens, device)
            if i >= spec.warmup:
                base_runs.append(r)
            bar.step("unpruned")
        base = {
            "method": "none",
            "retention": 1.0,
            "visual_tokens": vinfo["video_tokens"],
            "kept": None,
            "vision_s": enc["vision_s"],
            "prune_s": 0.0,
            "prefill_s": _median(base_runs, "ttft_s"),
            "decode_tok_s": _median(base_runs, "decode_tok_s"),
            "peak_mib": max(r["peak_mib"] for r in base_runs),
            "repeats": [r["ttft_s"] for r in base_runs],
        }
        base["ttft_s"] = base["vision_s"] + base["prefill_s"]
        _finish(base, base)
        if on_row:
            on_row(base)
    rows = [base]

    # -- every method and retention through tango_prune.apply, the encoder pass served from the cache -------
    first = True
    for method in spec.methods:
        for r_keep in spec.retentions:
            if (method, float(r_keep)) in done:
                rows.append(done[(method, float(r_keep))])
                continue
            _models.apply(model, name=method, retention=r_keep, **spec.overrides.get(method, {}))
            _models.reuse_encoding(model, enc["encoded"])  # the one encoder pass serves every run
            runs = []
            # With no per-configuration warm-up, the first pruned configuration still gets one untimed run.
            extra = 1 if first and spec.warmup == 0 else 0
            first = False
            try:
                for i in range(n_runs + extra):
                    run: dict[str, Any] = dict(timed_generate(model, pruned_kwargs(inp, attn), spec.new_tokens, device))
                    st = _models.stats(model)
                    run.update(
                        prune_s=st["prune_s"],
                        prefill_s=run["ttft_s"] - st["vision_s"] - st["prune_s"],
                        visual_tokens=st["visual_tokens_after"],
                        kept=sum(st.get("kept_per_video", [0])),
                    )
                    last = _models.last_results(model)
                    run["prune_info"] = {
                        k: v
                        for k, v in (last[0].info if last else {}).items()
                        if k in ("segments", "static_positions", "by_kind")
                    }
                    if i >= spec.warmup + extra:
                        runs.append(run)
                    if i >= extra:
                        bar.step(f"{method} r={r_keep}")
            finally:
                _models.remove(model)
            row = {
                "method": method,
                "retention": r_keep,
                "overrides": spec.overrides.get(method, {}),
                "visual_tokens": runs[0]["visual_tokens"],
                "kept": runs[0]["kept"],
                "prune_info": runs[0]["prune_info"],
                "vision_s": enc["vision_saliency_s"],
                "prune_s": _median(runs, "prune_s"),
                "prefill_s": _median(runs, "prefill_s"),
                "decode_tok_s": _median(runs, "decode_tok_s"),
                "peak_mib": max(r["peak_mib"] for r in runs),
                "repeats": [r["ttft_s"] for r in runs],
            }
            row["ttft_s"] = row["vision_s"] + row["prune_s"] + row["prefill_s"]
            _finish(row, base)
            rows.append(row)
            if on_row:
                on_row(row)
    return {
        "spec": dataclasses.asdict(spec),
        "model": desc,
        "video": vinfo,
        "environment": _environment(device),
        "vision_note": "vision is measured once per video (it does not depend on the method) in one encoder "
        "pass: the upstream encoder alone for 'none', the encoder plus the saliency map for "
        "the pruning methods",
        "feature_similarity": _feature_similarity(family.bench_first_video_features(enc["encoded"], inp)),
        "rows": rows,
        "resumed_rows": sum(1 for r in rows if any(r is d for d in done.values())),
    }


def _feature_similarity(feats: torch.Tensor) -> dict[str, float]:
    """Quantiles of the cosine similarity between consecutive frames at the same grid position.

    ``feats`` (T, H, W, D): the first video's features from the adapter's encode. Values near 1 mean temporal
    methods will find almost every position static (typical of random weights).
    """
    from ..core.segment import frame_similarity

    x = feats
    T = x.shape[0]
    if T < 2:
        return {}
    sim = frame_similarity(x.reshape(T, -1, x.shape[-1])).reshape(-1)
    q = torch.quantile(sim, torch.tensor([0.1, 0.5, 0.9], dtype=sim.dtype))
    return {"p10": float(q[0]), "p50": float(q[1]), "p90": float(q[2])}


def _finish(row: dict[str, Any], base: dict[str, Any]) -> None:
    """Add the ratios to the unpruned run."""
    row["ttft_speedup"] = base["ttft_s"] / row["ttft_s"]
    row["prefill_speedup"] = base["prefill_s"] / row["prefill_s"] if row["prefill_s"] > 0 else math.inf
    saved = base["prefill_s"] - row["prefill_s"]
    row["overhead_of_saved"] = row["prune_s"] / saved if row["method"] != "none" and saved > 0 else None


def _environment(device: torch.device) -> dict[str, Any]:
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
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
    head = (
        "| method | retention | visual tokens | vision ms | prune ms | prefill ms | TTFT ms | TTFT speedup "
        "| prefill speedup | prune / prefill saved | decode tok/s | peak MiB |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in report["rows"]:
        ov = "-" if r["overhead_of_saved"] is None else f"{100 * r['overhead_of_saved']:.1f}%"
        lines.append(
            f"| {r['method']} | {r['retention']:g} | {r['visual_tokens']} | {1e3 * r['vision_s']:.0f} "
            f"| {1e3 * r['prune_s']:.1f} | {1e3 * r['prefill_s']:.0f} | {1e3 * r['ttft_s']:.0f} "
            f"| {r['ttft_speedup']:.2f}x | {r['prefill_speedup']:.2f}x | {ov} | {r['decode_tok_s']:.1f} "
            f"| {r['peak_mib']:.0f} |"
        )
    v = report["video"]
    lines.append("")
    steps = f" ({v['temporal_steps']} temporal steps of {v['tokens_per_step']} tokens)" if "temporal_steps" in v else ""
    lines.append(
        f"Model: {report['model']}. Video: {v['source']}, {v['frames']} frames at {v['frame_size']} px, "
        f"{v['video_tokens']} video tokens{steps} + {v['prompt_tokens']} prompt tokens. Device: "
        f"{report['environment'].get('gpu', report['environment']['device'])}, "
        f"{report['environment']['threads']} threads. {report['vision_note']}. Medians of "
        f"{report['spec']['repeats']} repeats after {report['spec']['warmup']} warm-up(s)."
    )
    fs = report.get("feature_similarity")
    if fs:
        lines.append(
            f"Consecutive-frame cosine similarity of the video features at the same position: p10 "
            f"{fs['p10']:.2f}, median {fs['p50']:.2f}, p90 {fs['p90']:.2f}."
        )
    if report["spec"].get("overrides"):
        lines.append(f"Config overrides: {json.dumps(report['spec']['overrides'], sort_keys=True)}.")
    return "\n".join(lines) + "\n"


def markdown_summary(report: dict[str, Any]) -> str:
    """Method x retention pivot: TTFT speedup (prefill speedup), and each method's pruning time as a share of
    the prefill time it saves."""
    rows = [r for r in report["rows"] if r["method"] != "none"]
    rets = sorted({r["retention"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["method"], r["retention"]): r for r in rows}
    head = "| method | " + " | ".join(f"r = {x:g}: TTFT (prefill) speedup | prune / saved" for x in rets) + " |"
    lines = [head, "|---|" + "---|---|" * len(rets)]
    for m in methods:
        cells = []
        for x in rets:
            r = by.get((m, x))
            if r is None:
                cells += ["-", "-"]
                continue
            ov = "-" if r["overhead_of_saved"] is None else f"{100 * r['overhead_of_saved']:.1f}%"
            cells += [f"{r['ttft_speedup']:.2f}x ({r['prefill_speedup']:.1f}x)", ov]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
