"""Training recipe of the testbed model (``tango-prune testbed train``), from scratch on a CPU, in three stages.

1. **Vision stage** (``vision_steps``): only the SigLIP tower learns, from three auxiliary objectives.
   - *Pooling-head loss* (the auxiliary objective of the issue): SigLIP's attention-pooling head output of
     every frame predicts, multi-label, which colours and shapes are visible in that frame. This is what makes
     the head's probe attention point at the objects, as SigLIP's head does after contrastive training; that
     attention is the saliency Tango reads.
   - *Patch loss*: each patch feature fed to the projector predicts the colour and shape covering it and the
     patch's row and column, a dense signal that makes the tower usable after minutes of CPU training.
   - *Cell loss*: each pooled cell (exactly one LLM token) predicts the colour and shape of the object
     covering it. Interior patches of an object only see a flat colour; without this loss the shape under a
     token is not linearly decodable and every shape-keyed question is unanswerable.
2. **Cache stage**: the tower is frozen (as LLaVA freezes its pretrained encoder) and the patch features of
   ``cache_clips`` training clips are computed once (fp16), with each clip's objects and per-token object map.
   ``save_stage`` / ``stage_from`` write and reuse both stages (only with identical settings).
3. **Language stage** (``lm_steps``): projector, ``image_newline`` and the Qwen2 LLM learn the answers
   (cross-entropy on the answer word and ``<eos>``). Every step draws clips from the cache and fresh
   questions (new option orders) about them; several questions per clip are packed into one sequence
   (``<video>... question : ... answer : A <eos> question : ...``); evaluation always asks one question right
   after the video. Training-only aids:
   - *Curriculum*: the first ``easy_steps`` ask only two easy look-up types (``color``, ``shape``) with few
     background tokens; later at most two look-ups per clip are packed with the eight test types.
   - *Per-token auxiliary loss* (``aux_weight``): each object token predicts, from the LLM's middle layer (or
     ``aux_layer``), its object's shape and colour and what is causally visible up to its frame (motion
     direction, entered late, changed colour).
   - *Token-separation loss* (``sep_weight``, default 0 = off): within a clip, the projector outputs (the
     LLM's visual tokens, which the pruners compare) of two cells covered by different things (background or
     one of the objects) are pushed towards non-positive cosine: mean of relu(cos)^2 over such pairs. A
     per-token stand-in for what contrastive pre-training gives real encoders: content that differs has
     features that differ. It reads only which object covers each cell, never a threshold of a method.
   - *Answer weights* (``answer_weights``, default none): the answer loss of chosen question types weighs more
     (a weighted mean over answer tokens), e.g. ``direction``, the type the model answers worst.
   - *Isolated questions* (``isolate_questions``, default off): each packed question attends to the video and
     its own words only, at the positions it has when asked alone (:func:`isolated_mask`), so no question sees
     another's answer, as at evaluation. Off, a later direction question could be answered by elimination.
   - *Evidence-attention loss* (``attn_weight``, default 0 = off, kept for the ablation): head 0 of the
     second-to-last layer attends from the answer-predicting position to the question's words, head 0 of the
     last layer to the visual tokens that hold the evidence (``data.Question.subject``).

Token layouts after the easy steps (``layouts``), always in their original order with compact positions, as
pruned inputs are re-inserted:

- ``"background"`` (the shipped recipe): with probability ``drop_prob`` a sample keeps every token that shows
  an object and a random fraction of the background tokens.
- ``"distribution"`` (issue 10): every sample is shown one layout drawn by :func:`_layout`: all tokens; or a
  random subset of 6-16 frames at irregular times and/or a random fraction of the tokens, object tokens
  included in half of the samples. It looks only at frame indices and at whether a token shows an object at
  all, never at saliency, clusters, a pruning method's rule or the question's evidence.

The auxiliary heads are training-only and not saved; the shipped checkpoint is a plain
``LlavaOnevisionForConditionalGeneration``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import data as D
from .evaluate import accuracy
from .model import TestbedProcessor, build_config, build_tokenizer
from .oracle import cell_labels, cell_objects, evidence_cells

__all__ = ["TrainConfig", "train", "video_features", "write_reference", "separation_loss", "duplicate_tokens"]


#: how visual tokens are dropped in training after the curriculum (see TrainConfig.layouts)
LAYOUTS = ("background", "distribution")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (all of them; the run is a pure function of this object)."""

    out_dir: str
    seed: int = 0
    vision_steps: int = 600
    vision_batch: int = 8  #: clips per vision step
    cache_clips: int = 4000
    lm_steps: int = 3000
    lm_batch: int = 8  #: clips per language step
    questions_per_clip: int = 10
    lr: float = 2e-3  #: peak learning rate of the vision stage
    lm_lr: float = 2e-3  #: peak learning rate of the language stage
    warmup: int = 100
    weight_decay: float = 0.01
    easy_steps: int = 400  #: curriculum: first language steps ask only look-up questions, few bg tokens
    easy_keep: float = 0.15  #: fraction of background tokens kept during the easy steps
    layouts: str = "background"  #: "background" (the shipped recipe) or "distribution" (issue 10, see _layout)
    drop_prob: float = 0.5  #: "background": after the easy steps, chance that background tokens are dropped
    full_layout_prob: float = 0.3  #: "distribution": after the easy steps, chance that a sample shows every token
    frame_prob: float = 0.5  #: otherwise, chance that only ``min_frames..T`` random frames are shown
    min_frames: int = 6
    any_drop_prob: float = 0.5  #: otherwise, chance that dropping hits object tokens too (else background only)
    tube_prob: float = 0.0  #: otherwise, chance of temporal tube drops instead of independent ones (see _layout)
    #: otherwise, chance that object and background tokens are dropped at two independent rates (see _layout)
    two_rate_prob: float = 0.0
    #: chance that an independent-drop layout's per-sample keep rate is drawn from U(0.03, 0.2), the budgets
    #: token pruning evaluates, instead of U(0.05, 1) (see _layout)
    low_rate_prob: float = 0.0
    still_prob: float = 0.0  #: share of cached training clips filmed still (``data.make_clip(still=True)``)
    dup_prob: float = 0.0  #: "distribution": chance that a still clip is shown with its duplicate tokens dropped
    aux_weight: float = 0.5  #: weight of the per-visual-token auxiliary loss inside the LLM (0 = off)
    aux_layer: int | None = None  #: LLM layer whose output the auxiliary loss reads; None = text_layers // 2 (>= 1)
    attn_weight: float = 1.0  #: weight of the evidence-attention loss of the last LLM layer (0 = off)
    sep_weight: float = 0.0  #: weight of the token-separation loss on the projector output (0 = off)
    #: ((question type, weight), ...): the answer loss of those types weighs that much (others 1; () = plain mean)
    answer_weights: tuple = ()
    #: each packed question attends to the video and its own words only, at the positions it has when asked
    #: alone (as at evaluation); False: plain causal packing, where a later question sees the earlier answers
    isolate_questions: bool = False
    retrieval: bool = True  #: add the easy look-up questions to training (see data.questions_for)
    eval_every: int = 250
    stop_after: int | None = None  #: end the language stage after this many steps (the schedule still spans lm_steps)
    eval_size: int = 128  #: test questions scored at each evaluation (the first ones of the split)
    threads: int = 1  #: 1 is fastest on a shared 2-core CPU (no OpenMP spin-waiting)
    vision_hidden: int = 128
    vision_layers: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    patch_size: int = 6
    save_stage: bool = False  #: write the frozen tower and feature cache to ``out_dir/stage.pt``
    stage_from: str | None = None  #: reuse a ``stage.pt`` (skips the vision and cache stages)
    vision_from: str | None = None  #: take the (frozen) vision tower of a saved testbed model (skips the vision stage)
    lm_from: str | None = None  #: start the language stage from a saved testbed model (same tower and sizes,
    #: or fewer LLM layers: the new ones are appended as identity blocks)

    def __post_init__(self) -> None:
        for name in (
            "vision_steps",
            "vision_batch",
            "cache_clips",
            "lm_steps",
            "lm_batch",
            "questions_per_clip",
            "eval_every",
            "eval_size",
            "threads",
            "text_layers",
            "text_heads",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.layouts not in LAYOUTS:
            raise ValueError(f"layouts must be one of {LAYOUTS}, got {self.layouts!r}")
        for name in (
            "drop_prob",
            "full_layout_prob",
            "frame_prob",
            "any_drop_prob",
            "tube_prob",
            "two_rate_prob",
            "low_rate_prob",
            "still_prob",
            "dup_prob",
            "easy_keep",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.stop_after is not None and (
            not isinstance(self.stop_after, int) or not 1 <= self.stop_after <= self.lm_steps
        ):
            raise ValueError(f"stop_after must be None or an int in [1, lm_steps], got {self.stop_after!r}")
        if not isinstance(self.min_frames, int) or not 1 <= self.min_frames <= D.NUM_FRAMES:
            raise ValueError(f"min_frames must be an int in [1, {D.NUM_FRAMES}], got {self.min_frames!r}")
        if self.lm_from is not None and not isinstance(self.lm_from, str):
            raise ValueError(f"lm_from must be None or a directory path, got {self.lm_from!r}")
        if self.stage_from is not None and self.vision_from is not None:
            raise ValueError("stage_from and vision_from are exclusive: a stage already holds its vision tower")
        if not isinstance(self.easy_steps, int) or not 0 <= self.easy_steps < self.lm_steps:
            raise ValueError(f"easy_steps must be an int in [0, lm_steps), got {self.easy_steps!r}")
        pairs = self.answer_weights
        ok = isinstance(pairs, (tuple, list)) and all(
            isinstance(p, (tuple, list))
            and len(p) == 2
            and isinstance(p[1], (int, float))
            and not isinstance(p[1], bool)
            and math.isfinite(p[1])
            and p[1] > 0
            for p in pairs
        )
        if not ok:
            raise ValueError(f"answer_weights must be ((question type, finite weight > 0), ...), got {pairs!r}")
        # training.json holds them as lists: a record read back is the same config
        object.__setattr__(self, "answer_weights", tuple((p[0], float(p[1])) for p in pairs))
        types = [t for t, _ in self.answer_weights]
        if any(t not in D.QTYPES + ("color", "shape") for t in types) or len(set(types)) != len(types):
            raise ValueError(
                f"answer_weights must name distinct question types of {D.QTYPES + ('color', 'shape')}, got {types}"
            )
        if not isinstance(self.isolate_questions, bool):
            raise ValueError(f"isolate_questions must be a bool, got {self.isolate_questions!r}")
        if self.isolate_questions and self.attn_weight > 0:
            raise ValueError(
                "isolate_questions needs attn_weight=0: the evidence-attention loss assumes plain causal packing"
            )
        for name in ("aux_weight", "attn_weight", "sep_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.aux_layer is not None and (
            not isinstance(self.aux_layer, int) or not 1 <= self.aux_layer <= self.text_layers
        ):
            raise ValueError(f"aux_layer must be None or an int in [1, text_layers], got {self.aux_layer!r}")
        if self.text_hidden % self.text_heads:
            raise ValueError(f"text_hidden must be a multiple of text_heads, got {self.text_hidden}/{self.text_heads}")
        for name in ("lr", "lm_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


def video_features(model, pixel_values_videos: torch.Tensor):
    """The standard LLaVA-OV video path, returning what training needs besides the features.

    Returns ``(features (B, T * g * g, D), image_newline (D,), patch_hidden (B*T, P*P, Dv),
    pooled (B*T, Dv))``: ``features`` equal ``get_video_features(...).pooler_output`` without the newline.
    """
    B, T = pixel_values_videos.shape[:2]
    vo = model.model.vision_tower(pixel_values_videos.flatten(0, 1), output_hidden_states=True, return_dict=True)
    hidden = vo.hidden_states[model.config.vision_feature_layer]
    feats = _project(model, hidden)
    return feats.reshape(B, -1, feats.shape[-1]), model.model.image_newline, hidden, vo.pooler_output


def _project(model, hidden: torch.Tensor) -> torch.Tensor:
    return model.model.apply_pooling(model.model.multi_modal_projector(hidden))


def _patch_labels(ids: np.ndarray, patch: int, classes: int, min_frac: float = 0.15) -> np.ndarray:
    """(T, H, W) int ids -> (T, P, P) the dominant non-background id per patch (0 if it covers < min_frac)."""
    T, H, W = ids.shape
    onehot = np.eye(classes, dtype=np.float32)[ids.astype(np.int64)]  # (T, H, W, C)
    frac = onehot.reshape(T, H // patch, patch, W // patch, patch, classes).mean(axis=(2, 4))
    frac[..., 0] = 0.0
    lab = frac.argmax(-1)
    lab[frac.max(-1) < min_frac] = 0
    return lab


_cell_labels = cell_labels  # per pooled cell the dominant id (see oracle.cell_labels)


def _cell_objects(shape_ids: np.ndarray, cell: int) -> np.ndarray:
    """Per pooled cell the shape index covering it, -1 for background (:func:`.oracle.cell_objects`)."""
    return cell_objects(shape_ids, cell)


def _aux_targets(objects, cell_obj: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-visual-token targets of the auxiliary LLM loss, from what is causally visible up to that frame:
    ``(classes (N, 3) int64, -100 where unknown; flags (N, 2) float32, -1 where unknown)``. Classes = (its
    object's motion direction, shape, current colour); flags = (its object entered after frame 0, its object
    has changed colour by this frame)."""
    by_shape = {D.SHAPES.index(o.shape): o for o in objects}
    n = cell_obj.shape[0]
    frame = np.arange(n) // (n // T)
    classes = np.full((n, 3), -100, np.int64)
    flags = np.full((n, 2), -1.0, np.float32)
    for k in np.nonzero(cell_obj >= 0)[0]:
        o, t = by_shape.get(int(cell_obj[k])), int(frame[k])
        if o is None:
            continue
        classes[k, 1] = D.SHAPES.index(o.shape)
        classes[k, 2] = tuple(D.COLORS).index(o.color_at(t))
        if t >= o.appear + 2:  # motion is only visible once the object was seen in earlier frames
            classes[k, 0] = D.DIRECTIONS.index(o.direction)
        flags[k, 0] = float(o.appear > 0)
        flags[k, 1] = float(o.color_after is not None and t >= o.change_frame)
    return classes, flags


def _lr(step: int, total: int, cfg: TrainConfig, peak: float | None = None) -> float:
    peak = cfg.lr if peak is None else peak
    if step < cfg.warmup:
        return peak * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, total - cfg.warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def _adamw(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = list(params)
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )


def _vision_stage(model, aux, proc: TestbedProcessor, cfg: TrainConfig, log) -> None:
    vt = model.model.vision_tower
    params = list(vt.parameters()) + list(aux.parameters())
    opt = _adamw(params, cfg)
    nc, ns, P = len(D.COLORS) + 1, len(D.SHAPES) + 1, D.IMAGE_SIZE // proc.patch_size
    rows = torch.arange(P).repeat_interleave(P)
    cols = torch.arange(P).repeat(P)
    t0, ema = time.time(), None
    vt.train()
    for step in range(cfg.vision_steps):
        clips = [D.make_clip(D.TRAIN, 10_000_000 + step * cfg.vision_batch + j) for j in range(cfg.vision_batch)]
        pix = torch.cat([proc.pixels(c.frames) for c in clips]).flatten(0, 1)
        pres = torch.from_numpy(np.concatenate([c.presence() for c in clips]))
        ccol = torch.from_numpy(np.concatenate([_cell_labels(c.color_ids, 2 * proc.patch_size, nc) for c in clips]))
        csha = torch.from_numpy(np.concatenate([_cell_labels(c.shape_ids, 2 * proc.patch_size, ns) for c in clips]))
        pcol = torch.from_numpy(np.concatenate([_patch_labels(c.color_ids, proc.patch_size, nc) for c in clips]))
        psha = torch.from_numpy(np.concatenate([_patch_labels(c.shape_ids, proc.patch_size, ns) for c in clips]))
        vo = vt(pix, output_hidden_states=True, return_dict=True)
        hidden = vo.hidden_states[model.config.vision_feature_layer]
        head = F.binary_cross_entropy_with_logits(aux["frame"](vo.pooler_output), pres)
        pc = aux["patch"](hidden)
        n = pc.shape[0]
        patch = (
            F.cross_entropy(pc[..., :nc].flatten(0, 1), pcol.flatten(1).flatten())
            + F.cross_entropy(pc[..., nc : nc + ns].flatten(0, 1), psha.flatten(1).flatten())
            + F.cross_entropy(pc[..., nc + ns : nc + ns + P].flatten(0, 1), rows.repeat(n))
            + F.cross_entropy(pc[..., nc + ns + P :].flatten(0, 1), cols.repeat(n))
        )
        # the LLM reads pooled cells, so every cell an object covers must say which object it is: interior
        # patches only see a flat colour, the tower has to carry the shape over from the object's outline
        cc = aux["cell"](model.model.apply_pooling(hidden).flatten(0, 1))
        cell = F.cross_entropy(cc[:, :nc], ccol) + 2.0 * F.cross_entropy(cc[:, nc:], csha)
        for grp in opt.param_groups:
            grp["lr"] = _lr(step, cfg.vision_steps, cfg)
        opt.zero_grad(set_to_none=True)
        (head + patch + cell).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        parts = {"head": head.item(), "patch": patch.item(), "cell": cell.item()}
        ema = parts if ema is None else {k: 0.9 * ema[k] + 0.1 * v for k, v in parts.items()}
        if step % 25 == 0 or step + 1 == cfg.vision_steps:
            log(f"vision step {step} {time.time() - t0:.0f}s " + " ".join(f"{k} {v:.3f}" for k, v in ema.items()))
    vt.eval()
    for p in vt.parameters():
        p.requires_grad_(False)


@torch.no_grad()
def _cache_stage(model, proc: TestbedProcessor, cfg: TrainConfig, log) -> list[tuple]:
    """(hidden fp16 (T, P*P, Dv), objects, per-token object index, per-token duplicate flag) for
    ``cache_clips`` training clips (a share ``still_prob`` of them filmed still)."""
    vt = model.model.vision_tower
    cell = proc.patch_size * 2  # one LLM token: 2x2 pooled patches
    cache, t0 = [], time.time()
    for s in range(0, cfg.cache_clips, 8):
        clips = [D.make_clip(D.TRAIN, i, still=_still(cfg, i)) for i in range(s, min(s + 8, cfg.cache_clips))]
        pix = torch.cat([proc.pixels(c.frames) for c in clips]).flatten(0, 1)
        hidden = vt(pix, output_hidden_states=True, return_dict=True).hidden_states[model.config.vision_feature_layer]
        hidden = hidden.reshape(len(clips), -1, *hidden.shape[1:]).half()
        for c, h in zip(clips, hidden):
            cache.append((h.clone(), c.objects, _cell_objects(c.shape_ids, cell), duplicate_tokens(c.frames, cell)))
        if s % 400 == 0:
            log(f"cache {s}/{cfg.cache_clips} clips {time.time() - t0:.0f}s")
    return cache


def _layout(
    rng: np.random.Generator, cfg: TrainConfig, obj: np.ndarray, T: int, dup: np.ndarray | None = None
) -> np.ndarray:
    """(N,) bool: the visual tokens one training sample shows the LLM, drawn from a distribution of layouts.

    A clip with duplicate tokens (``dup``, from :func:`duplicate_tokens`; only still clips have them) is,
    with probability ``dup_prob``, shown without them: every token but those pixel-identical to the same
    cell in the previous frame, the token-level form of dropping duplicate frames. With probability
    ``full_layout_prob`` every token. Otherwise, like the many frame counts, samplings and
    token budgets a real Video LLM is trained on:
    - with probability ``frame_prob`` only ``min_frames..T`` frames at irregular (random, sorted) times;
    - then, with probability ``tube_prob``, temporal tube drops (:func:`_tube_keep`): the frames are cut into
      random spans and a random set of cells is shown only in the first frame of each span;
    - otherwise, within the frames shown, a random rate of the tokens (a fresh rate per frame around a
      per-sample rate), any token with probability ``any_drop_prob``, else only background tokens (``obj``
      False);
    - except that, with probability ``two_rate_prob``, object and background tokens are kept at two
      independent per-sample rates, so that some layouts are a handful of tokens that are mostly objects
      (the two modes above are the special cases of equal rates and of objects all kept);
    - and, in either independent mode, with probability ``low_rate_prob`` the per-sample rates are drawn from
      U(0.03, 0.2) instead of U(0.05, 1): the few-tokens-per-frame budgets pruning is evaluated at, which the
      wide range draws rarely.

    Nothing here looks at saliency, clusters, a pruning method's rule or the question: only at the frame
    index, the cell index, and, for the background-only mode, at whether a token shows an object at all."""
    n = obj.shape[0]
    keep = np.ones(n, dtype=bool)
    # Drawn only when enabled, so that recipes without duplicate dropping keep their random stream.
    if cfg.dup_prob > 0.0 and dup is not None and dup.any() and rng.random() < cfg.dup_prob:
        return ~dup
    if rng.random() < cfg.full_layout_prob:
        return keep
    per = n // T
    frame = np.arange(n) // per
    if rng.random() < cfg.frame_prob:
        shown = np.zeros(T, dtype=bool)
        shown[rng.choice(T, size=int(rng.integers(cfg.min_frames, T + 1)), replace=False)] = True
        keep &= shown[frame]
    # Drawn only when enabled, as above.
    if cfg.tube_prob > 0.0 and rng.random() < cfg.tube_prob:
        keep &= _tube_keep(rng, T, per)
    elif cfg.two_rate_prob > 0.0 and rng.random() < cfg.two_rate_prob:  # drawn only when enabled, as above
        rates = rng.uniform(*_rate_range(rng, cfg), size=2)  # (objects, background)
        frame_rate = np.clip(rates[:, None] * rng.uniform(0.5, 1.5, size=(2, T)), 0.02, 1.0)
        keep &= rng.random(n) < np.where(obj, frame_rate[0][frame], frame_rate[1][frame])
    else:
        rate = rng.uniform(*_rate_range(rng, cfg))
        frame_rate = np.clip(rate * rng.uniform(0.5, 1.5, size=T), 0.02, 1.0)
        drop_any = rng.random() < cfg.any_drop_prob
        kept = rng.random(n) < frame_rate[frame]
        keep &= kept if drop_any else (kept | obj)
    if not keep.any():  # an empty video is not a layout any model sees
        keep[int(rng.integers(n))] = True
    return keep


def _rate_range(rng: np.random.Generator, cfg: TrainConfig) -> tuple[float, float]:
    """The range of an independent-drop layout's per-sample keep rate: U(0.03, 0.2) with probability
    ``low_rate_prob``, else U(0.05, 1). The coin is drawn only when enabled, so earlier recipes keep their
    random stream."""
    if cfg.low_rate_prob > 0.0 and rng.random() < cfg.low_rate_prob:
        return 0.03, 0.2
    return 0.05, 1.0


def _tube_keep(rng: np.random.Generator, T: int, per: int) -> np.ndarray:
    """(T * per,) bool: temporal tube drops, the temporally correlated form of random token dropping.

    The T frames are cut at 0-3 random boundaries into spans; in each span a random fraction U(0.2, 1) of the
    ``per`` cells, drawn at random (object cells as likely as any), is shown only in the span's first frame
    and dropped in the others. Tube masking is the standard video form of random masking (VideoMAE drops the
    same cells in every frame); here a tube keeps its first frame, so a missing token reads as "not shown
    again", not "gone". The cells are chosen by a coin, never by similarity, saliency or the question."""
    starts = np.zeros(T, dtype=bool)
    starts[0] = True
    starts[rng.choice(np.arange(1, T), size=int(rng.integers(0, 4)), replace=False)] = True
    span = np.cumsum(starts) - 1  # (T,) span id of each frame
    n_spans = int(span[-1]) + 1
    tubed = rng.random((n_spans, per)) < rng.uniform(0.2, 1.0)  # (spans, cells)
    keep = ~tubed[span] | starts[:, None]  # (T, cells): a tubed cell stays in its span's first frame
    return keep.reshape(-1)


def duplicate_tokens(frames: np.ndarray, cell: int) -> np.ndarray:
    """(T, H, W, C) uint8 frames -> (T * (H // cell) * (W // cell),) bool: the tokens whose ``cell`` x ``cell``
    pixel block is identical to the same block in the previous frame (never in the first frame).

    Exact equality of the pixels the model is given, nothing else: in a clip with sensor noise no token
    is a duplicate; in a still clip (:func:`tango_prune.testbed.data.make_clip` ``still=True``) every cell
    that does not change is one."""
    T, H, W, C = frames.shape
    if H % cell or W % cell:
        raise ValueError(f"cell must divide the frame size {H}x{W}, got {cell!r}")
    blocks = frames.reshape(T, H // cell, cell, W // cell, cell, C)
    same = (blocks[1:] == blocks[:-1]).all(axis=(2, 4, 5))  # (T-1, H/cell, W/cell)
    dup = np.zeros((T, H // cell, W // cell), dtype=bool)
    dup[1:] = same
    return dup.reshape(-1)


def _still(cfg: TrainConfig, index: int) -> bool:
    """Whether cached training clip ``index`` is filmed still (a seeded coin per clip; none at still_prob 0)."""
    if cfg.still_prob <= 0.0:
        return False
    return bool(np.random.default_rng(np.random.SeedSequence([cfg.seed, 11, index])).random() < cfg.still_prob)


def _lm_batch(cfg: TrainConfig, proc: TestbedProcessor, cache: list, step: int) -> list[dict]:
    """One language batch: per clip the cached tower output, packed question/answer ids and labels, the kept
    visual tokens, the auxiliary targets of those tokens and, per question, the position that predicts the
    answer with the (kept) visual tokens holding its evidence."""
    tok = proc.tokenizer
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 7, step]))
    easy = step < cfg.easy_steps
    boost = dict(cfg.answer_weights)
    items = []
    for k in rng.choice(len(cache), size=cfg.lm_batch, replace=False):
        entry = cache[int(k)]
        hidden, objects, cell_obj = entry[:3]
        dup = entry[3] if len(entry) > 3 else None  # stages written before still clips hold no duplicate flags
        T = hidden.shape[0]
        qs = D.questions_about(objects, T, D.IMAGE_SIZE, rng, retrieval=cfg.retrieval or easy)
        look = [q for q in qs if q.qtype in ("color", "shape")]
        if easy:
            qs = look or qs
        else:  # at most two look-up questions, so the test types get most of the packed slots
            qs = [q for q in qs if q.qtype not in ("color", "shape")] + [
                look[i] for i in rng.permutation(len(look))[:2]
            ]
        obj = cell_obj >= 0
        keep = np.ones(obj.shape[0], dtype=bool)
        if easy:
            keep = obj | (rng.random(obj.shape[0]) < cfg.easy_keep)
        elif cfg.layouts == "distribution":
            keep = _layout(rng, cfg, obj, T, dup)
        elif rng.random() < cfg.drop_prob:  # the shipped recipe: object tokens are never dropped
            keep = obj | (rng.random(obj.shape[0]) < rng.uniform(0.0, 1.0))
        ids: list[int] = []
        labels: list[int] = []
        weights: list[float] = []
        queries: list[Any] = []
        spans: list[tuple[int, int]] = []
        for q in (qs[i] for i in rng.permutation(len(qs))[: cfg.questions_per_clip]):
            p = tok(proc.prompt(q.text, q.options), add_special_tokens=False)["input_ids"]
            a = tok(q.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ev = np.nonzero(evidence_cells(q, objects, cell_obj, T)[keep])[0]
            if ev.size:  # (answer-predicting position, visual evidence, the question's words) in text offsets
                n_q = len(tok(q.text, add_special_tokens=False)["input_ids"])
                queries.append((len(ids) + len(p) - 1, torch.from_numpy(ev), torch.arange(n_q) + len(ids) + 2))
            spans.append((len(ids), len(p) + len(a)))
            ids += p + a
            labels += [-100] * len(p) + a
            weights += [0.0] * len(p) + [float(boost.get(q.qtype, 1.0))] * len(a)
        classes, flags = _aux_targets(objects, cell_obj, T)
        items.append(
            {
                "hidden": hidden,
                "ids": ids,
                "labels": labels,
                "keep": torch.from_numpy(keep),
                "classes": torch.from_numpy(classes[keep]),
                "flags": torch.from_numpy(flags[keep]),
                "queries": queries,
                "owner": torch.from_numpy(cell_obj),
                "weights": weights if boost else None,
                "spans": spans if cfg.isolate_questions else None,
            }
        )
    return items


def _attention_mass_loss(model, hidden_in: torch.Tensor, layer: int, targets: list[list]) -> torch.Tensor:
    """Mean ``-log`` of the attention mass that head 0 of LLM ``layer`` puts on a set of positions, over
    ``targets[b] = [(query position, key positions), ...]`` (absolute positions). Recomputed from the layer's
    input (``hidden_in``), so the model keeps its fused attention kernel."""
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

    lm = model.model.language_model
    block = lm.layers[layer]
    attn = block.self_attn
    hd = attn.head_dim
    x = block.input_layernorm(hidden_in)
    q = attn.q_proj(x)[..., :hd]
    k = attn.k_proj(x)[..., :hd]  # head 0 reads key/value head 0 under grouped-query attention
    pos = torch.arange(x.shape[1])[None].expand(x.shape[0], -1)
    cos, sin = lm.rotary_emb(x, pos)
    q, k = apply_rotary_pos_emb(q[:, None], k[:, None], cos, sin)
    losses = []
    for b, tg in enumerate(targets):
        if not tg:
            continue
        rows = torch.tensor([r for r, _ in tg])
        scores = (q[b, 0, rows] @ k[b, 0].T) * hd**-0.5  # (nq, L)
        causal = torch.arange(k.shape[2])[None] > rows[:, None]
        logp = torch.log_softmax(scores.masked_fill(causal, float("-inf")), -1)
        for i, (_, keys) in enumerate(tg):
            losses.append(-torch.logsumexp(logp[i, keys], 0))
    return torch.stack(losses).mean() if losses else torch.zeros(())


def isolated_mask(
    length: int, starts: Sequence[int], spans: Sequence[Sequence[tuple[int, int]]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention mask (B, 1, length, length) bool and position ids (B, length) that isolate packed questions.

    Row b holds ``starts[b]`` visual tokens, then its questions at ``spans[b] = [(offset after the visual
    tokens, length), ...]`` (consecutive, in order), then padding. A question's tokens attend causally to the
    visual tokens and to their own question only, at positions ``starts[b], starts[b] + 1, ...``: exactly what
    they see when the question is asked alone right after the video, as at evaluation. Padding attends to itself
    only (a row with no allowed key would give NaN)."""
    if len(starts) != len(spans):
        raise ValueError(f"starts and spans must have one entry per row, got {len(starts)} and {len(spans)}")
    B = len(starts)
    allowed = torch.zeros(B, length, length, dtype=torch.bool)
    pos = torch.zeros(B, length, dtype=torch.long)
    idx = torch.arange(length)
    allowed[:, idx, idx] = True
    for b, (v, row) in enumerate(zip(starts, spans)):
        offsets = [o for o, _ in row]
        if offsets != [sum(n for _, n in row[:j]) for j in range(len(row))] or any(n < 1 for _, n in row):
            raise ValueError(f"spans of row {b} must be consecutive non-empty (offset, length) pairs from 0, got {row}")
        end = v + sum(n for _, n in row)
        if end > length:
            raise ValueError(f"row {b} needs {end} positions, more than length={length}")
        allowed[b, :v, :v] = torch.tril(torch.ones(v, v, dtype=torch.bool))
        pos[b, :v] = idx[:v]
        for off, n in row:
            a = v + off
            allowed[b, a : a + n, :v] = True
            allowed[b, a : a + n, a : a + n] = torch.tril(torch.ones(n, n, dtype=torch.bool))
            pos[b, a : a + n] = idx[v : v + n]
    return allowed[:, None], pos


def separation_loss(feats: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Token-separation loss of one clip: mean of relu(cos)^2 over the pairs of tokens whose covering
    thing differs. ``feats`` (N, D) visual tokens, ``owner`` (N,) int: the object covering each token's
    cell, -1 for background. Zero when every token shows the same thing."""
    if feats.shape[0] != owner.shape[0]:
        raise ValueError(
            f"feats and owner must have the same number of tokens, got {feats.shape[0]} and {owner.shape[0]}"
        )
    unit = F.normalize(feats.float(), dim=-1)
    differ = owner[:, None] != owner[None, :]
    if not bool(differ.any()):
        return feats.new_zeros(())
    cos = (unit @ unit.T).clamp_min(0.0)
    return (cos * cos)[differ].mean()


def _lm_loss(
    model, aux, items, aux_layer: int, attn: bool, sep: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(answer cross-entropy, per-visual-token auxiliary loss, evidence-attention loss, token-separation
    loss) of a batch; the last is zero unless ``sep``."""
    hidden = torch.stack([it["hidden"] for it in items]).float()
    B, T = hidden.shape[:2]
    feats = _project(model, hidden.flatten(0, 1)).reshape(B, -1, model.config.text_config.hidden_size)
    sep_loss = (
        torch.stack([separation_loss(feats[b], it["owner"]) for b, it in enumerate(items)]).mean()
        if sep
        else torch.zeros(())
    )
    newline = model.model.image_newline
    embed = model.get_input_embeddings()
    seqs, labs, wts, starts = [], [], [], []
    for b, it in enumerate(items):
        vis = torch.cat([feats[b][it["keep"]], newline[None]], 0)
        seqs.append(torch.cat([vis, embed(torch.tensor(it["ids"]))], 0))
        labs.append(torch.tensor([-100] * vis.shape[0] + it["labels"]))
        if it["weights"] is not None:
            wts.append(torch.tensor([0.0] * vis.shape[0] + it["weights"]))
        starts.append(vis.shape[0])
    L = -(-max(x.shape[0] for x in seqs) // 64) * 64  # few distinct shapes: CPU kernels are cached per shape
    x = torch.zeros(B, L, seqs[0].shape[1])
    y = torch.full((B, L), -100, dtype=torch.long)
    yc = torch.full((B, L, 3), -100, dtype=torch.long)
    yf = torch.full((B, L, 2), -1.0)
    mask = torch.zeros(B, L, dtype=torch.long)
    for b, (sq, lb, it) in enumerate(zip(seqs, labs, items)):
        x[b, : sq.shape[0]] = sq
        y[b, : sq.shape[0]] = lb
        yc[b, : it["classes"].shape[0]] = it["classes"]
        yf[b, : it["flags"].shape[0]] = it["flags"]
        mask[b, : sq.shape[0]] = 1
    want_hidden = aux is not None or attn
    kwargs: dict[str, Any] = {"attention_mask": mask}
    if items and items[0]["spans"] is not None:
        kwargs["attention_mask"], kwargs["position_ids"] = isolated_mask(L, starts, [it["spans"] for it in items])
    out = model.model.language_model(inputs_embeds=x, output_hidden_states=want_hidden, **kwargs)
    logits = model.lm_head(out.last_hidden_state)
    if wts:  # answer tokens weighted by question type (TrainConfig.answer_weights): a weighted mean
        w = torch.zeros(B, L)
        for b, wt in enumerate(wts):
            w[b, : wt.shape[0]] = wt
        ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), y[:, 1:].flatten(), ignore_index=-100, reduction="none")
        wf = w[:, 1:].flatten()
        loss = (ce * wf).sum() / wf.sum().clamp_min(1e-12)
    else:
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), y[:, 1:].flatten(), ignore_index=-100)
    aux_loss = attn_loss = torch.zeros(())
    if aux is not None:
        a = aux(out.hidden_states[aux_layer])
        start = 0
        for i, k in enumerate((len(D.DIRECTIONS), len(D.SHAPES), len(D.COLORS))):
            aux_loss = aux_loss + F.cross_entropy(
                a[..., start : start + k].flatten(0, 1), yc[..., i].flatten(), ignore_index=-100
            )
            start += k
        ok = yf >= 0
        aux_loss = aux_loss + F.binary_cross_entropy_with_logits(a[..., start:][ok], yf[ok])
    if attn:
        # two supervised hops: the answer position first gathers its question's words (second-to-last layer),
        # then looks at the visual tokens holding the evidence (last layer)
        last = len(model.model.language_model.layers) - 1
        words = [[(s0 + r, s0 + w) for r, _, w in it["queries"]] for s0, it in zip(starts, items)]
        evid = [[(s0 + r, ev) for r, ev, _ in it["queries"]] for s0, it in zip(starts, items)]
        attn_loss = _attention_mass_loss(model, out.hidden_states[last - 1], last - 1, words) + _attention_mass_loss(
            model, out.hidden_states[last], last, evid
        )
    return loss, aux_loss, attn_loss, sep_loss


def write_reference(
    model, proc: TestbedProcessor, directory: str | Path, subset: int = 48, batch_size: int = 16, check_subset: int = 24
) -> dict:
    """Score the first ``subset`` held-out questions, and the instrument-check cells on the first
    ``check_subset`` (:func:`.evaluate.check_cells`), and record the exact counts in ``reference.json``
    (what the test suite checks the shipped weights against)."""
    from .evaluate import check_cells

    with torch.no_grad():
        res = accuracy(model.eval(), proc, range(subset), batch_size=batch_size)
        chk = check_cells(model, proc, check_subset, batch_size=8)
    ref = {
        "subset": subset,
        "batch_size": batch_size,
        "correct": res["correct"],
        "total": res["total"],
        "checks": {
            "subset": check_subset,
            "batch_size": 8,
            "full": chk["full"]["correct"],
            "cells": {name: {r: x["correct"] for r, x in cells.items()} for name, cells in chk["results"].items()},
        },
    }
    Path(directory, "reference.json").write_text(json.dumps(ref, indent=2) + "\n")
    return ref


def _saved_model(directory: str, name: str):
    """The testbed model saved in ``directory`` (fp32); a ``ValueError`` naming ``name`` if it is not one."""
    from transformers import LlavaOnevisionForConditionalGeneration

    if not (Path(directory) / "config.json").is_file():
        raise ValueError(f"{name} must be a saved testbed model directory, got {directory!r}")
    return LlavaOnevisionForConditionalGeneration.from_pretrained(directory, dtype=torch.float32)


def _load_vision_tower(model, directory: str) -> None:
    """Copy the vision tower of the testbed model saved in ``directory`` into ``model`` and freeze it (the
    tower is frozen after the vision stage anyway, so this is the same as re-running that stage when the
    saved model was trained with the same vision settings)."""
    src = _saved_model(directory, "vision_from")
    mine, theirs = model.config.vision_config, src.config.vision_config
    for k in ("hidden_size", "num_hidden_layers", "patch_size", "image_size", "intermediate_size"):
        if getattr(mine, k) != getattr(theirs, k):
            raise ValueError(f"vision_from has vision {k}={getattr(theirs, k)}, this run needs {getattr(mine, k)}")
    model.model.vision_tower.load_state_dict(src.model.vision_tower.state_dict())
    model.model.vision_tower.eval().requires_grad_(False)


_LAYERS = "model.language_model.layers."


def _text_layer(key: str) -> int | None:
    """The LLM layer index a state-dict key belongs to, ``None`` outside the decoder layers."""
    if not key.startswith(_LAYERS):
        return None
    return int(key[len(_LAYERS) :].split(".", 1)[0])


def _load_language_model(model, directory: str) -> list[int]:
    """Start the language stage from the testbed model saved in ``directory``: copy every weight outside the
    vision tower (projector, newline, LLM, head) into ``model``; returns the indices of the LLM layers it grew.

    The saved model must have the same sizes and **the same vision tower** as this run (bit for bit), since its
    language model learned to read that tower's features; a mismatch is a ``ValueError`` naming ``lm_from``.
    The one exception is depth: a saved LLM with fewer layers than this run's is copied into the first layers,
    and the new layers on top start as identity blocks (attention ``o_proj`` and MLP ``down_proj`` zeroed),
    so the grown model computes exactly what the saved one does until the first update.
    """
    src = _saved_model(directory, "lm_from")
    theirs, mine = src.state_dict(), model.state_dict()
    n_theirs = src.config.text_config.num_hidden_layers
    n_mine = model.config.text_config.num_hidden_layers
    if n_theirs > n_mine:
        raise ValueError(f"lm_from {directory!r} has {n_theirs} LLM layers, more than this run's {n_mine}")
    grown = {k for k in mine if (i := _text_layer(k)) is not None and i >= n_theirs}
    shared = {k: v for k, v in mine.items() if k not in grown}
    if set(theirs) != set(shared) or any(theirs[k].shape != v.shape for k, v in shared.items()):
        raise ValueError(f"lm_from {directory!r} has different model sizes than this run")
    tower = [k for k in mine if k.startswith("model.vision_tower.")]
    if any(not torch.equal(theirs[k], mine[k]) for k in tower):
        raise ValueError(
            f"lm_from {directory!r} has another vision tower than this run (pass the stage or --vision-from it "
            "was trained with)"
        )
    model.load_state_dict({k: v for k, v in theirs.items() if k not in tower}, strict=False)
    new_layers = list(range(n_theirs, n_mine))
    with torch.no_grad():
        # why zero only the two output projections: the block then adds exactly 0 to the residual stream,
        # while its other weights keep their random init, so gradients reach them after the first update
        for i in new_layers:
            block = model.model.language_model.layers[i]
            for lin in (block.self_attn.o_proj, block.mlp.down_proj):
                lin.weight.zero_()
                if lin.bias is not None:
                    lin.bias.zero_()
    return new_layers


def _aux_layer(cfg: TrainConfig) -> int:
    """The LLM layer whose output the per-token auxiliary loss reads (``hidden_states`` index)."""
    return max(1, cfg.text_layers // 2) if cfg.aux_layer is None else cfg.aux_layer


def _stage_key(cfg: TrainConfig) -> dict:
    """The settings that determine the vision and cache stages (a saved stage is only reused if they match).

    ``still_prob`` is listed only when still clips are cached, so stages written before it existed (every
    clip with sensor noise) stay reusable by runs without still clips."""
    key = {
        k: getattr(cfg, k)
        for k in (
            "seed",
            "vision_steps",
            "vision_batch",
            "cache_clips",
            "lr",
            "warmup",
            "weight_decay",
            "vision_hidden",
            "vision_layers",
            "patch_size",
            "vision_from",
        )
    }
    if cfg.still_prob > 0.0:
        key["still_prob"] = cfg.still_prob
    return key


def check_stage(stage_config: dict, cfg: TrainConfig) -> None:
    """Raise ``ValueError`` unless a stage written with ``stage_config`` is the one ``cfg`` would build.

    A stage may come from a run with ``vision_from`` (its tower is that model's). The run reusing it cannot
    pass ``vision_from`` as well, so that one field is not compared; the stage carries its provenance.
    """
    mine = {k: v for k, v in _stage_key(cfg).items() if k != "vision_from"}
    theirs = {k: v for k, v in stage_config.items() if k != "vision_from"}
    if theirs != mine:
        raise ValueError(f"stage_from was made with {stage_config}, this run needs {mine}")


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> dict:
    """Train from scratch per ``cfg``; save ``save_pretrained`` weights, tokenizer, processor config,
    ``training.json`` and ``reference.json`` into ``cfg.out_dir``; returns the training record."""
    from transformers import LlavaOnevisionForConditionalGeneration

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tok = build_tokenizer()
    proc = TestbedProcessor(tok, D.IMAGE_SIZE, cfg.patch_size)
    mcfg = build_config(
        tok,
        patch_size=cfg.patch_size,
        vision_hidden=cfg.vision_hidden,
        vision_layers=cfg.vision_layers,
        text_hidden=cfg.text_hidden,
        text_layers=cfg.text_layers,
        text_heads=cfg.text_heads,
    )
    model = LlavaOnevisionForConditionalGeneration(mcfg)
    dv, P = mcfg.vision_config.hidden_size, D.IMAGE_SIZE // cfg.patch_size
    aux = torch.nn.ModuleDict(
        {
            "frame": torch.nn.Linear(dv, len(D.COLORS) + len(D.SHAPES)),
            "patch": torch.nn.Linear(dv, len(D.COLORS) + len(D.SHAPES) + 2 + 2 * P),
            "cell": torch.nn.Linear(dv, len(D.COLORS) + len(D.SHAPES) + 2),
        }
    )
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if cfg.stage_from is not None:
        stage = torch.load(Path(cfg.stage_from), weights_only=False)
        check_stage(stage.get("config") or {}, cfg)
        if stage["config"].get("vision_from") is not None:
            log(f"stage vision tower was taken from {stage['config']['vision_from']}")
        model.model.vision_tower.load_state_dict(stage["vision_tower"])
        model.model.vision_tower.eval().requires_grad_(False)
        cache = stage["cache"]
        t_vision = t_cache = 0.0
        log(f"vision tower and {len(cache)} cached clips loaded from {cfg.stage_from}")
    else:
        if cfg.vision_from is not None:
            _load_vision_tower(model, cfg.vision_from)
            log(f"vision tower loaded from {cfg.vision_from} (frozen; vision stage skipped)")
        else:
            _vision_stage(model, aux, proc, cfg, log)
        t_vision = time.time() - t0
        cache = _cache_stage(model, proc, cfg, log)
        t_cache = time.time() - t0 - t_vision
        if cfg.save_stage:
            torch.save(
                {"vision_tower": model.model.vision_tower.state_dict(), "cache": cache, "config": _stage_key(cfg)},
                out / "stage.pt",
            )
    if cfg.lm_from is not None:
        grown = _load_language_model(model, cfg.lm_from)
        log(f"language stage starts from {cfg.lm_from}" + (f" (new identity LLM layers {grown})" if grown else ""))
    torch.manual_seed(cfg.seed + 1)  # the language stage starts from the same state whether or not it resumed
    lm_aux = (
        torch.nn.Linear(cfg.text_hidden, len(D.DIRECTIONS) + len(D.SHAPES) + len(D.COLORS) + 2)
        if cfg.aux_weight > 0
        else None
    )
    aux_layer = _aux_layer(cfg)
    params = [p for n, p in model.named_parameters() if not n.startswith("model.vision_tower.")]
    if lm_aux is not None:
        params += list(lm_aux.parameters())
    opt = _adamw(params, cfg)
    history, ema = [], None
    model.train()
    t_lm = time.time()
    # why stop_after: a run cut short at step N is the same run as the first N steps of the full schedule
    for step in range(cfg.lm_steps if cfg.stop_after is None else cfg.stop_after):
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg.lm_steps, cfg, cfg.lm_lr)
        loss, aux_loss, attn_loss, sep_loss = _lm_loss(
            model, lm_aux, _lm_batch(cfg, proc, cache, step), aux_layer, cfg.attn_weight > 0, cfg.sep_weight > 0
        )
        opt.zero_grad(set_to_none=True)
        (loss + cfg.aux_weight * aux_loss + cfg.attn_weight * attn_loss + cfg.sep_weight * sep_loss).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        parts = {"loss": loss.item(), "aux": aux_loss.item(), "attn": attn_loss.item(), "sep": sep_loss.item()}
        ema = parts if ema is None else {k: 0.95 * ema[k] + 0.05 * v for k, v in parts.items()}
        if step % 50 == 0:
            log(
                f"lm step {step} {time.time() - t_lm:.0f}s lr {_lr(step, cfg.lm_steps, cfg, cfg.lm_lr):.2e} "
                + " ".join(f"{k} {v:.3f}" for k, v in ema.items())
            )
        if (step + 1) % cfg.eval_every == 0 or step + 1 in (cfg.lm_steps, cfg.stop_after):
            model.eval()
            res = accuracy(model, proc, range(cfg.eval_size))
            model.train()
            c, n = res["correct"], res["total"]
            history.append({"step": step + 1, "seconds": round(time.time() - t0, 1), "accuracy": c / n})
            log(
                f"eval lm step {step + 1} {time.time() - t_lm:.0f}s accuracy {c}/{n} = {c / n:.3f} "
                + " ".join(f"{k} {v['correct']}/{v['total']}" for k, v in res["by_qtype"].items())
            )
            model.save_pretrained(out / "last")  # a usable checkpoint if the run is cut short
            proc.save_pretrained(out / "last")
    wall = time.time() - t0
    model.eval()
    model.save_pretrained(out)
    proc.save_pretrained(out)
    record = {
        "config": dataclasses.asdict(cfg),
        "wall_seconds": round(wall, 1),
        "stage_seconds": {
            "vision": round(t_vision, 1),
            "cache": round(t_cache, 1),
            "language": round(time.time() - t_lm, 1),
        },
        "history": history,
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "threads": cfg.threads,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    write_reference(model, proc, out)
    log(f"saved to {out} after {wall:.0f}s")
    return record
