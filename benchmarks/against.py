"""Time tango-prune against another implementation, in one process, alternating runs on the same inputs.

The other side is either a ``tango_prune`` package directory from another checkout (imported under the
name ``tango_prune_against``, e.g. ``git worktree add /tmp/oldmain d30b986`` then
``--against /tmp/oldmain/src/tango_prune``) or ``FILE.py:NAME``, a callable ``NAME(tokens, config)``
returning a :class:`PruneResult`-like object with ``indices`` and ``features``. Both sides get the same
tensors and the same config fields; runs alternate (A B A B ...) so that machine load hits both alike.
The kept indices must be equal (and the features, unless ``--indices-only``); the script prints each
side's times and the ratio other / ours.

Default input (issue 14): 32 frames x 14 x 14 x D = 3584 of the synthetic shapes video with a scene cut
every 8 frames (four scenes of eight similar frames), retention 0.1, HoliTom segmentation,
``compat="published"``::

    python benchmarks/against.py --against /tmp/oldmain/src/tango_prune
    python benchmarks/against.py --against /tmp/oldmain/src/tango_prune --frames 64 --dim 896 --method holitom
    python benchmarks/against.py --against /tmp/oldmain/src/tango_prune --dtype bfloat16

``--variants`` times config variants of this checkout against each other instead (no other side), each
``key=value[,key=value...]`` over the base fields (``""``: the base itself), the first being the
reference: it prints each variant's kept tokens, the overlap of its kept indices with the reference's
(|A & B| / |A|) and its time ratio to the reference. ``--preset`` takes the base config from
``TangoConfig.preset`` instead of ``--segmentation``/``--compat``. The one-segment trade-off::

    python benchmarks/against.py --preset llava-onevision --frames 64 --dim 896 --cut-every 16 \
        --variants "" segmentation=none segmentation=none,max_cluster_tokens=4096
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import statistics
import sys
import time

import torch

import tango_prune as tp
from tango_prune.synthetic import synthetic_tokens


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_other(spec: str):
    """The callable ``fn(tokens, method, fields) -> result`` named by ``--against``."""
    if os.path.isdir(spec):
        name = "tango_prune_against"
        init = os.path.join(spec, "__init__.py")
        mod_spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[spec])
        mod = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = mod
        mod_spec.loader.exec_module(mod)

        def run(tokens, method, fields):
            """Prune with the other checkout's ``prune`` on a copy of the token container (same tensors)."""
            other = mod.VideoTokens(tokens.features, tokens.saliency, tokens.timestamps, tokens.metric)
            return mod.prune(other, method, **fields)

        return run
    path, _, attr = spec.rpartition(":")
    mod_spec = importlib.util.spec_from_file_location("against_file", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    fn = getattr(mod, attr)
    return lambda tokens, method, fields: fn(tokens, {"method": method, **fields})


def time_alternating(fns: list, repeats: int) -> list[list[float]]:
    """Run every function ``repeats`` times, interleaved, and return the wall times per function."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return times


def compare_variants(tok: tp.VideoTokens, args: argparse.Namespace, fields: dict) -> None:
    """Time the config variants of ``--variants`` alternately on ``tok`` and print them against the first."""
    from prune_speed import parse_variant  # the same directory: sys.path[0] when run as a script

    try:
        variants = [parse_variant(v) for v in args.variants]
    except ValueError as err:
        raise SystemExit(str(err)) from None
    if args.preset:
        if args.method != "tango":
            raise SystemExit("--preset is for --method tango")
        base = tp.TangoConfig.preset(args.preset, retention=args.retention)
        try:
            configs = [dataclasses.replace(base, **v) for v in variants]
        except (TypeError, ValueError) as err:  # a field the config does not have, or a bad value
            raise SystemExit(f"--variants: {err}") from None
        fns = [lambda c=c: tp.prune(tok, c) for c in configs]
    else:
        fns = [lambda v=v: tp.prune(tok, args.method, **{**fields, **v}) for v in variants]
    kept = [fn().indices.cpu() for fn in fns]  # warm-up, and the kept tokens
    times = time_alternating(fns, args.repeats)
    print(
        f"{args.method} on {args.frames} x 14 x 14 x {args.dim}, scene cut every {args.cut_every} "
        f"(base {args.preset or fields}), {args.repeats} alternating runs, {torch.get_num_threads()} threads"
    )
    print("| variant | kept | overlap with the first | best (ms) | median (ms) | best / first | median / first |")
    print("|---|---|---|---|---|---|---|")
    for text, idx, t in zip(args.variants, kept, times):
        overlap = int(torch.isin(kept[0], idx).sum()) / kept[0].numel()
        print(
            f"| {text or '(base)'} | {idx.numel()} | {overlap:.4f} | {min(t) * 1000:.1f} | "
            f"{statistics.median(t) * 1000:.1f} | {min(t) / min(times[0]):.2f} | "
            f"{statistics.median(t) / statistics.median(times[0]):.2f} |"
        )


def main() -> None:
    """Parse the arguments, check that both sides agree, time them alternately and print the ratios."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    side = ap.add_mutually_exclusive_group(required=True)
    side.add_argument("--against", help="tango_prune package directory, or FILE.py:NAME")
    side.add_argument("--variants", nargs="+", metavar="KEY=VALUE[,KEY=VALUE]", help="config variants to compare")
    ap.add_argument("--preset", default=None, help="base Tango config from TangoConfig.preset(PRESET)")
    ap.add_argument("--method", default="tango")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--dim", type=int, default=3584)
    ap.add_argument("--cut-every", type=int, default=8)
    ap.add_argument("--noise", type=float, default=0.0, help="add Gaussian noise (times the feature std)")
    ap.add_argument("--retention", type=float, default=0.1)
    ap.add_argument("--segmentation", default="holitom")
    ap.add_argument("--compat", default="published")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--indices-only", action="store_true", help="do not require equal features")
    ap.add_argument(
        "--dtype", choices=sorted(DTYPES), default="float32", help="feature dtype (Video LLMs run bfloat16)"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = synthetic_tokens(args.frames, grid=14, dim=args.dim, seed=0, cut_every=args.cut_every)
    if args.noise:
        # Camera noise: every token moves a little, so fewer positions are exactly static.
        g = torch.Generator().manual_seed(1)
        f = tok.features
        f = f + args.noise * f.std() * torch.randn(f.shape, generator=g, dtype=f.dtype)
        tok = tp.VideoTokens(f, tok.saliency, tok.timestamps)
    if args.dtype != "float32":
        tok = tp.VideoTokens(tok.features.to(DTYPES[args.dtype]), tok.saliency, tok.timestamps)
    fields = {"retention": args.retention}
    if args.method == "tango" and not args.preset:
        fields.update(segmentation=args.segmentation, compat=args.compat)
    if args.variants is not None:
        compare_variants(tok, args, fields)
        return
    other = load_other(args.against)
    ours = lambda: tp.prune(tok, args.method, **fields)  # noqa: E731
    theirs = lambda: other(tok, args.method, fields)  # noqa: E731
    a, b = ours(), theirs()  # warm-up, and the equality check
    same_idx = torch.equal(a.indices.cpu(), b.indices.cpu())
    same_feat = same_idx and torch.equal(a.features.cpu(), b.features.cpu())
    t_ours, t_theirs = time_alternating([ours, theirs], args.repeats)
    print(
        f"{args.method} on {args.frames} x 14 x 14 x {args.dim} ({fields}), {args.repeats} alternating runs, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"kept tokens: {a.num_kept} vs {len(b.indices)}; same indices: {same_idx}; same features: {same_feat}")
    for name, t in (("ours", t_ours), ("against", t_theirs)):
        print(
            f"{name:8s} best {min(t) * 1000:9.1f} ms  median {statistics.median(t) * 1000:9.1f} ms  "
            f"runs {' '.join(f'{x * 1000:.0f}' for x in t)}"
        )
    print(
        f"ratio against / ours: best {min(t_theirs) / min(t_ours):.2f}x, "
        f"median {statistics.median(t_theirs) / statistics.median(t_ours):.2f}x, "
        f"per pair {' '.join(f'{y / x:.2f}' for x, y in zip(t_ours, t_theirs))}"
    )
    if not same_idx or not (same_feat or args.indices_only):
        sys.exit("results differ")


if __name__ == "__main__":
    main()
