"""A bad ``tango_prune`` entry stops vLLM at engine start, in the calling process, with the plugin's message:
the frontend parses it when it builds the multimodal processor, before any engine-core process or worker."""

from __future__ import annotations

import traceback

import pytest

from vllm_models import engine, require_vllm, tiny_qwen25_checkpoint

require_vllm()

ARCH = "TangoQwen2_5_VLForConditionalGeneration"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_qwen25_checkpoint(tmp_path_factory.mktemp("vllm_config"))


@pytest.mark.parametrize(
    "entry, match",
    [
        ({"method": "no-such-method", "retention": 0.1}, "method must be one of"),
        ({"method": "topk", "retention": 1.5}, "retention"),
        ({"method": "tango", "retention": 0.0}, "retention"),
    ],
)
def test_bad_config_fails_at_engine_start_not_in_a_worker(checkpoint, monkeypatch, entry, match):
    # why: the multiprocess engine (vLLM's default): a worker-side error would surface as
    # "Engine core initialization failed", not as this ValueError
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    with pytest.raises(ValueError, match=match) as e:
        engine(checkpoint, entry, ARCH)
    assert "tango_prune" in str(e.value)
    frames = "".join(traceback.format_tb(e.value.__traceback__))
    assert "renderers" in frames and "v1/worker" not in frames and "engine/core.py" not in frames


def test_vllm_own_video_pruning_cannot_be_combined(checkpoint, monkeypatch):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    with pytest.raises(ValueError, match="video_pruning_rate"):
        engine(checkpoint, {"method": "topk", "retention": 0.5}, ARCH, video_pruning_rate=0.5)
