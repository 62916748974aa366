"""The lmms-eval model classes behind the ``tango_*`` ids (imported by lmms-eval only when one is requested).

Each request's video is decoded with :func:`tango_prune.video.load_video` (uniform frames with their real
presentation times) and preprocessed by the model family (``ModelFamily.inputs_from_frames``, as in
``tango-prune run``), so frame timestamps reach ST-RoPE and neither torchvision nor decord is needed. The
task's prompt text goes into the checkpoint's chat template after the video placeholder. Pruning is enabled once with
:func:`tango_prune.apply`; requests are answered one at a time (greedy unless the task asks for sampling).

Data parallel (``accelerate launch -m lmms_eval ...``): rank and world size come from the accelerator, each
process holds its own model copy on its own device, and lmms-eval's evaluator gives every rank a disjoint
shard of the documents and gathers the results on rank 0. The mean visual tokens before/after pruning and
the mean pruning time are summed over the ranks and logged through lmms-eval's metric log, so they appear
in ``results["throughput"]`` as ``avg_tango_visual_tokens_before`` etc.
"""

from __future__ import annotations

import inspect
import os
import time
from typing import Any

import torch
from lmms_eval.api.model import lmms
from loguru import logger as eval_logger

from .lmms_eval import MODEL_IDS, NONE, parse_model_args

__all__ = ["TangoLlavaOnevision", "TangoQwen25VL", "TangoQwen2VL"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _local_checkpoint(pretrained: str) -> str:
    """A directory for ``pretrained``: itself, or the hub snapshot of a ``org/name`` id."""
    if os.path.isdir(pretrained):
        return pretrained
    if os.path.exists(pretrained) or pretrained.count("/") != 1:
        raise ValueError(
            f"model_args pretrained must be a checkpoint directory or a hub id 'org/name', got {pretrained!r}"
        )
    from huggingface_hub import snapshot_download

    return snapshot_download(pretrained)


class _TangoVideoLLM(lmms):
    """A Hugging Face Video LLM with (or, for ``method=none``, without) visual token pruning."""

    MODEL_ID = ""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        import transformers
        from accelerate import Accelerator
        from transformers import AutoTokenizer

        import tango_prune as tp

        from ..commands import run as _run  # checkpoint config + normalisation lookup of `tango-prune run`
        from ..checkpoints import load_pretrained

        a = parse_model_args(self.MODEL_ID, kwargs)
        self.args = a
        directory = _local_checkpoint(a["pretrained"])
        try:
            config, cls = _run._load_config(directory)
        except ValueError as exc:
            raise ValueError(str(exc).replace("--model", "model_args pretrained")) from None
        if cls != a["model_class"]:
            serving = [mid for mid, (c, _) in MODEL_IDS.items() if c == cls]
            raise ValueError(
                f"model_args pretrained holds a {cls} checkpoint, which {self.MODEL_ID} does not "
                f"serve; use {' or '.join(serving) or 'another model'}"
            )
        family = tp.models.family_for_class(cls)
        self.accelerator = Accelerator()
        self._rank = self.accelerator.process_index
        self._world_size = self.accelerator.num_processes
        load: dict[str, Any] = {}
        if a["dtype"] is not None:
            load["dtype"] = "auto" if a["dtype"] == "auto" else _DTYPES[a["dtype"]]
        if a["attn_implementation"] is not None:
            load["attn_implementation"] = a["attn_implementation"]
        if a["device_map"] is not None:
            load["device_map"] = a["device_map"]
        # the name as given (a hub id stays a hub id): LLaVA-Video is auto-detected from the checkpoint name
        model = load_pretrained(getattr(transformers, cls), a["pretrained"], "model_args pretrained", **load).eval()
        if a["device_map"] is None:
            # one model copy per process: the accelerator's device, or the harness's --device when single-process
            dev = a["device"] if (a["device"] and self._world_size == 1) else self.accelerator.device
            model = model.to(dev)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(directory)
        except Exception as exc:  # missing or broken tokenizer files
            raise ValueError(f"model_args pretrained: cannot load a tokenizer from {directory!r}: {exc}") from None
        self.model = model
        self.config = config
        self.family = family
        self.frames = a["frames"] or family.default_frames
        self.mean, self.std = _run._preprocessing(directory, family)
        self.prune_config = None
        self.stages: tuple = ()
        # why: an upstream class that takes no video argument (InternVL reads a video as images) gets its
        # unpruned baseline through the family's identity path (retention 1, no merging, no static collapse),
        # which reproduces the unpruned logits (tested per family), as `tango-prune run --no-prune` does
        self._identity = (
            a["method"] == NONE and "pixel_values_videos" not in inspect.signature(type(model).forward).parameters
        )
        if self._identity:
            tp.apply(model, tp.TangoConfig(retention=1.0, merge_context=False, tau_static=1.0), variant=a["variant"])
        if a["method"] != NONE:
            if a["config"] is not None:
                base = tp.make_config(a["method"]).from_dict(a["config"]).replace(retention=a["retention"])
            elif a["method"] == "tango":
                # the family's published preset, with its intra-LLM stage (LLaVA-Video: FastV)
                base, notes = family.tango_config(model.config, a["variant"], a["retention"])
                self.stages = family.stage_configs(model.config, a["variant"])
                for note in notes:
                    eval_logger.info(f"tango-prune: {note}")
            else:
                base = tp.make_config(a["method"], retention=a["retention"])
            self.prune_config = base.replace(**a["overrides"]) if a["overrides"] else base
            tp.apply(
                model, self.prune_config, variant=a["variant"], saliency_head=a["saliency_head"], stages=self.stages
            )
        # per (task, split, doc): visual tokens before/after, pruning seconds, generated tokens; keyed so that
        # the padding requests lmms-eval adds to short ranks are not counted twice
        self._stats: dict[tuple, tuple[float, float, float, float]] = {}

    @property
    def device(self) -> torch.device:
        """Device of the model's input embeddings (where inputs go)."""
        return self.model.get_input_embeddings().weight.device

    @property
    def batch_size(self) -> int:
        """Requests are answered one at a time."""
        return 1

    def _answer(
        self, context: str, visuals: Any, gen_kwargs: dict[str, Any]
    ) -> tuple[str, tuple[float, float, float, float]]:
        """The answer and (visual tokens before, after, pruning seconds, generated tokens) of one request."""
        import tango_prune as tp
        from tango_prune.video import load_video

        visuals = list(visuals) if isinstance(visuals, (list, tuple)) else [visuals]
        if len(visuals) != 1 or not isinstance(visuals[0], (str, os.PathLike)):
            kinds = [type(v).__name__ for v in visuals]
            raise ValueError(
                f"{self.MODEL_ID} answers questions about one video file per request; the task's "
                f"doc_to_visual returned {kinds} (use the video variant of the task)"
            )
        frames, ts = load_video(visuals[0], self.frames)
        inputs = self.family.inputs_from_frames(self.config, self.tokenizer, frames, ts, context, self.mean, self.std)
        dev = self.device
        inputs = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        if inputs["pixel_values_videos"].is_floating_point():
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.model.dtype)
        plain = self.prune_config is None and not self._identity
        if plain:
            inputs.pop("video_timestamps")
            n = float((inputs["input_ids"] == self.config.video_token_id).sum())
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(gen_kwargs.get("temperature") or 0.0)
        gen: dict[str, Any] = {
            "max_new_tokens": int(gen_kwargs.get("max_new_tokens") or self.args["max_new_tokens"] or 16),
            "num_beams": int(gen_kwargs.get("num_beams") or 1),
            "do_sample": temperature > 0,
        }
        if temperature > 0:
            gen["temperature"] = temperature
            if gen_kwargs.get("top_p") is not None:
                gen["top_p"] = float(gen_kwargs["top_p"])
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.model.generate(**inputs, **gen, pad_token_id=pad)
        new = out[0, inputs["input_ids"].shape[1] :]
        text = str(self.tokenizer.decode(new, skip_special_tokens=True))
        for term in until:
            if term:
                text = text.split(term)[0]
        if plain:
            return text.strip(), (n, n, 0.0, float(len(new)))
        st = tp.models.stats(self.model)
        return text.strip(), (
            float(st["visual_tokens_before"]),
            float(st["visual_tokens_after"]),
            float(st["prune_s"]),
            float(len(new)),
        )

    def generate_until(self, requests: list[Any]) -> list[str]:
        """Answer each request (context, generation kwargs, doc_to_visual, doc id, task, split) in order."""
        from tqdm import tqdm

        answers = []
        start = time.perf_counter()
        for req in tqdm(requests, disable=self.rank != 0, desc="tango-prune answering"):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id])
            text, stats = self._answer(context, visuals, dict(gen_kwargs or {}))
            self._stats[(task, split, doc_id)] = stats
            answers.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        self._log_stats(time.perf_counter() - start)
        return answers

    def _log_stats(self, seconds: float) -> None:
        """Add the mean token counts and pruning time over all ranks to lmms-eval's metric log."""
        from lmms_eval.models.model_utils.gen_metrics import log_metrics

        sums = torch.zeros(5, dtype=torch.float64)
        for before, after, prune_s, generated in self._stats.values():
            sums += torch.tensor([before, after, prune_s, 1.0, generated], dtype=torch.float64)
        if self._world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank calls generate_until (lmms-eval pads ranks), so this collective cannot hang
            backend = torch.distributed.get_backend()
            dev = self.device if backend == "nccl" else torch.device("cpu")
            sums = sums.to(dev)
            torch.distributed.all_reduce(sums)
            sums = sums.cpu()
        n = max(float(sums[3]), 1.0)
        generated = int(sums[4])
        log_metrics(
            total_elapsed_time=seconds,
            total_gen_tokens=generated,
            avg_speed=generated / seconds if seconds > 0 else 0.0,
            additional_metrics={
                "tango_visual_tokens_before": float(sums[0]) / n,
                "tango_visual_tokens_after": float(sums[1]) / n,
                "tango_prune_ms": 1e3 * float(sums[2]) / n,
                "tango_requests": float(sums[3]),
            },
        )

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        """Not supported: the video benchmarks this plugin targets are generation tasks."""
        raise NotImplementedError(f"{self.MODEL_ID} supports generate_until tasks only (no loglikelihood)")

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        """Not supported: one question per video."""
        raise NotImplementedError(f"{self.MODEL_ID} supports single-round generate_until tasks only")


class TangoLlavaOnevision(_TangoVideoLLM):
    """``tango_llava_onevision``: LLaVA-OneVision and LLaVA-Video (``variant``) checkpoints in HF format."""

    MODEL_ID = "tango_llava_onevision"


class TangoQwen25VL(_TangoVideoLLM):
    """``tango_qwen2_5_vl``: Qwen2.5-VL checkpoints."""

    MODEL_ID = "tango_qwen2_5_vl"


class TangoQwen2VL(_TangoVideoLLM):
    """``tango_qwen2_vl``: Qwen2-VL checkpoints."""

    MODEL_ID = "tango_qwen2_vl"


class TangoInternVL(_TangoVideoLLM):
    """``tango_internvl``: InternVL checkpoints in transformers format (a video is read as one tile per frame)."""

    MODEL_ID = "tango_internvl"


class TangoQwen3VL(_TangoVideoLLM):
    """``tango_qwen3_vl``: Qwen3-VL checkpoints (timestamped per-step prompts, DeepStack levels pruned alike)."""

    MODEL_ID = "tango_qwen3_vl"
