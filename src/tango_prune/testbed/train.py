"""Training recipe of the testbed model (``tango-prune testbed train``).

From scratch, on CPU, with three losses:

1. **Answer loss**: cross-entropy on the answer word and ``<eos>`` of every question. Several questions about
   the same clip are packed into one sequence (``<video>... question : ... answer : A <eos> question : ...``)
   so the vision tower runs once per clip; evaluation always asks one question right after the video.
2. **Pooling-head loss** (the auxiliary objective of the issue): SigLIP's attention-pooling head output of
   every frame predicts, multi-label, which colours and shapes are visible in that frame. This is what makes
   the head's probe attention point at the objects, as SigLIP's head does after contrastive training, and
   that attention is the saliency Tango reads.
3. **Patch loss**: each patch feature fed to the projector predicts the colour and shape covering it, a dense
   signal that makes the tower usable after minutes of CPU training.

Robustness to shorter visual sequences (the LLM-side analogue of real models trained on many resolutions and
frame counts): with probability ``drop_prob`` a training sample keeps every video token that shows an
object but only a random fraction of the background tokens, in their original order with compact positions,
as pruned inputs are re-inserted. Answers stay correct because no object token is dropped. No pruning method
is used in training.

The auxiliary heads are training-only and not saved; the shipped checkpoint is a plain
``LlavaOnevisionForConditionalGeneration``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import data as D
from .evaluate import accuracy
from .model import TestbedProcessor, build_config, build_tokenizer

__all__ = ["TrainConfig", "train", "video_features"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (all of them; the run is a pure function of this object)."""

    out_dir: str
    seed: int = 0
    steps: int = 1200
    batch_size: int = 12           #: clips per step
    questions_per_clip: int = 8
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.01
    drop_prob: float = 0.3
    aux_weight: float = 0.5
    eval_every: int = 200
    eval_size: int = 128           #: test questions scored at each evaluation (the first ones of the split)
    threads: int = 1              #: 1 is fastest on a shared 2-core CPU (no OpenMP spin-waiting)
    vision_hidden: int = 96
    vision_layers: int = 3
    text_hidden: int = 128
    text_layers: int = 3
    patch_size: int = 8

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "questions_per_clip", "eval_every", "eval_size", "threads"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not 0.0 <= self.drop_prob <= 1.0:
            raise ValueError(f"drop_prob must be in [0, 1], got {self.drop_prob!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")


def video_features(model, pixel_values_videos: torch.Tensor):
    """The standard LLaVA-OV video path, returning what training needs besides the features.

    Returns ``(features (B, T * g * g, D), image_newline (D,), patch_hidden (B*T, P*P, Dv),
    pooled (B*T, Dv))``: ``features`` equal ``get_video_features(...).pooler_output`` without the newline.
    """
    B, T = pixel_values_videos.shape[:2]
    vo = model.model.vision_tower(pixel_values_videos.flatten(0, 1), output_hidden_states=True, return_dict=True)
    hidden = vo.hidden_states[model.config.vision_feature_layer]
    feats = model.model.apply_pooling(model.model.multi_modal_projector(hidden))
    return feats.reshape(B, -1, feats.shape[-1]), model.model.image_newline, hidden, vo.pooler_output


def _patch_labels(ids: np.ndarray, patch: int, classes: int, min_frac: float = 0.15) -> np.ndarray:
    """(T, H, W) int ids -> (T, P, P) the dominant non-background id per patch (0 if it covers < min_frac)."""
    T, H, W = ids.shape
    onehot = np.eye(classes, dtype=np.float32)[ids.astype(np.int64)]          # (T, H, W, C)
    frac = onehot.reshape(T, H // patch, patch, W // patch, patch, classes).mean(axis=(2, 4))
    frac[..., 0] = 0.0
    lab = frac.argmax(-1)
    lab[frac.max(-1) < min_frac] = 0
    return lab


def _object_cells(color_ids: np.ndarray, cell: int) -> np.ndarray:
    """(T, H, W) -> (T * g * g,) bool: pooled cells with >= 4 object pixels (tokens never dropped)."""
    T, H, W = color_ids.shape
    occ = (color_ids > 0).reshape(T, H // cell, cell, W // cell, cell).sum(axis=(2, 4))
    return (occ >= 4).reshape(-1)


class _Batch:
    """One training step's data, built deterministically from the step index."""

    def __init__(self, cfg: TrainConfig, proc: TestbedProcessor, step: int):
        tok = proc.tokenizer
        self.pixels, self.presence, self.patch_color, self.patch_shape = [], [], [], []
        self.texts, self.keep = [], []
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 7, step]))
        for j in range(cfg.batch_size):
            index = step * cfg.batch_size + j
            clip = D.make_clip(D.TRAIN, index)
            qs = D.questions_for(clip, rng)
            pick = [qs[i] for i in rng.permutation(len(qs))[:cfg.questions_per_clip]]
            ids, labels = [], []
            for q in pick:
                p = tok(proc.prompt(q.text, q.options), add_special_tokens=False)["input_ids"]
                a = tok(q.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                ids += p + a
                labels += [-100] * len(p) + a
            self.texts.append((ids, labels))
            self.pixels.append(proc.pixels(clip.frames)[0])
            self.presence.append(torch.from_numpy(clip.presence()))
            self.patch_color.append(torch.from_numpy(_patch_labels(clip.color_ids, proc.patch_size, len(D.COLORS) + 1)))
            self.patch_shape.append(torch.from_numpy(_patch_labels(clip.shape_ids, proc.patch_size, len(D.SHAPES) + 1)))
            n_tok = clip.frames.shape[0] * proc.grid * proc.grid
            keep = np.ones(n_tok, bool)
            if rng.random() < cfg.drop_prob:
                obj = _object_cells(clip.color_ids, proc.patch_size * 2)
                keep = obj | (rng.random(n_tok) < rng.uniform(0.0, 1.0))
            self.keep.append(torch.from_numpy(keep))
        self.pixels = torch.stack(self.pixels)
        self.presence = torch.stack(self.presence).flatten(0, 1)
        self.patch_color = torch.stack(self.patch_color).flatten(0, 1).flatten(1)
        self.patch_shape = torch.stack(self.patch_shape).flatten(0, 1).flatten(1)


def _loss(model, aux: torch.nn.ModuleDict, batch: _Batch, cfg: TrainConfig) -> tuple[torch.Tensor, dict]:
    feats, newline, hidden, pooled = video_features(model, batch.pixels)
    embed = model.get_input_embeddings()
    seqs, labs = [], []
    for b, (ids, labels) in enumerate(batch.texts):
        vis = torch.cat([feats[b][batch.keep[b]], newline[None]], 0)
        txt = embed(torch.tensor(ids))
        seqs.append(torch.cat([vis, txt], 0))
        labs.append(torch.tensor([-100] * vis.shape[0] + labels))
    L = -(-max(s.shape[0] for s in seqs) // 64) * 64   # few distinct shapes: CPU kernels are cached per shape
    D_ = seqs[0].shape[1]
    x = torch.zeros(len(seqs), L, D_)
    y = torch.full((len(seqs), L), -100, dtype=torch.long)
    mask = torch.zeros(len(seqs), L, dtype=torch.long)
    for b, (s, l) in enumerate(zip(seqs, labs)):
        x[b, :s.shape[0]] = s
        y[b, :s.shape[0]] = l
        mask[b, :s.shape[0]] = 1
    out = model.model.language_model(inputs_embeds=x, attention_mask=mask)
    logits = model.lm_head(out.last_hidden_state)
    lm = F.cross_entropy(logits[:, :-1].flatten(0, 1), y[:, 1:].flatten(), ignore_index=-100)
    head = F.binary_cross_entropy_with_logits(aux["frame"](pooled), batch.presence)
    pc = aux["patch"](hidden)
    nc = len(D.COLORS) + 1
    patch = F.cross_entropy(pc[..., :nc].flatten(0, 1), batch.patch_color.flatten()) + \
        F.cross_entropy(pc[..., nc:].flatten(0, 1), batch.patch_shape.flatten())
    total = lm + cfg.aux_weight * (head + patch)
    return total, {"lm": lm.item(), "head": head.item(), "patch": patch.item()}


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> dict:
    """Train from scratch per ``cfg``, save ``save_pretrained`` weights + tokenizer + processor config and
    ``training.json`` into ``cfg.out_dir``; returns the training record."""
    from transformers import LlavaOnevisionForConditionalGeneration

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tok = build_tokenizer()
    proc = TestbedProcessor(tok, D.IMAGE_SIZE, cfg.patch_size)
    mcfg = build_config(tok, patch_size=cfg.patch_size, vision_hidden=cfg.vision_hidden,
                        vision_layers=cfg.vision_layers, text_hidden=cfg.text_hidden, text_layers=cfg.text_layers)
    model = LlavaOnevisionForConditionalGeneration(mcfg)
    dv = mcfg.vision_config.hidden_size
    aux = torch.nn.ModuleDict({"frame": torch.nn.Linear(dv, len(D.COLORS) + len(D.SHAPES)),
                               "patch": torch.nn.Linear(dv, len(D.COLORS) + len(D.SHAPES) + 2)})
    params = list(model.parameters()) + list(aux.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))

    def lr_at(step):
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))

    t0 = time.time()
    history = []
    ema = None
    for step in range(cfg.steps):
        model.train()
        aux.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        batch = _Batch(cfg, proc, step)
        loss, parts = _loss(model, aux, batch, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema = parts if ema is None else {k: 0.95 * ema[k] + 0.05 * v for k, v in parts.items()}
        if step % 25 == 0:
            log(f"step {step} {time.time() - t0:.0f}s lr {lr_at(step):.2e} " +
                " ".join(f"{k} {v:.3f}" for k, v in ema.items()))
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            model.eval()
            with torch.no_grad():
                res = accuracy(model, proc, range(cfg.eval_size))
            c, n = res["correct"], res["total"]
            history.append({"step": step + 1, "seconds": round(time.time() - t0, 1), "accuracy": c / n})
            log(f"eval step {step + 1} {time.time() - t0:.0f}s accuracy {c}/{n} = {c / n:.3f}")
    wall = time.time() - t0
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out)
    proc.save_pretrained(out)
    record = {"config": dataclasses.asdict(cfg), "wall_seconds": round(wall, 1), "history": history,
              "parameters": sum(p.numel() for p in model.parameters()),
              "torch": torch.__version__, "threads": cfg.threads}
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"saved to {out} after {wall:.0f}s")
    return record
