"""The vLLM plugin's vLLM-free parts (run in every environment): config parsing, exact-budget selection and
the lossless position channels."""

from __future__ import annotations

import types

import pytest
import torch

import tango_prune as tp
from tango_prune.tokens import TokenKind, VideoTokens
from tango_prune.vllm.config import parse_config, video_budget_for_grid
from tango_prune.vllm.positions import CHANNELS, decode_positions, encode_positions, qwen_media_positions
from tango_prune.vllm.selection import fit_to_budget


def _cfg(entry):
    return types.SimpleNamespace(tango_prune=entry)


# -- configuration ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", tp.methods())
def test_every_registered_method_parses(method):
    cfg = parse_config(_cfg({"method": method, "retention": 0.3}))
    assert cfg.method.method == method and cfg.retention == 0.3


def test_method_fields_pass_through_and_default_method_is_tango():
    cfg = parse_config(_cfg({"retention": 0.2, "alpha": 2.0}))
    assert cfg.method.method == "tango" and cfg.method.alpha == 2.0


@pytest.mark.parametrize(
    "entry, match",
    [
        (None, "no 'tango_prune' entry"),
        ("tango", "must be a dict"),
        ({"method": "nope", "retention": 0.1}, "method must be one of"),
        ({"method": "topk"}, "retention is required"),
        ({"method": "topk", "retention": 0.0}, "retention"),
        ({"method": "topk", "retention": 1.5}, "retention"),
        ({"method": "topk", "retention": 0.1, "alpha": 1}, "unknown field"),
    ],
)
def test_bad_entries_raise_value_error_naming_the_entry(entry, match):
    with pytest.raises(ValueError, match=match) as e:
        parse_config(_cfg(entry))
    assert "tango_prune" in str(e.value)


def test_budget_is_the_library_budget():
    assert video_budget_for_grid(4, 4, 4, 0.25) == 16
    assert video_budget_for_grid(3, 5, 7, 0.07) == 3 * 3  # ceil(35 * 7 / 100) exactly, not the float 2.45 -> 3
    assert video_budget_for_grid(2, 2, 2, 0.01) == 2  # at least one token per step


# -- exact budget ----------------------------------------------------------------------------------------
def _tokens(T=3, H=4, W=4, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return VideoTokens(
        features=torch.randn(T, H, W, D, generator=g), saliency=torch.rand(T, H, W, generator=g).softmax(-1)
    )


def test_fit_trims_lowest_saliency_and_tops_up_highest_saliency():
    tok = _tokens()
    res = tp.prune(tok, "uniform", retention=0.25)
    sal = tok.saliency.reshape(-1)
    k = res.num_kept
    less = fit_to_budget(tok, res, k - 3)
    assert less.num_kept == k - 3 and set(less.indices.tolist()) <= set(res.indices.tolist())
    dropped = sorted(set(res.indices.tolist()) - set(less.indices.tolist()))
    assert max(sal[dropped]) <= min(sal[less.indices])
    more = fit_to_budget(tok, res, k + 5)
    added = sorted(set(more.indices.tolist()) - set(res.indices.tolist()))
    assert more.num_kept == k + 5 and len(added) == 5
    rest = sorted(set(range(tok.num_tokens)) - set(more.indices.tolist()))
    assert min(sal[added]) >= max(sal[rest])
    flat = tok.features.reshape(tok.num_tokens, -1)
    pos = {i: j for j, i in enumerate(more.indices.tolist())}
    assert all(torch.equal(more.features[pos[i]], flat[i]) for i in added)
    assert all(int(more.kinds[pos[i]]) == TokenKind.SALIENT for i in added)
    assert more.info["budget_fit"] == {"method_kept": k, "added": 5, "dropped": 0}
    assert fit_to_budget(tok, res, k) is res


def test_fit_keeps_merged_features_of_the_tokens_it_keeps():
    tok = _tokens(T=4, seed=1)
    res = tp.prune(tok, "tango", retention=0.3)
    fit = fit_to_budget(tok, res, res.num_kept - 2)
    where = {i: j for j, i in enumerate(res.indices.tolist())}
    for j, i in enumerate(fit.indices.tolist()):
        assert torch.equal(fit.features[j], res.features[where[i]])


def test_fit_breaks_saliency_ties_by_lower_index():
    tok = VideoTokens(features=torch.randn(1, 2, 4, 4), saliency=torch.ones(1, 2, 4))
    res = tp.prune(tok, "uniform", retention=0.5)
    assert fit_to_budget(tok, res, 2).indices.tolist() == sorted(res.indices.tolist())[:2]
    extra = fit_to_budget(tok, res, 6)
    first_free = [i for i in range(8) if i not in res.indices.tolist()][:2]
    assert set(first_free) <= set(extra.indices.tolist())


@pytest.mark.parametrize("budget", [0, 49, 2.0, True])
def test_fit_rejects_impossible_budgets(budget):
    tok = _tokens()
    with pytest.raises(ValueError, match="budget"):
        fit_to_budget(tok, tp.prune(tok, "topk", retention=0.25), budget)


# -- positions -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_position_channels_are_lossless_in_every_embedding_dtype(dtype):
    values = torch.tensor([[0, 0, 1], [257, 256, 255], [70000, 65535, 131071], [16777215, 1, 2]])
    enc = encode_positions(values, dtype)
    assert enc.shape == (4, CHANNELS) and enc.dtype == dtype
    assert torch.equal(decode_positions(enc), values)
    # the failure this prevents: a plain bf16 cast rounds 257 to 256
    assert int(torch.tensor(257.0).to(torch.bfloat16)) == 256


def test_position_channels_reject_out_of_range():
    with pytest.raises(ValueError, match="positions"):
        encode_positions(torch.tensor([[2**24, 0, 0]]), torch.float32)


def test_media_positions_are_placed_after_the_token_before_their_run_whole_or_in_pieces():
    from tango_prune.vllm.positions import place_media_positions

    V = 9
    ids = torch.tensor([1, 8, V, V, V, 8, 2, 8, V, V, 8, 3])
    # text positions final: 0 1 | media 2.. | 8 = end of item 1 at offset 2 + extent 5, ...
    pos = torch.tensor([0, 1, -1, -1, -1, 7, 8, 9, -1, -1, 12, 13]).expand(3, -1).clone()
    item1 = torch.tensor([[0, 0, 0], [1, 0, 1], [4, 1, 0]])
    item2 = torch.tensor([[0, 1, 2], [0, 2, 2]])
    whole = place_media_positions(ids, [item1, item2], pos, 0, (V,))
    assert whole[:, 2:5].T.tolist() == (item1 + 2).tolist() and whole[:, 8:10].T.tolist() == (item2 + 10).tolist()
    assert torch.equal(whole[:, ids != V], pos[:, ids != V]) and pos[0, 2] == -1  # input untouched
    # the same placement in two chunks: the first piece starts right after the token before its run
    part = place_media_positions(ids, [item1[:2]], pos, 2, (V,))
    part = place_media_positions(ids, [item1[2:], item2], part, 4, (V,))
    assert torch.equal(part, whole)
    with pytest.raises(ValueError, match="media_positions"):
        place_media_positions(ids, [item1, item2, item2], pos, 0, (V,))


def test_media_positions_follow_the_hf_expression_with_fractional_step_times():
    # 0.5 s per step at 2 tokens/s: time positions 0, 1, 2 (truncating the step to whole seconds gives 0, 0, 0)
    pos, nxt = qwen_media_positions(3, 2, 2, tokens_per_second=2, second_per_grid=0.5)
    assert pos[:, 0].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert pos[:4, 1:].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert nxt == 3  # the text after the video starts past every video position
    step = torch.tensor(0.7, dtype=torch.float32)
    pos, nxt = qwen_media_positions(6, 1, 1, tokens_per_second=25, second_per_grid=0.7)
    assert pos[:, 0].tolist() == (torch.arange(6) * (25 * step)).long().tolist()
    assert nxt == int(pos.max()) + 1
    image, nxt = qwen_media_positions(1, 3, 5)
    assert image[:, 0].eq(0).all() and nxt == 5


def test_qwen3_frame_groups_each_start_after_their_vision_start_and_span_the_larger_side():
    from tango_prune.vllm.positions import frame_group_positions

    S, E, V = 7, 6, 9
    ids = [4, S, V, V, V, V, E, 4, S, V, V, V, V, E]  # two 2 x 2 frames, each after a one-token timestamp
    pos, extent = frame_group_positions(ids, V, 2, 2)
    assert pos[:, :2].T.tolist() == [[0, 0, 0], [1, 1, 1]]
    assert pos[:, 2:6].T.tolist() == [[2, 2, 2], [2, 2, 3], [2, 3, 2], [2, 3, 3]]  # time index 0 + start
    assert pos[0, 6:9].tolist() == [4, 5, 6] and pos[:, 9].tolist() == [7, 7, 7] and extent == 10


def test_range_rows_are_placed_from_their_index_in_the_range_whole_or_in_chunks():
    from tango_prune.vllm.positions import place_range_positions

    S, E, V = 7, 6, 9
    # text | range: timestamp, start, 2 kept tokens, end, timestamp, start, end | text; the range's rows carry
    # positions relative to its first token, lead 2 (rows before its first V) and anchor V
    ids = torch.tensor([1, 5, 4, S, V, V, E, 4, S, E, 2])
    pos = torch.tensor([0, 1] + [-1] * 8 + [20]).expand(3, -1).clone()
    rel = torch.tensor([[0, 0, 0], [1, 1, 1], [2, 2, 3], [2, 4, 2], [6, 6, 6], [7, 7, 7], [8, 8, 8], [17, 17, 17]])
    rows = torch.cat([rel, torch.arange(8)[:, None], torch.tensor([[2, V]]).expand(8, 2)], dim=1)
    whole = place_range_positions(ids, [rows], pos, 0)
    assert whole[:, 2:10].T.tolist() == (rel + 2).tolist()
    assert torch.equal(whole[:, [0, 1, 10]], pos[:, [0, 1, 10]]) and pos[0, 2] == -1  # input untouched
    # chunks of 5 and 6 tokens: the second piece continues the range at its row 3
    part = place_range_positions(ids, [rows[:3]], pos, 0)
    assert torch.equal(place_range_positions(ids, [rows[3:]], part, 5), whole)
    with pytest.raises(ValueError, match="no token"):
        place_range_positions(ids, [rows, rows], pos, 0)


# -- bench --engine vllm: argument errors before vLLM is needed ------------------------------------------
def test_bench_vllm_engine_needs_a_checkpoint_directory(tmp_path, capsys):
    from tango_prune.cli import main

    assert main(["bench", "--engine", "vllm", "--model", "llava-ov-0.5b", "--out", str(tmp_path / "o")]) == 2
    assert "checkpoint directory" in capsys.readouterr().err


def test_bench_vllm_engine_rejects_an_unserved_architecture(tmp_path, capsys):
    from tango_prune.cli import main

    (tmp_path / "config.json").write_text('{"architectures": ["InternVLForConditionalGeneration"]}')
    argv = ["bench", "--engine", "vllm", "--model", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "serves" in capsys.readouterr().err


def test_bench_vllm_engine_without_vllm_says_how_to_install(tmp_path, capsys, monkeypatch):
    import sys

    from tango_prune.cli import main

    monkeypatch.setitem(sys.modules, "vllm", None)  # why: as in an environment without vLLM
    (tmp_path / "config.json").write_text('{"architectures": ["Qwen2_5_VLForConditionalGeneration"]}')
    argv = ["bench", "--engine", "vllm", "--model", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "tango-prune[vllm]" in capsys.readouterr().err
