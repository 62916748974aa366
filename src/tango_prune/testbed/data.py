"""Procedural video QA: coloured shapes that move, appear, disappear and change colour over varied backgrounds.

Everything is a pure function of integer seeds (``numpy.random.Generator`` built from a
``SeedSequence([split, index])``), so the train stream and the held-out test split are reproducible and
disjoint. A clip has 2-4 objects with distinct shapes, distinct colours and distinct motion directions, so
every question below has exactly one correct answer:

========== ======================================================= ===================================
qtype      question                                                evidence needed
========== ======================================================= ===================================
direction  what color is the shape that moves {left|right|up|down}? the mover's tokens in several frames
count      how many shapes appear in the video?                    every object, incl. short-lived ones
late       which shape appears only near the end?                  tokens of the last frames
gone       what color is the shape that disappears?                tokens of the early frames
changer    which shape changes color?                              one object's tokens before and after
change_to  what color does the {shape} turn into?                  that object's tokens after the change
static     which shape does not move?                              all objects across time
end        where is the {shape} at the end?                        that object's tokens in the last frames
========== ======================================================= ===================================

Each question is multiple choice: four options from the answer's category, the answer being one of them
(a single word of the vocabulary).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = [
    "IMAGE_SIZE",
    "NUM_FRAMES",
    "FPS",
    "SHAPES",
    "COLORS",
    "DIRECTIONS",
    "QUADRANTS",
    "NUMBERS",
    "QTYPES",
    "TRAIN",
    "TEST",
    "TEST_SIZE",
    "ObjectTrack",
    "Clip",
    "Question",
    "Sample",
    "make_clip",
    "questions_for",
    "questions_about",
    "quadrant_of",
    "make_sample",
    "heldout_indices",
    "write_mp4",
    "read_video",
    "vocabulary_words",
]

IMAGE_SIZE = 72  #: frame side in pixels (the vision tower's image size: 12x12 patches of 6 px)
NUM_FRAMES = 16  #: frames per clip
FPS = 4.0  #: frame rate of written mp4 files (16 frames = 4 s)
SHAPES = ("circle", "square", "triangle", "diamond")
COLORS = {
    "red": (230, 40, 40),
    "green": (40, 200, 70),
    "blue": (60, 100, 255),
    "yellow": (240, 220, 40),
    "purple": (200, 60, 220),
    "white": (240, 240, 240),
}
DIRECTIONS = ("left", "right", "up", "down", "none")
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")
NUMBERS = ("one", "two", "three", "four", "five")
QTYPES = ("direction", "count", "late", "gone", "changer", "change_to", "static", "end")
TRAIN, TEST = 0, 1  #: split codes mixed into the seeds; the two streams never share a clip
TEST_SIZE = 1000  #: size of the fixed held-out test split
_COLOR_NAMES = tuple(COLORS)
_STEP = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0), "none": (0.0, 0.0)}


@dataclasses.dataclass(frozen=True)
class ObjectTrack:
    """One object of a clip: what it is, when it is visible and where it is in every frame."""

    shape: str
    color: str
    direction: str
    radius: float
    appear: int  #: first visible frame
    disappear: int  #: first frame it is no longer visible (``NUM_FRAMES`` if it stays)
    positions: np.ndarray  #: (T, 2) float centre (x, y) per frame, meaningful while visible
    color_after: str | None = None
    change_frame: int = -1  #: first frame drawn in ``color_after``

    def visible(self, t: int) -> bool:
        """Whether the object is drawn in frame ``t``."""
        return self.appear <= t < self.disappear

    def color_at(self, t: int) -> str:
        """The object's colour in frame ``t``."""
        return self.color_after if (self.color_after is not None and t >= self.change_frame) else self.color


@dataclasses.dataclass(frozen=True, eq=False)
class Clip:
    """A rendered clip: ``frames`` uint8 (T, H, W, 3); per-pixel ``color_ids`` / ``shape_ids`` int8 (T, H, W)
    (0 = background, else 1 + index into :data:`COLORS` / :data:`SHAPES`); the objects that made it."""

    frames: np.ndarray
    color_ids: np.ndarray
    shape_ids: np.ndarray
    objects: tuple[ObjectTrack, ...]

    def presence(self) -> np.ndarray:
        """Per-frame multi-hot (T, len(COLORS) + len(SHAPES)) float32 of the colours and shapes visible."""
        T = self.frames.shape[0]
        out = np.zeros((T, len(COLORS) + len(SHAPES)), np.float32)
        for o in self.objects:
            for t in range(T):
                if o.visible(t):
                    out[t, _COLOR_NAMES.index(o.color_at(t))] = 1.0
                    out[t, len(COLORS) + SHAPES.index(o.shape)] = 1.0
        return out


@dataclasses.dataclass(frozen=True)
class Question:
    """A multiple-choice question: ``answer`` is one of ``options``; ``subject`` is the shape of the object
    whose tokens hold the evidence (``None`` when every object matters, as for ``count``)."""

    qtype: str
    text: str
    options: tuple[str, ...]
    answer: str
    subject: str | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Sample:
    """One QA item: the clip, its question, and the seeds that regenerate it."""

    split: int
    index: int
    clip: Clip
    question: Question


def _rng(split: int, index: int, stream: int = 0) -> np.random.Generator:
    if not isinstance(split, (int, np.integer)) or split < 0:
        raise ValueError(f"split must be a non-negative int (TRAIN=0, TEST=1), got {split!r}")
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    return np.random.default_rng(np.random.SeedSequence([int(split), int(index), stream]))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dark, textured, static background (float32 (H, W, 3) in 0..255)."""
    a = rng.uniform(5, 85, 3)
    b = rng.uniform(5, 85, 3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    kind = rng.integers(5)
    if kind == 0:  # flat
        w = np.zeros_like(xx)
    elif kind == 1:  # vertical gradient
        w = yy
    elif kind == 2:  # horizontal gradient
        w = xx
    elif kind == 3:  # stripes at a random angle and period
        ang, period = rng.uniform(0, np.pi), rng.uniform(6, 16)
        w = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) * size / period)
    else:  # soft blobs
        w = np.zeros_like(xx)
        for _ in range(4):
            cx, cy, s = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
            w += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
        w = np.clip(w, 0, 1)
    img = a[None, None] * (1 - w[..., None]) + b[None, None] * w[..., None]
    img += rng.normal(0, 5, img.shape)
    return img.astype(np.float32)


def _mask(shape: str, cx: float, cy: float, r: float, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        s = r * 0.85
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r * 1.15
    # triangle pointing up: apex at cy - r, base at cy + r
    h = (dy + r) / (2 * r)
    return (h >= 0) & (h <= 1) & (np.abs(dx) <= h * r * 1.1)


def _track(rng, shape, color, direction, appear, disappear, size, T) -> ObjectTrack:
    r = float(rng.uniform(5.5, 7.5))
    n_move = disappear - appear - 1
    speed = float(rng.uniform(2.6, 3.2) if n_move < 8 else rng.uniform(1.5, 2.3))
    stop = disappear
    if direction != "none" and n_move >= 10 and rng.random() < 0.3:  # some movers stop part-way
        stop = int(rng.integers(appear + 7, disappear - 2))
    m = r + 1.0
    sx, sy = _STEP[direction]
    path = speed * (min(stop, disappear) - appear - 1)
    path = min(path, size - 2 * m - 1)
    for _ in range(30):
        x0 = rng.uniform(m + max(0.0, -sx) * path, size - 1 - m - max(0.0, sx) * path)
        y0 = rng.uniform(m + max(0.0, -sy) * path, size - 1 - m - max(0.0, sy) * path)
        xe, ye = x0 + sx * path, y0 + sy * path
        if abs(xe - (size - 1) / 2) >= 4 and abs(ye - (size - 1) / 2) >= 4:
            break
    step = path / max(1, min(stop, disappear) - appear - 1)
    pos = np.zeros((T, 2), np.float64)
    for t in range(T):
        k = min(max(t, appear), stop - 1) - appear
        pos[t] = (x0 + sx * step * k, y0 + sy * step * k)
    return ObjectTrack(shape, color, direction, r, appear, disappear, pos)


def _apart(a: ObjectTrack, b: ObjectTrack) -> bool:
    lo, hi = max(a.appear, b.appear), min(a.disappear, b.disappear)
    if lo >= hi:
        return True
    d = np.linalg.norm(a.positions[lo:hi] - b.positions[lo:hi], axis=1)
    return bool(d.min() > a.radius + b.radius + 1.0)


def make_clip(
    split: int, index: int, size: int = IMAGE_SIZE, num_frames: int = NUM_FRAMES, still: bool = False
) -> Clip:
    """Render clip ``index`` of ``split`` (deterministic: the same arguments give the same pixels).

    ``still=True`` films the same scene with a still camera and no sensor noise: the frame noise and each
    object's brightness are drawn once for the clip instead of per frame, so a part of the picture that
    does not change is pixel-identical from frame to frame (as in screen recordings or a codec's skipped
    blocks). The scene (objects, tracks, questions) is the same as with ``still=False``."""
    if not isinstance(size, int) or size < 32:
        raise ValueError(f"size must be an int >= 32 pixels, got {size!r}")
    if not isinstance(num_frames, int) or num_frames < 12:
        raise ValueError(f"num_frames must be an int >= 12, got {num_frames!r}")
    rng = _rng(split, index)
    T = num_frames
    n = int(rng.integers(2, 5))
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:n]]
    cperm = rng.permutation(len(_COLOR_NAMES))
    colors = [_COLOR_NAMES[i] for i in cperm[:n]]
    spare_color = _COLOR_NAMES[cperm[n]]
    dirs = [DIRECTIONS[i] for i in rng.permutation(len(DIRECTIONS))[:n]]
    spans = [(0, T)] * n
    order = list(rng.permutation(n))
    if n >= 2 and rng.random() < 0.5:  # one object enters late
        spans[order.pop()] = (int(rng.integers(T - 6, T - 3)), T)
    if len(order) >= 2 and rng.random() < 0.7:  # one object leaves early (another must remain)
        spans[order.pop()] = (0, int(rng.integers(T // 3, T // 2 + 2)))
    tracks: list[ObjectTrack] = []
    for i in range(n):  # re-draw a track (a few times) while it would overlap an earlier one
        for _ in range(12):
            tr = _track(rng, shapes[i], colors[i], dirs[i], spans[i][0], spans[i][1], size, T)
            if all(_apart(tr, o) for o in tracks):
                break
        tracks.append(tr)
    full = [i for i in range(n) if spans[i] == (0, T)]
    if full and rng.random() < 0.5:  # one full-length object changes colour
        i = full[int(rng.integers(len(full)))]
        tracks[i] = dataclasses.replace(
            tracks[i], color_after=spare_color, change_frame=int(rng.integers(T // 3, 2 * T // 3 + 1))
        )
    bg = _background(rng, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = np.empty((T, size, size, 3), np.uint8)
    cids = np.zeros((T, size, size), np.int8)
    sids = np.zeros((T, size, size), np.int8)
    # Drawn after the scene, so the scene's random stream is the same with or without ``still``.
    noise = rng.normal(0, 2, bg.shape).astype(np.float32) if still else None
    shade = {o.shape: float(rng.uniform(0.9, 1.0)) for o in tracks} if still else {}
    for t in range(T):
        img = bg + (noise if noise is not None else rng.normal(0, 2, bg.shape).astype(np.float32))
        for o in tracks:
            if not o.visible(t):
                continue
            msk = _mask(o.shape, o.positions[t, 0], o.positions[t, 1], o.radius, xx, yy)
            c = o.color_at(t)
            img[msk] = np.asarray(COLORS[c], np.float32) * (shade[o.shape] if still else rng.uniform(0.9, 1.0))
            cids[t][msk] = 1 + _COLOR_NAMES.index(c)
            sids[t][msk] = 1 + SHAPES.index(o.shape)
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return Clip(frames, cids, sids, tuple(tracks))


def quadrant_of(x: float, y: float, size: int = IMAGE_SIZE) -> str | None:
    """The quadrant name of pixel centre ``(x, y)`` in a ``size`` frame, ``None`` within 4 px of a midline
    (too close to call, so no question is asked about it)."""
    c = (size - 1) / 2
    if abs(x - c) < 4 or abs(y - c) < 4:
        return None
    return ("top-" if y < c else "bottom-") + ("left" if x < c else "right")


def _options(rng: np.random.Generator, answer: str, pool: tuple[str, ...]) -> tuple[str, ...]:
    others = [p for p in pool if p != answer]
    pick = [others[i] for i in rng.permutation(len(others))[:3]] + [answer]
    return tuple(pick[i] for i in rng.permutation(len(pick)))


def questions_for(clip: Clip, rng: np.random.Generator, retrieval: bool = False) -> list[Question]:
    """Every question the clip answers unambiguously (options drawn from ``rng``).

    ``retrieval=True`` adds two single-object look-up types used only in training (``color``: what color is
    the {shape}?; ``shape``: which shape is {color}?), an easy task from which the small LLM learns to find
    an object's tokens before it learns the temporal questions."""
    return questions_about(clip.objects, clip.frames.shape[0], clip.frames.shape[1], rng, retrieval)


def questions_about(
    objs: Sequence[ObjectTrack], T: int, size: int, rng: np.random.Generator, retrieval: bool = False
) -> list[Question]:
    """:func:`questions_for` from a clip's objects, frame count and frame size alone (no pixels needed)."""
    qs: list[Question] = []

    def q(qtype, text, answer, pool, subject=None):
        qs.append(Question(qtype, text, _options(rng, answer, pool), answer, subject))

    for o in objs:
        if o.direction != "none" and o.color_after is None:
            q("direction", f"what color is the shape that moves {o.direction} ?", o.color, _COLOR_NAMES, o.shape)
    q("count", "how many shapes appear in the video ?", NUMBERS[len(objs) - 1], NUMBERS)
    if retrieval:
        for o in objs:
            if o.color_after is None:
                q("color", f"what color is the {o.shape} ?", o.color, _COLOR_NAMES, o.shape)
                q("shape", f"which shape is {o.color} ?", o.shape, SHAPES, o.shape)
    for o in objs:
        if o.appear > 0:
            q("late", "which shape appears only near the end ?", o.shape, SHAPES, o.shape)
        if o.disappear < T:
            q("gone", "what color is the shape that disappears ?", o.color, _COLOR_NAMES, o.shape)
        if o.color_after is not None:
            q("changer", "which shape changes color ?", o.shape, SHAPES, o.shape)
            q("change_to", f"what color does the {o.shape} turn into ?", o.color_after, _COLOR_NAMES, o.shape)
        if o.direction == "none":
            q("static", "which shape does not move ?", o.shape, SHAPES, o.shape)
        if o.disappear == T:
            x, y = o.positions[T - 1]
            quad = quadrant_of(x, y, size)
            if quad is not None:
                q("end", f"where is the {o.shape} at the end ?", quad, QUADRANTS, o.shape)
    return qs


def make_sample(split: int, index: int) -> Sample:
    """QA item ``index`` of ``split``: its clip and one question, the type drawn uniformly among those the
    clip supports (so question types are roughly balanced)."""
    clip = make_clip(split, index)
    rng = _rng(split, index, stream=1)
    qs = questions_for(clip, rng)
    types = sorted({x.qtype for x in qs}, key=QTYPES.index)
    qtype = types[int(rng.integers(len(types)))]
    cands = [x for x in qs if x.qtype == qtype]
    return Sample(split, index, clip, cands[int(rng.integers(len(cands)))])


def heldout_indices(limit: int | None = None) -> range:
    """Indices of the fixed held-out test split (``make_sample(TEST, i)`` for ``i`` in the range)."""
    if limit is None:
        return range(TEST_SIZE)
    if not isinstance(limit, int) or not 1 <= limit <= TEST_SIZE:
        raise ValueError(f"limit must be an int in [1, {TEST_SIZE}], got {limit!r}")
    return range(limit)


def vocabulary_words() -> list[str]:
    """Every word the questions, options and answers use (the tokenizer's base vocabulary)."""
    words = set()
    for t in (
        "what color is the shape that moves",
        "how many shapes appear in the video",
        "which shape appears only near the end",
        "what color is the shape that disappears",
        "which shape changes color",
        "what color does the turn into",
        "which shape does not move",
        "where is the at the end",
        "which shape is",
        "question : options : ? answer",
    ):
        words.update(t.split())
    words.update(SHAPES, COLORS, DIRECTIONS, QUADRANTS, NUMBERS)
    return sorted(words)


def write_mp4(frames: np.ndarray, path: str | Path, fps: float = FPS, lossless: bool = False) -> Path:
    """Write uint8 frames (T, H, W, 3) as an H.264 mp4 with PyAV; returns the path.

    Default: yuv420p at crf 4 (near-lossless, plays everywhere; even sizes only). ``lossless``: H.264 RGB at
    qp 0, so decoding gives the exact frames back (evaluations that must match the in-memory clips).
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 of shape (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if not lossless and (frames.shape[1] % 2 or frames.shape[2] % 2):
        raise ValueError(f"frames must have even height and width for yuv420p, got {frames.shape[1:3]}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    path = Path(path)
    from fractions import Fraction

    with av.open(str(path), mode="w") as out:
        options: dict[str, object]  # PyAV's annotation of stream.options
        codec, pix_fmt, options = (
            ("libx264rgb", "rgb24", {"qp": "0"})
            if lossless
            else ("libx264", "yuv420p", {"crf": "4", "preset": "medium"})
        )
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        assert isinstance(stream, av.video.stream.VideoStream)  # a video codec was asked for
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        stream.options = options
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def read_video(path: str | Path, num_frames: int = NUM_FRAMES, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``path`` with :func:`tango_prune.video.load_video` (``num_frames`` frames sampled uniformly,
    real timestamps, never a frame twice) and resize the frames to ``size`` x ``size``.

    Returns ``(frames uint8 (T, size, size, 3), timestamps float64 (T,) in seconds)`` with
    ``T = min(num_frames, frames in the file)``.
    """
    from PIL import Image

    from ..video import load_video

    frames, ts = load_video(path, num_frames)
    out = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BILINEAR)) for f in frames])
    return out, ts
