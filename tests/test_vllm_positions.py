"""The Qwen2.5-VL position pipeline of the plugin without an engine: the model's own
``get_mrope_input_positions`` and ``recompute_mrope_positions`` on a pruned prompt, whole and in chunks, for a
long video whose time positions exceed its grid (where HF's text offset ``max(h, w)`` would overlap)."""

from __future__ import annotations

import functools
import types

import pytest
import torch

from vllm_models import Q_END, Q_START, Q_VIDEO, require_vllm

require_vllm()

T, H, W = 8, 2, 3  # steps, merged rows, merged columns
STEP_S, TPS = 1.5, 2  # seconds per step, tokens per second: time positions 0, 3, 6, ..., 21 > max(H, W)
BUDGET = T * 2


def _model():
    from tango_prune.vllm.qwen2_5_vl import TangoQwen2_5_VLForConditionalGeneration as Cls

    cfg = types.SimpleNamespace(
        vision_config=types.SimpleNamespace(spatial_merge_size=2, tokens_per_second=TPS),
        vision_start_token_id=Q_START,
        image_token_id=150,
        video_token_id=Q_VIDEO,
    )
    fake = types.SimpleNamespace(config=cfg)
    fake._media_grid = functools.partial(Cls._media_grid, fake)
    return fake, Cls


def _feature(offset: int):
    from vllm.multimodal.inputs import PlaceholderRange

    field = types.SimpleNamespace
    return field(
        modality="video",
        mm_position=PlaceholderRange(offset=offset, length=BUDGET),
        data={
            "video_grid_thw": field(data=torch.tensor([T, 2 * H, 2 * W])),
            "second_per_grid_ts": field(data=torch.tensor(STEP_S)),
        },
    )


@pytest.mark.parametrize("chunk", [None, 5])
def test_kept_tokens_get_their_positions_and_text_after_never_overlaps(chunk):
    from tango_prune.vllm.positions import encode_positions, qwen_media_positions

    fake, Cls = _model()
    ids = [1, 3, Q_START] + [Q_VIDEO] * BUDGET + [Q_END, 4, 5]
    positions, delta = Cls.get_mrope_input_positions(fake, ids, [_feature(3)])
    assert positions.shape == (3, len(ids))
    full, nxt = qwen_media_positions(T, H, W, TPS, STEP_S)
    assert nxt == 22  # largest time position 21, + 1
    kept = torch.arange(0, T * H * W, 3)[:BUDGET]  # any BUDGET tokens of the grid
    emb = torch.cat([torch.randn(BUDGET, 8), encode_positions(full[kept], torch.bfloat16).float()], dim=1)
    if chunk is None:
        cleaned, new, delta = Cls.recompute_mrope_positions(fake, ids, [emb], positions, 0)
        assert torch.equal(cleaned[0], emb[:, :8])
    else:
        # chunked prefill: the video's embeddings arrive in two pieces, each with the tokens computed so far;
        # the first chunk starts right after the vision-start token (vLLM's EVS routine fails on that boundary)
        first = 3 + chunk
        _, new, _ = Cls.recompute_mrope_positions(fake, ids, [emb[:chunk]], positions, 3)
        _, new, delta = Cls.recompute_mrope_positions(fake, ids, [emb[chunk:]], new, first)
    start = 3  # the vision-start token is at position 2: the video starts at 3
    assert torch.equal(new[:, 3 : 3 + BUDGET].T, full[kept] + start)
    tail = new[:, 3 + BUDGET :]
    assert tail.tolist() == [[start + nxt + i for i in range(3)]] * 3  # vision end, then the text
    assert int(tail.min()) > int(new[:, : 3 + BUDGET].max())
    assert delta == int(new.max()) + 1 - len(ids)
