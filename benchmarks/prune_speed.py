"""Time and peak extra memory of ``tango_prune.prune`` on synthetic videos.

Each configuration runs in a fresh subprocess so memory figures do not leak between runs. On CPU the
extra memory is the growth of the resident set during ``prune`` (peak RSS, reset via
/proc/self/clear_refs, minus RSS before the call; the input tensors are excluded); on CUDA it is
``torch.cuda.max_memory_allocated`` minus the allocation before the call.

Usage::

    python benchmarks/prune_speed.py                      # the README table (T x D grid, both modes)
    python benchmarks/prune_speed.py --frames 8 32 --dims 896 --modes default --repeats 3
    python benchmarks/prune_speed.py --device cuda
    python benchmarks/prune_speed.py --methods holitom fastvid visionzip --frames 512 --dims 3584 --repeats 1

To time against another implementation in the same process, see ``benchmarks/against.py``.

Modes: ``default`` is the LLaVA-OneVision preset (HoliTom segmentation) on a shapes video with a scene
cut every 16 frames; ``one-segment`` forces a single segment over the whole video, the worst case for
the clustering (the whole video's context pool), which exercises the frame windows of
``max_cluster_tokens``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _config(method: str, mode: str, retention: float):
    import tango_prune as tp

    if method == "tango":
        extra = {"segmentation": "none"} if mode == "one-segment" else {}
        return tp.TangoConfig.preset("llava-onevision", retention=retention, **extra)
    from tango_prune.methods import get

    return get(method).config_class(retention=retention)


def _child(T: int, D: int, mode: str, retention: float, repeats: int, device: str, method: str = "tango") -> dict:
    import torch

    import tango_prune as tp
    from tango_prune.synthetic import synthetic_tokens

    # one-segment: Tango is forced to one segment; the baselines get a static camera (no scene cut), which
    # makes their own segmentation (HoliTom, FastVID) produce one long segment.
    cut = 0 if (mode == "one-segment" and method != "tango") else 16
    tok = synthetic_tokens(T, grid=14, dim=D, seed=0, cut_every=cut)
    if device != "cpu":
        tok = tp.VideoTokens(tok.features.to(device), tok.saliency.to(device), tok.timestamps.to(device))
    cfg = _config(method, mode, retention)
    tp.prune(synthetic_tokens(4, grid=14, dim=D, seed=1), cfg)  # warm-up: lazy torch initialisation
    times = []
    peak_extra = 0
    result = None
    for _ in range(repeats):
        if device == "cpu":
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
    return {
        "method": method,
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
    ap.add_argument("--modes", nargs="+", default=["default", "one-segment"], choices=["default", "one-segment"])
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
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--_child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        T, D, mode, dev, method = args._child
        print(json.dumps(_child(int(T), int(D), mode, args.retention, args.repeats, dev, method)))
        return

    rows = []
    print(
        f"prune speed, retention {args.retention}, 196 tokens/frame, device {args.device}, "
        f"{args.repeats} repeats (best shown), {os.cpu_count()} CPU cores"
    )
    print(
        "| method | mode | T | D | tokens | kept | segments | best time (ms) | ms / frame | peak extra memory (MiB) "
        "| input (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for method, mode, D, T in (
        (m, mo, D, T) for m in args.methods for mo in args.modes for D in args.dims for T in args.frames
    ):
        if mode == "one-segment" and T > args.max_one_segment_frames:
            continue
        cmd = [
            sys.executable,
            __file__,
            "--retention",
            str(args.retention),
            "--repeats",
            str(args.repeats),
            "--_child",
            str(T),
            str(D),
            mode,
            args.device,
            method,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            lines = out.stderr.strip().splitlines()
            # a child killed by a signal (e.g. out of memory) leaves no traceback: report the signal instead
            why = lines[-1] if lines else f"exit code {out.returncode} (killed by a signal if negative)"
            print(f"| {method} | {mode} | {T} | {D} | failed: {why} |")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"| {method} | {mode} | {T} | {D} | {row['tokens']} | {row['kept']} | {row['segments']} | "
            f"{1000 * row['best_s']:.1f} | {1000 * row['best_s'] / T:.2f} | "
            f"{row['extra_bytes'] / 2**20:.0f} | {row['input_bytes'] / 2**20:.0f} |",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
