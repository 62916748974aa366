"""Timing and memory probes for one ``generate`` call: TTFT via a logits processor, peak memory."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import torch

__all__ = ["sync", "FirstTokenClock", "PeakMemory", "timed_generate"]


def sync(device: torch.device) -> None:
    """Wait for queued work on ``device`` (no-op on CPU) so wall-clock readings are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FirstTokenClock:
    """A logits processor that records when the first token's logits are ready, and counts calls.

    Appended to ``generate``'s processors, as the paper's ``TTFTLogitsProcessor`` (docs/algorithm.md §5);
    it returns the scores unchanged.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.first: float | None = None
        self.calls = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.first is None:
            sync(self.device)
            self.first = time.perf_counter()
        self.calls += 1
        return scores


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory during a ``with`` block: CUDA ``max_memory_allocated``, or on CPU the process RSS sampled
    every ``interval`` seconds by a helper thread (Linux ``/proc``). ``peak_mib`` after the block."""

    def __init__(self, device: torch.device, interval: float = 0.005) -> None:
        self.device, self.interval = device, interval
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif os.path.exists(f"/proc/{os.getpid()}/statm"):
            self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
        self.peak_mib = self._peak / 2**20


def timed_generate(model: Any, kwargs: dict[str, Any], new_tokens: int, device: torch.device) -> dict[str, float]:
    """Run ``model.generate(**kwargs)`` for exactly ``new_tokens`` greedy tokens and time it.

    Returns ``ttft_s`` (call to first logits), ``total_s``, ``decode_tok_s`` (tokens after the first divided
    by the time after the first; 0 when only one token), ``peak_mib``.
    """
    from transformers import LogitsProcessorList

    clock = FirstTokenClock(device)
    with PeakMemory(device) as mem, torch.no_grad():
        sync(device)
        t0 = time.perf_counter()
        model.generate(
            **kwargs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            logits_processor=LogitsProcessorList([clock]),
        )
        sync(device)
        t1 = time.perf_counter()
    ttft = (clock.first or t1) - t0
    decode = t1 - (clock.first or t1)
    return {
        "ttft_s": ttft,
        "total_s": t1 - t0,
        "decode_tok_s": (clock.calls - 1) / decode if clock.calls > 1 and decode > 0 else 0.0,
        "peak_mib": mem.peak_mib,
    }
