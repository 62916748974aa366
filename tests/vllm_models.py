"""Tiny random-weight checkpoints that vLLM can serve (and transformers load) for the vLLM plugin tests.

vLLM's CPU attention needs a head size of at least 32, so the language models here have 64 dims and 2
heads (the adapters' tiny models in :mod:`tiny_models` have head size 8). Each checkpoint directory also
holds a word-level tokenizer (token ``t<i>`` is id ``i``; the vision tokens have their real names) and the
family's HF processor, as vLLM's multimodal processor needs both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tiny_models import Q_END, Q_IMAGE, Q_START, Q_VIDEO, qwen3_vision, qwen25_vision, siglip_vision  # noqa: F401 - re-exported ids

VOCAB = 160
#: frames of the test videos: 8 frames of 32 x 32 px -> 4 temporal steps of 4 x 4 merged tokens
FRAMES, SIZE = 8, 32


def _tokenizer(specials: dict[int, str]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(VOCAB) if i not in specials}
    vocab.update({name: i for i, name in specials.items()})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    extra = [name for i, name in specials.items() if i >= 100]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="t3",
        pad_token=specials[0],
        eos_token=specials[2],
        additional_special_tokens=extra,
    )


#: the Qwen tokenizers' special tokens (ids of :mod:`tiny_models`, real names)
QWEN_SPECIALS = {
    0: "<|endoftext|>",
    2: "<|im_end|>",
    Q_IMAGE: "<|image_pad|>",
    Q_VIDEO: "<|video_pad|>",
    Q_START: "<|vision_start|>",
    Q_END: "<|vision_end|>",
}


#: the Qwen configs' vision token ids
QWEN_IDS = dict(
    image_token_id=Q_IMAGE, video_token_id=Q_VIDEO, vision_start_token_id=Q_START, vision_end_token_id=Q_END
)


def _llm(**extra) -> dict:
    """The test LLM: 64 dims, 2 layers of 2 heads (head size 32, vLLM's CPU minimum), the test vocabulary."""
    return dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        pad_token_id=0,
        eos_token_id=2,
        **extra,
    )


def _qwen_llm(mrope_interleaved: bool = False, **extra) -> dict:
    """The Qwen test LLM: :func:`_llm` with M-RoPE sections 8/4/4 (interleaved for Qwen3-VL)."""
    rope = {"rope_type": "default", "mrope_section": [8, 4, 4], "rope_theta": 1e4}
    if mrope_interleaved:
        rope["mrope_interleaved"] = True
    return _llm(max_position_embeddings=4096, bos_token_id=1, rope_parameters=rope, **extra)


def tiny_qwen25_checkpoint(root: Path) -> Path:
    """A Qwen2.5-VL checkpoint: ViT of 32 dims / patch 4 / merge 2 / window 16 px, LLM of 64 dims; saved with
    its tokenizer and processor (videos at 2 frames per temporal step, 64 x 64 px at most)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    path = Path(root) / "qwen2_5_vl"
    cfg = Qwen2_5_VLConfig(
        vision_config=qwen25_vision(out_hidden_size=64),
        text_config=_qwen_llm(),
        **QWEN_IDS,
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    # why: random init of the merger is tiny; larger weights make the logits depend visibly on the kept tokens
    with torch.no_grad():
        for p in model.model.visual.merger.parameters():
            p.mul_(4.0)
    model.save_pretrained(path)
    geometry = dict(patch_size=4, merge_size=2, temporal_patch_size=2, min_pixels=8 * 8, max_pixels=64 * 64)
    Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**geometry),
        tokenizer=_tokenizer(QWEN_SPECIALS),
        video_processor=Qwen2VLVideoProcessor(**geometry),
        chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}",
    ).save_pretrained(path)
    return path


def tiny_qwen3_checkpoint(root: Path) -> Path:
    """A Qwen3-VL checkpoint: the ViT of :func:`tiny_models.qwen3_vision` (DeepStack levels after blocks 0 and 1,
    their mergers scaled up so that a misplaced level changes the logits), LLM of 64 dims and 2 layers (both
    receive a level); saved with its tokenizer and processor (timestamps ``<t seconds>`` are unknown words)."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    path = Path(root) / "qwen3_vl"
    cfg = Qwen3VLConfig(
        vision_config=qwen3_vision(out_hidden_size=64),
        text_config=_qwen_llm(head_dim=32, mrope_interleaved=True),  # why: Qwen3-VL's M-RoPE is interleaved
        **QWEN_IDS,
    )
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(cfg)
    with torch.no_grad():
        for p in model.model.visual.merger.parameters():
            p.mul_(4.0)
        for p in model.model.visual.deepstack_merger_list.parameters():
            p.mul_(4.0)
    model.save_pretrained(path)
    geometry = dict(patch_size=4, merge_size=2, temporal_patch_size=2)
    Qwen3VLProcessor(
        # why: the published Qwen3-VL processors normalise with mean = std = 0.5 for images and videos alike;
        # vLLM normalises on the device with the image processor's values for both
        image_processor=Qwen2VLImageProcessor(
            **geometry, min_pixels=8 * 8, max_pixels=64 * 64, image_mean=[0.5] * 3, image_std=[0.5] * 3
        ),
        tokenizer=_tokenizer(QWEN_SPECIALS),
        video_processor=Qwen3VLVideoProcessor(
            **geometry, size={"shortest_edge": 8 * 8, "longest_edge": 16 * 64 * 64}, cap_pixels_per_frame=False
        ),
        chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}",
    ).save_pretrained(path)
    return path


def _hub_siglip_keys(file: Path) -> None:
    """Rename ``vision_tower.*`` to ``vision_tower.vision_model.*``, the layout of the published checkpoints:
    transformers 5 saves the SigLIP tower without its ``vision_model`` level (and loads both), vLLM loads
    only the published one."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(file)
    renamed = {
        ("vision_tower.vision_model." + k[len("vision_tower.") :] if k.startswith("vision_tower.") else k): v
        for k, v in tensors.items()
    }
    save_file(renamed, file, metadata={"format": "pt"})


def tiny_llava_ov_checkpoint(root: Path) -> Path:
    """A LLaVA-OneVision checkpoint: SigLIP 28 px / patch 4 (7 x 7 patches pooled to 4 x 4 tokens per frame),
    Qwen2 LLM of 64 dims; saved with its tokenizer and processor (``<video>`` is id 151)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    path = Path(root) / "llava_onevision"
    cfg = LlavaOnevisionConfig(
        vision_config=siglip_vision(),
        text_config=_llm(model_type="qwen2", max_position_embeddings=1024),
        image_token_index=Q_IMAGE,
        video_token_index=Q_VIDEO,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=[[28, 28]],
    )
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(cfg)
    with torch.no_grad():
        for p in model.model.multi_modal_projector.parameters():
            p.mul_(4.0)
    model.save_pretrained(path)
    _hub_siglip_keys(path / "model.safetensors")
    specials = {0: "<|endoftext|>", 2: "<|im_end|>", Q_IMAGE: "<image>", Q_VIDEO: "<video>"}
    size = {"height": 28, "width": 28}
    LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[28, 28]]),
        tokenizer=_tokenizer(specials),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=49,
        vision_feature_select_strategy="full",
        chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}",
    ).save_pretrained(path)
    return path


def video(seed: int, frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    """uint8 frames (T, H, W, 3) of a random video."""
    return np.random.default_rng(seed).integers(0, 256, (frames, size, size, 3), dtype=np.uint8)


def colored_video(seed: int, frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    """uint8 frames of noise around a random colour per video: unlike uniform noise, which SigLIP and
    pooling average to nearly the same features, different seeds give visibly different LLaVA outputs."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(rng.uniform(0, 255, (1, 1, 1, 3)), 40, (frames, size, size, 3)), 0, 255).astype(np.uint8)


def metadata(frames: int = FRAMES, fps: float = 4.0) -> dict:
    """vLLM video metadata for frames sampled at ``fps`` (every frame kept, none resampled)."""
    return {
        "fps": fps,
        "duration": frames / fps,
        "total_num_frames": frames,
        "frames_indices": list(range(frames)),
        "video_backend": "opencv",
        "do_sample_frames": False,
    }


def require_vllm():
    """Import vLLM for a test module: skip the module where vLLM is not installed (the main environment),
    fail it where ``TANGO_PRUNE_REQUIRE_VLLM`` is set (``make test-vllm``: a broken environment must not pass
    as skipped). Sets the in-process engine mode (one process: the tests inspect the model directly)."""
    import os

    import pytest

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    try:
        import vllm
    except Exception as e:  # why: a broken install raises more than ImportError (e.g. OSError from a .so)
        if os.environ.get("TANGO_PRUNE_REQUIRE_VLLM"):
            pytest.fail(f"TANGO_PRUNE_REQUIRE_VLLM is set but vllm cannot be imported: {e!r}", pytrace=False)
        pytest.skip(f"vllm is not installed here ({e!r}); `make test-vllm` runs these tests", allow_module_level=True)
    return vllm


def engine(path: Path, tango: dict | None, arch: str, **kwargs):
    """An in-process vLLM engine on a tiny checkpoint: fp32, eager, no prefix or processor cache (every
    request encodes its video), the plugin's ``arch`` with ``tango`` as its config (``None``: upstream)."""
    from vllm import LLM

    overrides = {} if tango is None else {"architectures": [arch], "tango_prune": tango}
    opts = dict(
        model=str(path),
        dtype="float32",
        max_model_len=512,
        enforce_eager=True,
        limit_mm_per_prompt={"video": 2, "image": 1},
        max_num_seqs=4,
        seed=0,
        enable_prefix_caching=False,
        mm_processor_cache_gb=0,
        hf_overrides=overrides,
    )
    opts.update(kwargs)
    return LLM(**opts)


def close(llm) -> None:
    """Shut an in-process engine down and free it (one engine at a time on a small machine)."""
    import gc

    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception:  # why: best effort; the engine may already be down
        pass
    del llm
    gc.collect()
