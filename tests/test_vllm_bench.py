"""``tango-prune bench --engine vllm`` on a tiny checkpoint: one row per engine, ratios to the unpruned one,
and the pruned prompt is the budget's length."""

from __future__ import annotations

import json

import pytest

from vllm_models import require_vllm, tiny_qwen25_checkpoint

require_vllm()

pytestmark = pytest.mark.slow


def test_bench_vllm_reports_throughput_with_and_without_pruning(tmp_path, capsys):
    from tango_prune.cli import main

    ckpt = tiny_qwen25_checkpoint(tmp_path)
    out = tmp_path / "out"
    argv = ["bench", "--engine", "vllm", "--model", str(ckpt), "--methods", "topk", "--retentions", "0.25"]
    argv += ["--frames", "8", "--frame-size", "32", "--requests", "2", "--warmup", "0", "--repeats", "1"]
    assert main(argv + ["--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    rows = {r["method"]: r for r in report["rows"]}
    assert list(rows) == ["none", "topk"] and report["architecture"] == "TangoQwen2_5_VLForConditionalGeneration"
    # 8 frames of 32 px: 4 steps of 4 x 4 tokens = 64 placeholders unpruned, 16 at retention 0.25
    assert rows["none"]["prompt_tokens_per_request"] - rows["topk"]["prompt_tokens_per_request"] == 64 - 16
    for r in rows.values():
        assert r["requests_per_s"] > 0 and r["prefill_tokens_per_s"] > 0 and len(r["batch_s"]) == 1
    assert rows["none"]["requests_per_s_ratio"] == 1.0
    assert "| topk | 0.25 |" in (out / "bench.md").read_text()
    assert "requests/s vs unpruned" in capsys.readouterr().out
