"""Video decoding with PyAV: uniform frame sampling with the real time of every sampled frame."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["load_video"]


def _frame_time(frame, index: int, rate: float | None) -> float:
    """Presentation time in seconds; falls back to index / rate when the container has no timestamps."""
    if frame.time is not None:
        return float(frame.time)
    return index / rate if rate else float(index)


def load_video(path: str | os.PathLike, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``num_frames`` frames sampled uniformly over the whole video.

    Frame indices are ``round(linspace(0, n - 1, num_frames))`` over the ``n`` decoded frames (fewer frames
    when the video is shorter: each frame is used at most once). Returns ``(frames, timestamps)``: uint8
    RGB frames (T, H, W, 3) and float64 presentation times in seconds (T,), taken from the stream's
    timestamps (``frame.time``), so variable frame rates are honoured. Raises ``ValueError`` for a missing
    or undecodable file or ``num_frames < 1``.
    """
    import av

    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be an integer >= 1, got {num_frames!r}")
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
