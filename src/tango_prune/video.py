"""Video decoding with PyAV: uniform frame sampling with the real time of every sampled frame.

The one decoder of the project (``run``, ``show``, ``bench`` and the testbed all use it). Two passes over the
file: the first reads presentation times only, the second converts just the sampled frames to RGB, so memory
holds ``num_frames`` frames whatever the length or resolution of the video.
"""

from __future__ import annotations

import os

import numpy as np

from .validate import check_int

__all__ = ["load_video", "monotonic_times"]


def _frame_time(frame, index: int, rate: float | None) -> float:
    """Presentation time in seconds; falls back to index / rate when the container has no timestamps."""
    if frame.time is not None:
        return float(frame.time)
    return index / rate if rate else float(index)


def monotonic_times(times: list[float], rate: float | None) -> np.ndarray:
    """Presentation times made non-decreasing across timestamp resets.

    Concatenated transport streams (and some edited files) restart their clock mid-file; read naively the
    second part would lie *before* the first, and ST-RoPE would place those frames in the past. Each time the
    clock goes backwards, the rest of the file is shifted to continue one frame interval after the frame
    before the reset (the interval is ``1 / rate``, else the median positive step, else 1 s).
    """
    t = np.asarray(times, dtype=np.float64)
    if t.size < 2 or bool(np.all(np.diff(t) >= 0)):
        return t
    steps = np.diff(t)
    pos = steps[steps > 0]
    dt = 1.0 / rate if rate else (float(np.median(pos)) if pos.size else 1.0)
    out = t.copy()
    offset = 0.0
    for i in range(1, t.size):
        if t[i] < t[i - 1]:
            offset = out[i - 1] + dt - t[i]
        out[i] = t[i] + offset
    return out


def load_video(path: str | os.PathLike, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``num_frames`` frames sampled uniformly over the whole video.

    Frame indices are ``round(linspace(0, n - 1, num_frames))`` over the ``n`` decoded frames (fewer frames
    when the video is shorter: each frame is used at most once). Returns ``(frames, timestamps)``: uint8
    RGB frames (T, H, W, 3) and float64 presentation times in seconds (T,), taken from the stream's
    timestamps (``frame.time``), so variable frame rates are honoured; a clock that resets mid-file is made
    continuous (:func:`monotonic_times`). Raises ``ValueError`` naming the file for a missing, audio-only or
    undecodable file, and for ``num_frames`` that is not an integer >= 1.
    """
    import av

    check_int("num_frames", num_frames, 1)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"video file {path!r} does not exist")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError(f"video file {path!r} has no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate) if stream.average_rate else None
            # First pass: timestamps only (cheap), so that sampling does not depend on a header frame count
            # that many containers get wrong.
            times = [_frame_time(f, i, rate) for i, f in enumerate(container.decode(stream))]
        n = len(times)
        times = monotonic_times(times, rate).tolist()
        if n == 0:
            raise ValueError(f"video file {path!r} contains no decodable frames")
        wanted = np.unique(np.round(np.linspace(0, n - 1, min(num_frames, n))).astype(np.int64))
        frames, stamps = [], []
        with av.open(path) as container:
            stream = container.streams.video[0]
            want = set(wanted.tolist())
            for i, f in enumerate(container.decode(stream)):
                if i in want:
                    frames.append(f.to_ndarray(format="rgb24"))
                    stamps.append(times[i])
                if i >= wanted[-1]:
                    break
    except (av.error.FFmpegError, OSError) as exc:  # checked first: some FFmpeg errors are ValueErrors
        raise ValueError(f"video file {path!r} cannot be decoded: {exc}") from None
    return np.stack(frames).astype(np.uint8), np.asarray(stamps, dtype=np.float64)
