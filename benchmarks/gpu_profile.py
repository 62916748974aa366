"""GPU time-to-first-token profile: every registered method at one retention, TTFT split with CUDA events.

One command on a machine with one CUDA GPU::

    python benchmarks/gpu_profile.py --out gpu_profile_out --count-syncs

builds the ``llava-ov-7b`` preset (LLaVA-OneVision-7B architecture: SigLIP-so400m/14 at 384 px + Qwen2-7B)
with seeded random weights in bfloat16, directly on the GPU, with PyTorch SDPA attention, and for 32 and 64
frames of the synthetic bench clip measures the unpruned model and every method of ``tango_prune.methods()``
at retention 0.1. ``--out DIR`` receives ``gpu_profile.json`` (every repeat, settings, environment) and
``gpu_profile.md`` (the table), both written atomically, and rewritten after every configuration so an
interrupted run leaves what it measured.

What one run measures (one ``generate`` call producing one token):

- CUDA events (no host-device synchronisation added by this script) are recorded at the call, before and
  after the encoder (forward hooks on the vision tower and the projector for the unpruned model; the phase
  callbacks of ``tango_prune.models.on_phase`` for the pruned ones, whose encoder pass includes the saliency
  map), when pruning ends (selection, merging and the shortened inputs), and in a logits processor at the
  first token's logits;
  the host synchronises once, after the call, to read them. On CPU the same points are read with
  ``time.perf_counter`` (only for the ``--dry-run``). The adapter itself synchronises at its phase
  boundaries (``tango_prune.models`` times its phases for ``stats``); those waits are part of the real
  TTFT and are measured as they are.
- vision = encoder start to end; prune = encoder end to rewrite end (0 unpruned); prefill = rewrite end
  (unpruned: encoder end) to first logits; ``other_ms`` in the JSON is the rest of the TTFT, from the call
  to the encoder start: the upstream ``generate`` of the unpruned row encodes the video part-way through its
  set-up, so that part of the set-up lands in ``other``, while the patched ``generate`` encodes first and
  all of its set-up lands in the pruned rows' prefill. TTFT = vision + prune + prefill + other. Medians
  over the repeats; TTFT speedup is the unpruned median TTFT divided by the method's, same frame count.
  Vision is the encoder alone for the unpruned row and encoder + saliency map for the methods.
- peak memory: ``torch.cuda.max_memory_allocated`` (weights included), reset before each configuration
  (``tango_prune.bench.profiler.PeakMemory``); on CPU the process RSS instead.
- ``--count-syncs`` (CUDA only; "n/a" otherwise): after the timed runs of a method, one call of
  ``tango_prune.prune`` on the same encoded video under ``torch.cuda.set_sync_debug_mode("warn")``, counting
  the "synchronizing CUDA operation" warnings, i.e. host-device syncs inside ``prune`` itself. The same
  call also counts, on any device (the ``--dry-run`` included), the calls that would synchronise on CUDA
  (``tango_prune.bench.syncs.SyncCounter``): the "sync ops" column.

Time budget (target: under 8 minutes on one H200/H100/A100-80GB; an estimate, **not yet measured on a GPU**):
building the 8.0 B-parameter model on the device with ``no_init_weights`` and an in-place seeded
``normal_`` takes seconds (about 16 GB of bf16 writes) plus CUDA start-up; one run at 64 frames (12 545
visual tokens) is roughly 0.1 s of SigLIP (about 40 TFLOP), up to about 0.5 s of 7B prefill (about 200
TFLOP incl. attention) and pruning that ranges from milliseconds (top-k) to about a second for the
sequential methods (DivPrune's greedy selection, the clustering methods), so a pruned run is 1-2 s and
a 32-frame one about half. With the default 1 warm-up + 3 repeats: 2 frame counts x (1 + 9 methods) x 4 runs
= 80 runs, about 2-3 minutes, plus the sync counts (18 ``prune`` calls) and start-up: about 4 minutes,
half the budget. If a run is slower than that, ``--budget-s`` (default 480) protects the total: once the
elapsed time passes 60 % of it, the remaining configurations run with 0 warm-ups and 1 repeat, and their
rows say so (``reduced: true``).

``--dry-run`` checks the whole script on CPU in seconds: the ``tiny-llava-ov`` preset, float32, 2 and 4
frames, 0 warm-ups, 1 repeat (any of these can still be set explicitly). Its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import platform
import statistics
import sys
import time
import warnings
from typing import Any, Callable, Iterator

import torch

SCHEMA = "tango-prune/gpu-profile/1"
JSON_NAME, MD_NAME = "gpu_profile.json", "gpu_profile.md"
#: the column set of every row in the JSON (the test checks it)
ROW_KEYS = (
    "frames",
    "method",
    "retention",
    "visual_tokens",
    "vision_ms",
    "prune_ms",
    "prefill_ms",
    "other_ms",
    "ttft_ms",
    "ttft_speedup",
    "peak_gib",
    "syncs",
    "sync_ops",
    "ttft_repeats_ms",
    "warmup",
    "repeats",
    "reduced",
)
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_SYNC_WARNING = "synchronizing CUDA operation"
_DRY_RUN = dict(model="tiny-llava-ov", device="cpu", dtype="float32", frames=[2, 4], warmup=0, repeats=1)
_GPU_RUN = dict(model="llava-ov-7b", device="cuda", dtype="bfloat16", frames=[32, 64], warmup=1, repeats=3)


# -- model -------------------------------------------------------------------------------------------------


def build_on_device(name: str, dtype: torch.dtype, device: torch.device, seed: int = 0) -> tuple[Any, str]:
    """Preset ``name`` (``tango_prune.bench.presets``) with seeded random weights, created directly on
    ``device`` in ``dtype`` with SDPA attention; returns (model in eval mode, description).

    Unlike ``presets.build`` (CPU, fp32, then cast) nothing is created on the host: ``llava-ov-7b`` has
    8.0 B parameters, about 16 GB in bf16. The weight policy is the same (matrices N(0, 0.02), norm scales 1,
    biases 0), drawn by a generator on ``device``, so values differ from ``presets.build``'s; timing does not
    depend on them.
    """
    import transformers
    from transformers.initialization import no_init_weights

    from tango_prune.bench.presets import PRESETS

    preset = PRESETS[name]
    cls = getattr(transformers, preset.model_class)
    with torch.device(device), no_init_weights():
        model = cls._from_config(preset.make_config(), dtype=dtype, attn_implementation="sdpa")
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0) if pname.endswith("weight") else p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return model.eval(), f"{preset.name} ({preset.description}; random weights)"


def load(name_or_dir: str, dtype: torch.dtype, device: torch.device) -> tuple[Any, str]:
    """A preset built on the device (:func:`build_on_device`) or a ``save_pretrained`` directory."""
    from tango_prune.bench.presets import PRESETS
    from tango_prune.bench.runner import load_model

    if name_or_dir in PRESETS:
        return build_on_device(name_or_dir, dtype, device)
    return load_model(name_or_dir, dtype, str(device))  # ValueError naming the model for anything else


# -- timing points -----------------------------------------------------------------------------------------


class Marks:
    """Named time points of one call: CUDA events on a CUDA device (recorded on the current stream, no
    synchronisation), ``time.perf_counter`` otherwise. Read them with :meth:`ms` after a synchronisation."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.points: dict[str, Any] = {}

    def mark(self, name: str) -> None:
        """Record point ``name`` now (in stream order on CUDA)."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.points[name] = event
        else:
            self.points[name] = time.perf_counter()

    def ms(self, a: str, b: str) -> float:
        """Milliseconds from point ``a`` to point ``b`` (CUDA: the events must have completed)."""
        if self.cuda:
            return float(self.points[a].elapsed_time(self.points[b]))
        return 1e3 * (self.points[b] - self.points[a])


class _FirstLogits:
    """A logits processor marking ``first`` when the first token's logits exist; returns them unchanged."""

    def __init__(self, marks: Marks) -> None:
        self.marks = marks

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if "first" not in self.marks.points:
            self.marks.mark("first")
        return scores


@contextlib.contextmanager
def instrumented(model: Any, method: str | None, retention: float, marks_box: list[Marks]) -> Iterator[None]:
    """Prepare ``model`` for one configuration: ``tango_prune.apply`` (unless ``method`` is None) and the
    timing points, all removed on exit; no method of the model or the adapter is replaced.

    Marks go to ``marks_box[0]`` (replace it before each run): ``vision_start`` / ``vision_end`` around the
    encoder and ``prune_end`` when pruning is done, through ``tango_prune.models.on_phase`` for a pruned run;
    for the unpruned run, forward hooks on the vision tower (pre) and on the module that ends the encoder
    (the projector, or the tower itself when the family has none).
    """
    import tango_prune

    if method is None:
        base = model.model
        tower = getattr(base, "vision_tower", None) or base.visual
        last = getattr(base, "multi_modal_projector", None) or tower
        handles = [
            tower.register_forward_pre_hook(lambda *_: marks_box[0].mark("vision_start")),
            last.register_forward_hook(lambda *_: marks_box[0].mark("vision_end")),
        ]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
        return
    tango_prune.apply(model, name=method, retention=retention)
    try:
        tango_prune.models.on_phase(model, lambda phase: marks_box[0].mark(phase))
        yield
    finally:
        tango_prune.remove(model)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_run(
    model: Any, kwargs: dict[str, Any], device: torch.device, pruned: bool, marks_box: list[Marks]
) -> dict[str, float]:
    """One ``generate`` call for one token; returns vision / prune / prefill / other / ttft in ms."""
    from transformers import LogitsProcessorList

    marks = marks_box[0] = Marks(device)
    _sync(device)  # measurement boundary: nothing of the previous run is still queued
    marks.mark("start")
    with torch.no_grad():
        model.generate(
            **kwargs, max_new_tokens=1, do_sample=False, logits_processor=LogitsProcessorList([_FirstLogits(marks)])
        )
    _sync(device)  # measurement boundary: every event has completed
    missing = {"vision_start", "vision_end", "first"} - set(marks.points)
    if pruned and "prune_end" not in marks.points:
        missing.add("prune_end")
    if missing:
        raise RuntimeError(f"the generate call did not pass the timing points {sorted(missing)}")
    vision = marks.ms("vision_start", "vision_end")
    end_of_pruning = "prune_end" if pruned else "vision_end"
    prune_ms = marks.ms("vision_end", end_of_pruning) if pruned else 0.0
    prefill = marks.ms(end_of_pruning, "first")
    ttft = marks.ms("start", "first")
    return {
        "vision_ms": vision,
        "prune_ms": prune_ms,
        "prefill_ms": prefill,
        "other_ms": ttft - vision - prune_ms - prefill,
        "ttft_ms": ttft,
    }


def count_prune_syncs(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Host-device synchronisations during ``fn()`` as counted by ``torch.cuda.set_sync_debug_mode("warn")``.

    Off CUDA ``fn`` still runs (so a CPU dry run exercises the same call) and the result is None: there is
    nothing to count.
    """
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # why: every occurrence, not the first per call site
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum(_SYNC_WARNING in str(w.message) for w in caught)


def _prune_input(encoded: Any, family: Any, inp: Any) -> Any:
    """The first video's ``VideoTokens`` as the adapter hands them to ``prune`` (features, fp32 saliency,
    the frame / step times passed as ``video_timestamps``)."""
    from tango_prune import VideoTokens

    feats = family.bench_first_video_features(encoded, inp)
    sal = encoded[1][0].float()
    ts = torch.tensor(inp.timestamps[0], dtype=torch.float64, device=feats.device)
    return VideoTokens(features=feats, saliency=sal, timestamps=ts)


# -- one configuration -------------------------------------------------------------------------------------


def profile_config(
    model: Any,
    family: Any,
    inp: Any,
    method: str | None,
    retention: float,
    device: torch.device,
    warmup: int,
    repeats: int,
    count_syncs: bool,
) -> dict[str, Any]:
    """Warm-ups, timed repeats (medians), peak memory and optionally the sync count of one method (None:
    the unpruned model) at one frame count; returns one row (keys :data:`ROW_KEYS`)."""
    import tango_prune
    from tango_prune.bench.families import pruned_kwargs
    from tango_prune.bench.profiler import PeakMemory
    from tango_prune.bench.syncs import SyncCounter

    attn = torch.ones_like(inp.input_ids)
    kwargs = pruned_kwargs(inp, attn)
    if method is None:
        kwargs.pop("video_timestamps")  # an argument of the patched model only
    box: list[Marks] = [Marks(device)]
    runs = []
    syncs = sync_ops = None
    with instrumented(model, method, retention, box), PeakMemory(device) as mem:
        for i in range(warmup + repeats):
            r = one_run(model, kwargs, device, method is not None, box)
            if i >= warmup:
                runs.append(r)
        if method is None:
            tokens = int(inp.info["video_tokens"])
        else:
            tokens = int(tango_prune.models.stats(model)["visual_tokens_after"])
            if count_syncs:
                with torch.no_grad():  # the encoder once more, outside the timed runs
                    video = _prune_input(family(model).bench_encode(model, inp), family, inp)
                cfg = tango_prune.make_config(method, retention=retention)
                with SyncCounter() as counter:
                    syncs = count_prune_syncs(lambda: tango_prune.prune(video, cfg), device)
                sync_ops = counter.total
    row: dict[str, Any] = {
        "frames": int(inp.info["frames"]),
        "method": method or "none",
        "retention": retention if method else 1.0,
        "visual_tokens": tokens,
    }
    for key in ("vision_ms", "prune_ms", "prefill_ms", "other_ms", "ttft_ms"):
        row[key] = float(statistics.median(r[key] for r in runs))
    row.update(
        ttft_speedup=None,
        peak_gib=mem.peak_mib / 1024,
        syncs=syncs,
        sync_ops=sync_ops,
        ttft_repeats_ms=[r["ttft_ms"] for r in runs],
        warmup=warmup,
        repeats=repeats,
        reduced=False,
    )
    return row


# -- report ------------------------------------------------------------------------------------------------


def _environment(device: torch.device) -> dict[str, Any]:
    import transformers

    env = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: a header saying what and how, then one table row per frames x method."""
    s, env = report["settings"], report["environment"]
    lines = ["# GPU TTFT profile", ""]
    if report["dry_run"]:
        lines += ["**Dry run** (CPU, tiny model): checks the script end to end; the numbers mean nothing.", ""]
    if not report["complete"]:
        lines += ["**Incomplete**: the run stopped before every configuration was measured.", ""]
    lines += [
        f"Model: {report['model']}, {s['dtype']}, attention `{report['attention']}`. Device: "
        f"{env.get('gpu', env['device'])}. Every method at retention {s['retention']:g}; timing by "
        f"{report['timing']}; medians of {s['repeats']} repeat(s) after {s['warmup']} warm-up(s) per "
        f"configuration. Vision: the upstream encoder for `none`, encoder + saliency map for the "
        f"methods; prune: the adapter's pruning and input rewrite. Peak memory: {report['peak_memory']}. "
        f"Syncs: host-device synchronisations inside `tango_prune.prune` "
        f'(`torch.cuda.set_sync_debug_mode("warn")`), n/a when not counted; sync ops: the calls inside it '
        f"that synchronise on CUDA, counted on any device (`tango_prune.bench.syncs.SyncCounter`). "
        f"Total wall time {report['elapsed_s']:.0f} s.",
        "",
        "| frames | method | visual tokens | vision ms | prune ms | prefill ms | TTFT ms | TTFT speedup "
        "| peak GiB | syncs | sync ops |",
        "|" + "---|" * 11,
    ]
    for r in report["rows"]:
        speed = "-" if r["ttft_speedup"] is None else f"{r['ttft_speedup']:.2f}x"
        syncs = "-" if r["method"] == "none" else ("n/a" if r["syncs"] is None else str(r["syncs"]))
        ops = "-" if r["method"] == "none" else ("n/a" if r.get("sync_ops") is None else str(r["sync_ops"]))
        mark = " (reduced)" if r["reduced"] else ""
        lines.append(
            f"| {r['frames']} | {r['method']}{mark} | {r['visual_tokens']} | {r['vision_ms']:.1f} "
            f"| {r['prune_ms']:.1f} | {r['prefill_ms']:.1f} | {r['ttft_ms']:.1f} | {speed} "
            f"| {r['peak_gib']:.2f} | {syncs} | {ops} |"
        )
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def _write(out: str, report: dict[str, Any]) -> None:
    from tango_prune.commands._checks import atomic_write_json, atomic_write_text

    atomic_write_json(os.path.join(out, JSON_NAME), report)
    atomic_write_text(os.path.join(out, MD_NAME), markdown(report))


# -- command line ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; unset options take the GPU defaults, or the dry-run ones with ``--dry-run``."""
    from tango_prune.commands._checks import nonnegative_int, positive_int

    ap = argparse.ArgumentParser(
        prog="gpu_profile.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--out", required=True, help="directory for gpu_profile.json and gpu_profile.md")
    ap.add_argument("--dry-run", action="store_true", help=f"CPU check with a tiny model: {_DRY_RUN}")
    ap.add_argument(
        "--model",
        default=None,
        help=f"preset or save_pretrained directory (default {_GPU_RUN['model']}; dry run {_DRY_RUN['model']})",
    )
    ap.add_argument("--device", default=None, help="torch device (default cuda; dry run cpu)")
    ap.add_argument("--dtype", default=None, choices=sorted(_DTYPES), help="default bfloat16; dry run float32")
    ap.add_argument("--frames", type=positive_int, nargs="+", default=None, help="frame counts (default 32 64)")
    ap.add_argument("--methods", default=None, help="comma-separated methods (default: every registered one)")
    ap.add_argument("--retention", type=float, default=0.1, help="retention of every method (default 0.1)")
    ap.add_argument("--warmup", type=nonnegative_int, default=None, help="discarded runs per configuration")
    ap.add_argument("--repeats", type=positive_int, default=None, help="timed runs per configuration")
    ap.add_argument("--count-syncs", action="store_true", help="count host-device syncs inside prune (CUDA)")
    ap.add_argument(
        "--budget-s",
        type=positive_int,
        default=480,
        help="past 60%% of this many seconds, remaining configurations run 0 warm-ups + 1 repeat",
    )
    args = ap.parse_args(argv)
    for key, value in (_DRY_RUN if args.dry_run else _GPU_RUN).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def prepare(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Check ``args`` (``ValueError`` naming the option) and load the model; returns the measurement context
    (``model``, ``family``, ``device``, ``dtype``, ``methods``, ``report`` skeleton, start time ``t0``)."""
    import tango_prune
    from tango_prune.bench.families import family_for
    from tango_prune.bench.presets import PRESETS
    from tango_prune.commands._checks import check_out_dir, resolve_device

    t0 = time.perf_counter()
    device = resolve_device(args.device)
    methods = (
        tango_prune.methods() if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    )
    if not methods:
        raise ValueError("--methods must name at least one method")
    for m in methods:
        try:
            tango_prune.make_config(m, retention=args.retention)
        except ValueError as exc:
            option = "--retention" if str(exc).startswith("retention") else "--methods"
            raise ValueError(f"{option}: {exc}") from None
    if args.model not in PRESETS and not os.path.isdir(args.model):
        raise ValueError(f"--model must be a preset ({sorted(PRESETS)}) or a model directory, got {args.model!r}")
    check_out_dir(args.out)
    dtype = _DTYPES[args.dtype]
    model, desc = load(args.model, dtype, device)
    family = family_for(model)  # ValueError naming the supported classes
    log(f"model ready in {time.perf_counter() - t0:.0f} s: {desc}")
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "dry_run": bool(args.dry_run),
        "complete": False,
        "command": " ".join(["python", "benchmarks/gpu_profile.py"] + list(args.argv)),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": desc,
        "attention": str(getattr(model.config, "_attn_implementation", None)),
        "timing": "CUDA events" if device.type == "cuda" else "time.perf_counter (CPU)",
        "peak_memory": (
            "torch.cuda.max_memory_allocated, reset per configuration, weights included"
            if device.type == "cuda"
            else "process RSS (CPU), sampled every 5 ms"
        ),
        "settings": {
            "frames": list(args.frames),
            "methods": methods,
            "retention": args.retention,
            "dtype": args.dtype,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "count_syncs": bool(args.count_syncs),
            "budget_s": args.budget_s,
        },
        "environment": _environment(device),
        "rows": [],
        "elapsed_s": 0.0,
    }
    return dict(model=model, family=family, device=device, dtype=dtype, methods=methods, report=report, t0=t0)


def run(args: argparse.Namespace, ctx: dict[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every frames x method configuration of ``ctx`` (from :func:`prepare`), writing the report
    into ``args.out`` after each one; returns the report."""
    from tango_prune.bench import BenchSpec
    from tango_prune.bench.presets import PRESETS

    model, family, device, dtype = ctx["model"], ctx["family"], ctx["device"], ctx["dtype"]
    methods, report, t0 = ctx["methods"], ctx["report"], ctx["t0"]
    for frames in args.frames:
        spec = BenchSpec(
            model=args.model,
            methods=tuple(methods),
            retentions=(args.retention,),
            frames=frames,
            dtype=args.dtype,
            device=str(device),
        )
        default_size = PRESETS[args.model].image_size if args.model in PRESETS else None
        inp = family.bench_inputs(model, spec, family.bench_frame_size(model, None, default_size), device)
        inp = dataclasses.replace(inp, pixels=inp.pixels.to(dtype))
        base = None
        for method in [None] + methods:
            reduced = time.perf_counter() - t0 > 0.6 * args.budget_s
            warmup, repeats = (0, 1) if reduced else (args.warmup, args.repeats)
            row = profile_config(model, family, inp, method, args.retention, device, warmup, repeats, args.count_syncs)
            row["reduced"] = reduced
            base = base or row
            row["ttft_speedup"] = base["ttft_ms"] / row["ttft_ms"]
            report["rows"].append(row)
            report["elapsed_s"] = time.perf_counter() - t0
            _write(args.out, report)
            log(f"{frames} frames, {row['method']}: TTFT {row['ttft_ms']:.1f} ms ({row['visual_tokens']} tokens)")
    report["complete"] = True
    report["elapsed_s"] = time.perf_counter() - t0
    _write(args.out, report)
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python benchmarks/gpu_profile.py --out DIR [--dry-run] [--count-syncs] ...``."""
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        ctx = prepare(args)
    except ValueError as exc:  # a user mistake: one line, no traceback (measurement errors keep theirs)
        print(f"gpu_profile.py: error: {exc}", file=sys.stderr)
        return 2
    report = run(args, ctx)
    print(f"wrote {os.path.join(args.out, JSON_NAME)} and {MD_NAME} in {report['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
