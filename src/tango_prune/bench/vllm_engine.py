"""``tango-prune bench --engine vllm``: serving throughput of a vLLM engine with and without the plugin.

For the unpruned model and every (method, retention), one in-process vLLM engine serves the same batch of
requests (one synthetic video each, the same prompt); after a discarded warm-up batch, every timed batch is
one ``LLM.generate`` call. Reported per configuration: requests/s, prefill tokens/s (prompt tokens the LLM
processed, placeholders included, per second of the batch) and the ratios to the unpruned engine. On a
shared CPU only the ratios mean something; engine start-up is not timed.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from typing import Any, Callable

import numpy as np

__all__ = ["VllmBenchSpec", "run_vllm_bench", "vllm_markdown"]


@dataclasses.dataclass(frozen=True)
class VllmBenchSpec:
    """What ``tango-prune bench --engine vllm`` measures."""

    model: str
    methods: tuple[str, ...] = ("tango",)
    retentions: tuple[float, ...] = (0.1,)
    requests: int = 4
    frames: int = 16
    frame_size: int = 448
    fps: float = 2.0
    new_tokens: int = 1
    warmup: int = 1
    repeats: int = 3
    dtype: str = "float32"
    max_model_len: int | None = None

    def __post_init__(self) -> None:
        if not os.path.isdir(self.model):
            raise ValueError(
                f"--model: the vLLM engine needs a checkpoint directory (with its processor), got {self.model!r}"
            )
        for name in ("requests", "frames", "frame_size", "new_tokens", "repeats") + (
            ("max_model_len",) if self.max_model_len is not None else ()
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be a non-negative integer, got {self.warmup!r}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps!r}")


def _architecture(model_dir: str) -> str:
    """The plugin architecture serving the checkpoint's upstream class."""
    import json

    from ..vllm.config import ARCHITECTURES

    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        upstream = (json.load(f).get("architectures") or [""])[0]
    for arch, (_target, up) in ARCHITECTURES.items():
        if up == upstream:
            return arch
    served = sorted(up for _t, up in ARCHITECTURES.values())
    raise ValueError(f"--model: the vLLM plugin serves {served}, not {upstream!r}")


def _requests(spec: VllmBenchSpec, video_token: str) -> list[dict]:
    """One request per seed: a synthetic video (uniform noise, seeded) and the same short prompt."""
    out = []
    for i in range(spec.requests):
        frames = np.random.default_rng(i).integers(
            0, 256, (spec.frames, spec.frame_size, spec.frame_size, 3), dtype=np.uint8
        )
        meta = {
            "fps": spec.fps,
            "duration": spec.frames / spec.fps,
            "total_num_frames": spec.frames,
            "frames_indices": list(range(spec.frames)),
            "video_backend": "opencv",
            "do_sample_frames": False,
        }
        out.append({"prompt": f"{video_token} Describe the video.", "multi_modal_data": {"video": (frames, meta)}})
    return out


def _measure(spec: VllmBenchSpec, overrides: dict, requests: list[dict], log: Callable[[str], None]) -> dict:
    import gc

    import torch

    if not torch.cuda.is_available():
        # why: vLLM's CPU backend otherwise reserves 92% of the machine's memory for its KV cache and refuses to
        # start next to anything else; an explicit VLLM_CPU_KVCACHE_SPACE (GiB) wins
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=spec.model,
        dtype=spec.dtype,
        max_model_len=spec.max_model_len,
        enforce_eager=True,
        limit_mm_per_prompt={"video": 1, "image": 0},
        max_num_seqs=max(spec.requests, 1),
        seed=0,
        enable_prefix_caching=False,
        mm_processor_cache_gb=0,
        hf_overrides=overrides,
    )
    try:
        params = SamplingParams(max_tokens=spec.new_tokens, temperature=0, ignore_eos=True)
        for _ in range(spec.warmup):
            llm.generate(requests, params, use_tqdm=False)
        times, prompt_tokens = [], 0
        for _ in range(spec.repeats):
            t0 = time.perf_counter()
            outs = llm.generate(requests, params, use_tqdm=False)
            times.append(time.perf_counter() - t0)
            prompt_tokens = sum(len(o.prompt_token_ids) for o in outs)
    finally:
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # why: best effort; the engine may already be down
            pass
        del llm
        gc.collect()
    best = min(times)
    log(f"  {len(requests)} requests in {best:.3f} s (best of {len(times)})")
    return {
        "prompt_tokens_per_request": prompt_tokens / len(requests),
        "batch_s": times,
        "requests_per_s": len(requests) / best,
        "prefill_tokens_per_s": prompt_tokens / best,
    }


def run_vllm_bench(spec: VllmBenchSpec, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Measure the unpruned engine, then every (method, retention); returns the JSON-ready report."""
    from ..vllm.config import CONFIG_KEY

    arch = _architecture(spec.model)
    try:
        import vllm
    except ImportError:
        raise ValueError("--engine vllm needs vLLM in this environment: pip install 'tango-prune[vllm]'") from None
    video_token = "<|vision_start|><|video_pad|><|vision_end|>" if "Qwen" in arch else "<video>"
    requests = _requests(spec, video_token)
    configs: list[tuple[str, float | None, dict]] = [("none", None, {})]
    for method in spec.methods:
        for r in spec.retentions:
            configs.append((method, r, {"architectures": [arch], CONFIG_KEY: {"method": method, "retention": r}}))
    rows = []
    for method, retention, overrides in configs:
        log(f"vllm bench: {method} retention={retention}")
        row = {"method": method, "retention": retention, **_measure(spec, overrides, requests, log)}
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["requests_per_s_ratio"] = row["requests_per_s"] / base["requests_per_s"]
        row["prompt_tokens_ratio"] = row["prompt_tokens_per_request"] / base["prompt_tokens_per_request"]
    return {
        "engine": "vllm",
        "spec": dataclasses.asdict(spec),
        "architecture": arch,
        "environment": {
            "vllm": vllm.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "rows": rows,
    }


def vllm_markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table (ratios to the unpruned engine last)."""
    s = report["spec"]
    lines = [
        f"vLLM {report['environment']['vllm']}, {report['architecture']}, {s['requests']} requests of "
        f"{s['frames']} frames at {s['frame_size']} px, {s['new_tokens']} new token(s), best of {s['repeats']}",
        "",
        "| method | retention | prompt tokens / request | requests/s | prefill tokens/s | requests/s vs unpruned | prompt tokens vs unpruned |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        ret = "-" if r["retention"] is None else f"{r['retention']:g}"
        lines.append(
            f"| {r['method']} | {ret} | {r['prompt_tokens_per_request']:.0f} | {r['requests_per_s']:.2f} | "
            f"{r['prefill_tokens_per_s']:.0f} | {r['requests_per_s_ratio']:.2f}x | {r['prompt_tokens_ratio']:.3f} |"
        )
    return "\n".join(lines) + "\n"
