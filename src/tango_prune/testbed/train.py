"""Training recipe of the testbed model (``tango-prune testbed train``), from scratch on a CPU, in three stages.

1. **Vision stage** (``vision_steps``): only the SigLIP tower learns, from two auxiliary objectives.
   - *Pooling-head loss* (the auxiliary objective of the issue): SigLIP's attention-pooling head output of
     every frame predicts, multi-label, which colours and shapes are visible in that frame. This is what makes
     the head's probe attention point at the objects, as SigLIP's head does after contrastive training; that
     attention is the saliency Tango reads.
   - *Patch loss*: each patch feature fed to the projector predicts the colour and shape covering it and the
     patch's row and column, a dense signal that makes the tower usable after minutes of CPU training.
2. **Cache stage**: the tower is frozen (as LLaVA freezes its pretrained encoder) and the patch features of
   ``cache_clips`` training clips are computed once (fp16), with each clip's objects.
3. **Language stage** (``lm_steps``): projector, ``image_newline`` and the Qwen2 LLM learn the answers
   (cross-entropy on the answer word and ``<eos>``). Every step draws clips from the cache and fresh
   questions (new option orders) about them; several questions per clip are packed into one sequence
   (``<video>... question : ... answer : A <eos> question : ...``); evaluation always asks one question right
   after the video. Besides the eight test question types, training adds two easy look-up types
   (``retrieval``) so the small LLM first learns to find an object's tokens.

Robustness to shorter visual sequences (the LLM-side analogue of real models trained on many resolutions and
frame counts): after ``drop_start`` of the language stage, with probability ``drop_prob`` a sample keeps every
video token that shows an object but only a random fraction of the background tokens, in their original order
with compact positions, as pruned inputs are re-inserted. Answers stay correct because no object token is
dropped. No pruning method is used in training.

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

__all__ = ["TrainConfig", "train", "video_features", "write_reference"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (all of them; the run is a pure function of this object)."""

    out_dir: str
    seed: int = 0
    vision_steps: int = 300
    vision_batch: int = 8           #: clips per vision step
    cache_clips: int = 3000
    lm_steps: int = 2000
    lm_batch: int = 16              #: clips per language step
    questions_per_clip: int = 10
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.01
    drop_prob: float = 0.3
    drop_start: float = 0.3         #: fraction of the language stage before token dropping starts
    retrieval: bool = True          #: add the easy look-up questions to training (see data.questions_for)
    eval_every: int = 500
    eval_size: int = 128            #: test questions scored at each evaluation (the first ones of the split)
    threads: int = 1                #: 1 is fastest on a shared 2-core CPU (no OpenMP spin-waiting)
    vision_hidden: int = 96
    vision_layers: int = 3
    text_hidden: int = 128
    text_layers: int = 3
    patch_size: int = 8

    def __post_init__(self) -> None:
        for name in ("vision_steps", "vision_batch", "cache_clips", "lm_steps", "lm_batch", "questions_per_clip",
                     "eval_every", "eval_size", "threads"):
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
    feats = _project(model, hidden)
    return feats.reshape(B, -1, feats.shape[-1]), model.model.image_newline, hidden, vo.pooler_output


def _project(model, hidden: torch.Tensor) -> torch.Tensor:
    return model.model.apply_pooling(model.model.multi_modal_projector(hidden))


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


def _lr(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, total - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def _adamw(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = list(params)
    return torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, 0.98))


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
        pcol = torch.from_numpy(np.concatenate([_patch_labels(c.color_ids, proc.patch_size, nc) for c in clips]))
        psha = torch.from_numpy(np.concatenate([_patch_labels(c.shape_ids, proc.patch_size, ns) for c in clips]))
        vo = vt(pix, output_hidden_states=True, return_dict=True)
        hidden = vo.hidden_states[model.config.vision_feature_layer]
        head = F.binary_cross_entropy_with_logits(aux["frame"](vo.pooler_output), pres)
        pc = aux["patch"](hidden)
        n = pc.shape[0]
        patch = (F.cross_entropy(pc[..., :nc].flatten(0, 1), pcol.flatten(1).flatten())
                 + F.cross_entropy(pc[..., nc:nc + ns].flatten(0, 1), psha.flatten(1).flatten())
                 + F.cross_entropy(pc[..., nc + ns:nc + ns + P].flatten(0, 1), rows.repeat(n))
                 + F.cross_entropy(pc[..., nc + ns + P:].flatten(0, 1), cols.repeat(n)))
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg.vision_steps, cfg)
        opt.zero_grad(set_to_none=True)
        (head + patch).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        parts = {"head": head.item(), "patch": patch.item()}
        ema = parts if ema is None else {k: 0.9 * ema[k] + 0.1 * v for k, v in parts.items()}
        if step % 25 == 0 or step + 1 == cfg.vision_steps:
            log(f"vision step {step} {time.time() - t0:.0f}s " + " ".join(f"{k} {v:.3f}" for k, v in ema.items()))
    vt.eval()
    for p in vt.parameters():
        p.requires_grad_(False)


@torch.no_grad()
def _cache_stage(model, proc: TestbedProcessor, cfg: TrainConfig, log) -> list[tuple]:
    """(hidden fp16 (T, P*P, Dv), objects, object-cell mask) for ``cache_clips`` training clips."""
    vt = model.model.vision_tower
    cache, t0 = [], time.time()
    for s in range(0, cfg.cache_clips, 8):
        clips = [D.make_clip(D.TRAIN, i) for i in range(s, min(s + 8, cfg.cache_clips))]
        pix = torch.cat([proc.pixels(c.frames) for c in clips]).flatten(0, 1)
        hidden = vt(pix, output_hidden_states=True, return_dict=True).hidden_states[model.config.vision_feature_layer]
        hidden = hidden.reshape(len(clips), -1, *hidden.shape[1:]).half()
        for c, h in zip(clips, hidden):
            cache.append((h.clone(), c.objects, torch.from_numpy(_object_cells(c.color_ids, proc.patch_size * 2))))
        if s % 400 == 0:
            log(f"cache {s}/{cfg.cache_clips} clips {time.time() - t0:.0f}s")
    return cache


def _lm_batch(cfg: TrainConfig, proc: TestbedProcessor, cache: list, step: int):
    tok = proc.tokenizer
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 7, step]))
    items = []
    for k in rng.choice(len(cache), size=cfg.lm_batch, replace=False):
        hidden, objects, obj = cache[int(k)]
        qs = D.questions_about(objects, hidden.shape[0], D.IMAGE_SIZE, rng, retrieval=cfg.retrieval)
        ids, labels = [], []
        for q in (qs[i] for i in rng.permutation(len(qs))[:cfg.questions_per_clip]):
            p = tok(proc.prompt(q.text, q.options), add_special_tokens=False)["input_ids"]
            a = tok(q.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids += p + a
            labels += [-100] * len(p) + a
        keep = torch.ones(obj.shape[0], dtype=torch.bool)
        if step >= cfg.drop_start * cfg.lm_steps and rng.random() < cfg.drop_prob:
            keep = obj | torch.from_numpy(rng.random(obj.shape[0]) < rng.uniform(0.0, 1.0))
        items.append((hidden, ids, labels, keep))
    return items


def _lm_loss(model, items) -> torch.Tensor:
    hidden = torch.stack([h for h, *_ in items]).float()
    B, T = hidden.shape[:2]
    feats = _project(model, hidden.flatten(0, 1)).reshape(B, -1, model.config.text_config.hidden_size)
    newline = model.model.image_newline
    embed = model.get_input_embeddings()
    seqs, labs = [], []
    for b, (_, ids, labels, keep) in enumerate(items):
        vis = torch.cat([feats[b][keep], newline[None]], 0)
        seqs.append(torch.cat([vis, embed(torch.tensor(ids))], 0))
        labs.append(torch.tensor([-100] * vis.shape[0] + labels))
    L = -(-max(x.shape[0] for x in seqs) // 64) * 64   # few distinct shapes: CPU kernels are cached per shape
    x = torch.zeros(B, L, seqs[0].shape[1])
    y = torch.full((B, L), -100, dtype=torch.long)
    mask = torch.zeros(B, L, dtype=torch.long)
    for b, (sq, lb) in enumerate(zip(seqs, labs)):
        x[b, :sq.shape[0]] = sq
        y[b, :sq.shape[0]] = lb
        mask[b, :sq.shape[0]] = 1
    out = model.model.language_model(inputs_embeds=x, attention_mask=mask)
    logits = model.lm_head(out.last_hidden_state)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), y[:, 1:].flatten(), ignore_index=-100)


def write_reference(model, proc: TestbedProcessor, directory: str | Path, subset: int = 48,
                    batch_size: int = 16) -> dict:
    """Score the first ``subset`` held-out questions and record the exact count in ``reference.json``
    (what the test suite checks the shipped weights against)."""
    with torch.no_grad():
        res = accuracy(model.eval(), proc, range(subset), batch_size=batch_size)
    ref = {"subset": subset, "batch_size": batch_size, "correct": res["correct"], "total": res["total"]}
    Path(directory, "reference.json").write_text(json.dumps(ref, indent=2) + "\n")
    return ref


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> dict:
    """Train from scratch per ``cfg``; save ``save_pretrained`` weights, tokenizer, processor config,
    ``training.json`` and ``reference.json`` into ``cfg.out_dir``; returns the training record."""
    from transformers import LlavaOnevisionForConditionalGeneration

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tok = build_tokenizer()
    proc = TestbedProcessor(tok, D.IMAGE_SIZE, cfg.patch_size)
    mcfg = build_config(tok, patch_size=cfg.patch_size, vision_hidden=cfg.vision_hidden,
                        vision_layers=cfg.vision_layers, text_hidden=cfg.text_hidden, text_layers=cfg.text_layers)
    model = LlavaOnevisionForConditionalGeneration(mcfg)
    dv, P = mcfg.vision_config.hidden_size, D.IMAGE_SIZE // cfg.patch_size
    aux = torch.nn.ModuleDict({"frame": torch.nn.Linear(dv, len(D.COLORS) + len(D.SHAPES)),
                               "patch": torch.nn.Linear(dv, len(D.COLORS) + len(D.SHAPES) + 2 + 2 * P)})
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _vision_stage(model, aux, proc, cfg, log)
    t_vision = time.time() - t0
    cache = _cache_stage(model, proc, cfg, log)
    t_cache = time.time() - t0 - t_vision
    params = [p for n, p in model.named_parameters() if not n.startswith("model.vision_tower.")]
    opt = _adamw(params, cfg)
    history, ema = [], None
    model.train()
    for step in range(cfg.lm_steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg.lm_steps, cfg)
        loss = _lm_loss(model, _lm_batch(cfg, proc, cache, step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 50 == 0:
            log(f"lm step {step} {time.time() - t0:.0f}s lr {_lr(step, cfg.lm_steps, cfg):.2e} loss {ema:.3f}")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.lm_steps:
            model.eval()
            res = accuracy(model, proc, range(cfg.eval_size))
            model.train()
            c, n = res["correct"], res["total"]
            history.append({"step": step + 1, "seconds": round(time.time() - t0, 1), "accuracy": c / n})
            log(f"eval lm step {step + 1} {time.time() - t0:.0f}s accuracy {c}/{n} = {c / n:.3f} " +
                " ".join(f"{k} {v['correct']}/{v['total']}" for k, v in res["by_qtype"].items()))
            model.save_pretrained(out / "last")  # a usable checkpoint if the run is cut short
            proc.save_pretrained(out / "last")
    wall = time.time() - t0
    model.eval()
    model.save_pretrained(out)
    proc.save_pretrained(out)
    record = {"config": dataclasses.asdict(cfg), "wall_seconds": round(wall, 1),
              "stage_seconds": {"vision": round(t_vision, 1), "cache": round(t_cache, 1),
                                "language": round(wall - t_vision - t_cache, 1)},
              "history": history, "parameters": sum(p.numel() for p in model.parameters()),
              "torch": torch.__version__, "threads": cfg.threads}
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    write_reference(model, proc, out)
    log(f"saved to {out} after {wall:.0f}s")
    return record
