"""Time and peak extra memory of ``tango_prune.prune`` on synthetic videos.

Each configuration runs in a fresh subprocess so memory figures do not leak between runs. On CPU the
extra memory is the growth of the resident set during ``prune`` (peak RSS, reset via
/proc/self/clear_refs after glibc's ``malloc_trim`` has returned freed heap pages, minus RSS before the
call; the input tensors are excluded); on CUDA it is
``torch.cuda.max_memory_allocated`` minus the allocation before the call.

Usage::

    python benchmarks/prune_speed.py                      # the README table (T x D grid, both modes)
    python benchmarks/prune_speed.py --frames 8 32 --dims 896 --modes default --repeats 3
    python benchmarks/prune_speed.py --device cuda
    python benchmarks/prune_speed.py --methods holitom fastvid visionzip --frames 512 --dims 3584 --repeats 1
    python benchmarks/prune_speed.py --frames 64 --dims 896 --modes one-segment \
        --set max_cluster_tokens=4096 gram_bytes=1073741824

``--set`` runs every row once per listed config variant (``key=value[,key=value...]``, values as Python
literals) after the unchanged config, and adds the overlap of each variant's kept indices with those of
the unchanged config on the same input, |A & B| / |A|.

To time against another implementation in the same process, see ``benchmarks/against.py``.

Modes: ``default`` is the LLaVA-OneVision preset (HoliTom segmentation) on a shapes video with a scene
cut every 16 frames; ``one-segment`` forces a single segment over the whole video, the worst case for
the clustering (the whole video's context pool), which exercises the frame windows of
``max_cluster_tokens``; ``static-camera`` is the default configuration on the same video without scene cuts
(objects keep moving over a fixed background), the case a single segment is usually feared for, where the
segmentation still decides.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import ast
import json
import os
import subprocess
import sys
import tempfile
import time


def _malloc_trim() -> None:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim``); a no-op where there is none."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def parse_variant(text: str) -> dict:
    """``"a=1,b=x"`` as ``{"a": 1, "b": "x"}`` (values as Python literals, else strings); ``""`` is ``{}``."""
    out = {}
    for item in filter(None, text.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"a config variant must be key=value[,key=value...], got {text!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _config(method: str, mode: str, retention: float, overrides: dict | None = None):
    import tango_prune as tp

    overrides = overrides or {}
    if method == "tango":
        extra = {"segmentation": "none"} if mode == "one-segment" else {}
        return tp.TangoConfig.preset("llava-onevision", retention=retention, **extra, **overrides)
    from tango_prune.methods import get

    return get(method).config_class(retention=retention, **overrides)


def _child(
    T: int,
    D: int,
    mode: str,
    retention: float,
    repeats: int,
    device: str,
    method: str = "tango",
    overrides: dict | None = None,
    indices_path: str | None = None,
) -> dict:
    import torch

    import tango_prune as tp
    from tango_prune.synthetic import synthetic_tokens

    # one-segment: Tango is forced to one segment; the baselines get a static camera (no scene cut), which
    # leaves their own segmentation (HoliTom, FastVID) without cuts to find. static-camera: no scene cut, and
    # every method segments as it does by default.
    cut = 0 if mode == "static-camera" or (mode == "one-segment" and method != "tango") else 16
    tok = synthetic_tokens(T, grid=14, dim=D, seed=0, cut_every=cut)
    if device != "cpu":
        tok = tp.VideoTokens(tok.features.to(device), tok.saliency.to(device), tok.timestamps.to(device))
    cfg = _config(method, mode, retention, overrides)
    tp.prune(synthetic_tokens(4, grid=14, dim=D, seed=1), cfg)  # warm-up: lazy torch initialisation
    times = []
    peak_extra = 0
    result = None
    for _ in range(repeats):
        if device == "cpu":
            # Hand freed heap pages back first: otherwise prune reuses pages that are already resident
            # (from building the input, or the previous repeat) and its allocations do not show in RSS.
            _malloc_trim()
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")  # reset the peak-RSS counter
            except OSError:
                pass
            base = _rss_kib("VmRSS")
        else:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        result = tp.prune(tok, cfg)
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if device == "cpu":
            peak_extra = max(peak_extra, (_rss_kib("VmHWM") - base) * 1024)
        else:
            peak_extra = max(peak_extra, torch.cuda.max_memory_allocated() - base)
    if indices_path:
        torch.save(result.indices.cpu(), indices_path)
    return {
        "method": method,
        "set": overrides or {},
        "T": T,
        "D": D,
        "mode": mode,
        "tokens": T * 196,
        "kept": result.num_kept,
        "segments": len(result.info.get("segments", [1])),
        "windows_split": result.info.get("context_windows_split", 0),
        "best_s": min(times),
        "median_s": sorted(times)[len(times) // 2],
        "extra_bytes": peak_extra,
        "input_bytes": tok.features.numel() * tok.features.element_size(),
    }


def main() -> None:
    """Run every requested configuration in a fresh subprocess and print the Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 32, 64, 256, 1024])
    ap.add_argument("--dims", type=int, nargs="+", default=[896, 3584])
    ap.add_argument(
        "--modes", nargs="+", default=["default", "one-segment"], choices=["default", "one-segment", "static-camera"]
    )
    ap.add_argument("--retention", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--max-one-segment-frames",
        type=int,
        default=1024,
        help="skip one-segment runs above this many frames (they cost O(T * max_cluster_tokens))",
    )
    ap.add_argument("--methods", nargs="+", default=["tango"], help="methods to time (default: tango)")
    ap.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="config variants, each run after the unchanged config, with the overlap of its kept indices",
    )
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--_child", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--_overrides", default="", help=argparse.SUPPRESS)
    ap.add_argument("--_indices", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        T, D, mode, dev, method = args._child
        row = _child(
            int(T),
            int(D),
            mode,
            args.retention,
            args.repeats,
            dev,
            method,
            parse_variant(args._overrides),
            args._indices,
        )
        print(json.dumps(row))
        return
    try:
        variants = [""] + [v for v in args.set if parse_variant(v)]
    except ValueError as err:
        ap.error(str(err))
    with tempfile.TemporaryDirectory() as tmp:
        rows = _run_rows(args, variants, tmp)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


def _run_rows(args: argparse.Namespace, variants: list[str], tmp: str) -> list[dict]:
    """Run and print every row (one subprocess each); with variants, compare each to the unchanged one."""
    import torch

    rows = []
    with_set = len(variants) > 1
    print(
        f"prune speed, retention {args.retention}, 196 tokens/frame, device {args.device}, "
        f"{args.repeats} repeats (best shown), {os.cpu_count()} CPU cores, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    extra_head = " set | overlap with unchanged | x default mode ms / frame |" if with_set else ""
    print(
        "| method | mode | T | D | tokens | kept | segments | best time (ms) | ms / frame | peak extra memory (MiB) "
        "| input (MiB) |" + extra_head
    )
    print("|---" * (11 + 3 * with_set) + "|")
    default_ms: dict[tuple, float] = {}  # ms / frame of the default mode, unchanged config
    for method, mode, D, T in (
        (m, mo, D, T) for m in args.methods for mo in args.modes for D in args.dims for T in args.frames
    ):
        if mode == "one-segment" and T > args.max_one_segment_frames:
            continue
        for v, variant in enumerate(variants):
            where = os.path.join(tmp, f"{method}-{mode}-{T}-{D}-{v}.pt")
            cmd = [sys.executable, __file__, "--retention", str(args.retention), "--repeats", str(args.repeats)]
            cmd += ["--_overrides", variant, "--_indices", where, "--_child", str(T), str(D), mode, args.device, method]
            out = subprocess.run(cmd, capture_output=True, text=True)
            label = variant or "unchanged"
            if out.returncode != 0:
                lines = out.stderr.strip().splitlines()
                # a child killed by a signal (e.g. out of memory) leaves no traceback: report the signal
                why = lines[-1] if lines else f"exit code {out.returncode} (killed by a signal if negative)"
                print(f"| {method} | {mode} | {T} | {D} | failed ({label}): {why} |", flush=True)
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            ms = 1000 * row["best_s"] / T
            if mode == "default" and not variant:
                default_ms[(method, D, T)] = ms
            extra = ""
            if with_set:
                base = os.path.join(tmp, f"{method}-{mode}-{T}-{D}-0.pt")
                if os.path.exists(base):
                    a, b = torch.load(base), torch.load(where)
                    row["overlap"] = int(torch.isin(a, b).sum()) / a.numel()
                ratio = ms / default_ms[(method, D, T)] if (method, D, T) in default_ms else None
                row["x_default_mode"] = ratio
                overlap = f"{row['overlap']:.4f}" if "overlap" in row else "-"
                extra = f" {label} | {overlap} | {'-' if ratio is None else f'{ratio:.1f}'} |"
            rows.append(row)
            print(
                f"| {method} | {mode} | {T} | {D} | {row['tokens']} | {row['kept']} | {row['segments']} | "
                f"{1000 * row['best_s']:.1f} | {ms:.2f} | "
                f"{row['extra_bytes'] / 2**20:.0f} | {row['input_bytes'] / 2**20:.0f} |" + extra,
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main()
