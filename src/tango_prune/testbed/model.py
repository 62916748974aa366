"""The testbed Video LLM: configuration, word-level tokenizer and processor (prompt format + pixels).

The model is an unmodified ``transformers.LlavaOnevisionForConditionalGeneration``: a SigLIP vision tower
*with* its attention-pooling head, the 2-layer GELU projector, bilinear 2x2 pooling of the patch grid, one
``image_newline`` token after the video, and a Qwen2 language model; only the sizes are small. Video goes
through the standard path (``pixel_values_videos`` -> ``get_video_features``).

Prompt format (word-level, lower case; ``<video>`` repeated once per visual token)::

    <video> x (T * h * w + 1) question : {question} options : {o1} {o2} {o3} {o4} answer : {answer} <eos>

With the default 72 px frames and 6 px patches, a frame is 12 x 12 patches, pooled to 6 x 6 = 36 tokens, so
a 16-frame clip is 577 visual tokens.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import data as D

__all__ = [
    "SPECIAL_TOKENS",
    "WEIGHTS_DIR",
    "build_tokenizer",
    "build_config",
    "TestbedProcessor",
    "load_model",
    "load_processor",
    "load",
]

SPECIAL_TOKENS = ("<pad>", "<unk>", "<eos>", "<video>", "<image>")
#: where the shipped weights, tokenizer and processor config live (package data)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_PROCESSOR_FILE = "testbed_processor.json"


def build_tokenizer():
    """A word-level ``PreTrainedTokenizerFast`` over :func:`tango_prune.testbed.data.vocabulary_words`.

    Built locally with ``tokenizers`` (no hub): lower-casing, whitespace split with ``? : , . !`` split off,
    unknown words map to ``<unk>``.
    """
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = list(SPECIAL_TOKENS) + [w for w in D.vocabulary_words() if w not in SPECIAL_TOKENS]
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex(r"[?:,.!]"), behavior="isolated"),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<eos>",
        additional_special_tokens=["<video>", "<image>"],
    )


def build_config(
    tokenizer,
    *,
    image_size: int = D.IMAGE_SIZE,
    patch_size: int = 6,
    vision_hidden: int = 128,
    vision_layers: int = 4,
    text_hidden: int = 128,
    text_layers: int = 4,
    heads: int = 4,
    text_heads: int = 4,
):
    """The ``LlavaOnevisionConfig`` of the testbed model (SigLIP with pooling head + Qwen2)."""
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    if image_size % patch_size:
        raise ValueError(f"image_size must be a multiple of patch_size={patch_size}, got {image_size}")
    vision = SiglipVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden,
        num_hidden_layers=vision_layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
        vision_use_head=True,
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=text_hidden,
        intermediate_size=2 * text_hidden,
        num_hidden_layers=text_layers,
        num_attention_heads=text_heads,
        num_key_value_heads=max(1, text_heads // 2),
        max_position_embeddings=2048,
        rope_theta=10000.0,  # type: ignore[call-arg]  # why: accepted as a legacy kwarg; the shipped weights use it
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    return LlavaOnevisionConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=[[image_size, image_size]],
        tie_word_embeddings=True,
    )


class TestbedProcessor:
    """Turns (frames, question, options) into model inputs, and back.

    Pixels are scaled to [-1, 1] as SigLIP expects; the video placeholder is expanded to the number of
    visual tokens ``get_video_features`` produces (``T * ceil(P/2)^2 + 1`` with ``P`` patches per side).
    """

    __test__ = False  # not a pytest class despite the name

    def __init__(self, tokenizer, image_size: int = D.IMAGE_SIZE, patch_size: int = 6):
        if image_size % patch_size:
            raise ValueError(f"image_size must be a multiple of patch_size={patch_size}, got {image_size}")
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.video_token_id = tokenizer.convert_tokens_to_ids("<video>")

    @property
    def grid(self) -> int:
        """Side of the pooled token grid of one frame."""
        return math.ceil(self.image_size // self.patch_size / 2)

    def num_video_tokens(self, num_frames: int) -> int:
        """Visual tokens for a clip of ``num_frames`` frames (pooled grid tokens + one newline)."""
        return num_frames * self.grid * self.grid + 1

    @staticmethod
    def prompt(question: str, options: Sequence[str] | None = None) -> str:
        """The text after the video: ``question : ... [options : ...] answer :``."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question must be a non-empty string, got {question!r}")
        text = f"question : {question.strip()}"
        if options:
            text += " options : " + " ".join(options)
        return text + " answer :"

    def pixels(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames (T, H, W, 3) -> float tensor (1, T, 3, H, W) in [-1, 1]."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"frames must have shape (T, {self.image_size}, {self.image_size}, 3), got {frames.shape}")
        x = torch.from_numpy(np.ascontiguousarray(frames)).float().div(127.5).sub(1.0)
        return x.permute(0, 3, 1, 2).unsqueeze(0)

    def __call__(self, frames: np.ndarray, question: str, options: Sequence[str] | None = None) -> dict:
        """Inputs for one clip and question: ``input_ids``, ``attention_mask``, ``pixel_values_videos``."""
        pv = self.pixels(frames)
        ids = [self.video_token_id] * self.num_video_tokens(pv.shape[1])
        ids += self.tokenizer(self.prompt(question, options), add_special_tokens=False)["input_ids"]
        input_ids = torch.tensor([ids], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values_videos": pv}

    def decode(self, token_ids) -> str:
        """Text of generated token ids (special tokens dropped)."""
        return self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the tokenizer and ``testbed_processor.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        (directory / _PROCESSOR_FILE).write_text(
            json.dumps(
                {
                    "image_size": self.image_size,
                    "patch_size": self.patch_size,
                    "num_frames": D.NUM_FRAMES,
                    "pixel_scale": "x / 127.5 - 1",
                    "prompt": "<video>*N question : Q options : O answer :",
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "TestbedProcessor":
        """Load what :meth:`save_pretrained` wrote."""
        from transformers import PreTrainedTokenizerFast

        directory = Path(directory)
        cfg_path = directory / _PROCESSOR_FILE
        if not cfg_path.is_file():
            raise ValueError(f"directory must contain {_PROCESSOR_FILE}, got {str(directory)!r}")
        cfg = json.loads(cfg_path.read_text())
        tok = PreTrainedTokenizerFast.from_pretrained(directory)
        return cls(tok, cfg["image_size"], cfg["patch_size"])


def load_model(directory: str | Path | None = None):
    """The trained testbed model (``from_pretrained``, fp32, eval mode); default the shipped weights."""
    from transformers import LlavaOnevisionForConditionalGeneration

    directory = Path(directory) if directory is not None else WEIGHTS_DIR
    if not (directory / "config.json").is_file():
        raise ValueError(f"directory must hold a saved model (config.json), got {str(directory)!r}")
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(directory, dtype=torch.float32)
    return model.eval()


def load_processor(directory: str | Path | None = None) -> TestbedProcessor:
    """The processor saved beside the model; default the shipped one."""
    return TestbedProcessor.from_pretrained(directory if directory is not None else WEIGHTS_DIR)


def load(directory: str | Path | None = None):
    """``(model, processor)`` from ``directory`` (default: the shipped weights)."""
    return load_model(directory), load_processor(directory)
