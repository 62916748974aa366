import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_tango import ref_holitom
from tango_prune.core.segment import fastvid_segments, frame_similarity, holitom_segments


def test_no_static_positions_gives_singletons():
    sim = torch.full((5, 10), 0.1)
    assert holitom_segments(sim, 0.8) == [1] * 6


def test_fully_static_video_is_one_segment():
    sim = torch.ones(7, 10)
    assert holitom_segments(sim, 0.8) == [8]


def test_scene_cut_splits_segments():
    sim = torch.ones(9, 6)
    sim[3] = 0.0  # frames 0-3 | 4-9
    assert holitom_segments(sim, 0.8) == [4, 6]


def test_partial_static_prefers_longer_windows():
    # Half the positions are static over frames 0-5, the rest over 2-5: one window of 6 frames wins
    # (3 * 5 + ... beats splitting).
    sim = torch.zeros(5, 4)
    sim[:, :2] = 1.0
    sim[2:, 2:] = 1.0
    sizes = holitom_segments(sim, 0.5)
    assert sizes == ref_holitom(sim > 0.5) and sum(sizes) == 6


def test_max_window_limits_segment_length():
    sim = torch.ones(9, 3)
    sizes = holitom_segments(sim, 0.5, max_window=4)
    assert max(sizes) <= 4 and sum(sizes) == 10


@settings(max_examples=60, deadline=None)
@given(N=st.integers(1, 14), L=st.integers(1, 6), p=st.floats(0.3, 0.95), seed=st.integers(0, 10_000))
def test_dp_equals_naive_reference(N, L, p, seed):
    rng = np.random.default_rng(seed)
    above = torch.from_numpy(rng.random((N - 1, L)) < p)
    sim = above.float()
    assert holitom_segments(sim, 0.5) == ref_holitom(above)


def test_fastvid_cuts():
    sim = torch.tensor([0.9, 0.2, 0.95, 0.85, 0.3, 0.99])
    # 2 lowest similarities (indices 1 and 4) plus every value below 0.5 (same ones)
    assert fastvid_segments(sim, 0.5, num_cuts=3) == [2, 3, 2]
    # below-threshold cuts add to the lowest ones
    assert fastvid_segments(sim, 0.9, num_cuts=2) == [2, 2, 1, 2]
    assert sum(fastvid_segments(torch.zeros(0), 0.5)) == 1


def test_fastvid_ties_cut_earliest_first():
    assert fastvid_segments(torch.full((5,), 0.5), 0.1, num_cuts=3) == [1, 1, 4]


def test_frame_similarity_chunked_matches_direct():
    x = torch.randn(10, 7, 5)
    xn = x / x.norm(dim=-1, keepdim=True)
    direct = (xn[:-1] * xn[1:]).sum(-1)
    default = frame_similarity(x)
    assert torch.allclose(default, direct, atol=1e-6)
    for chunk in (1, 2, 3, 4, 9, 10, 64):  # the chunking changes memory traffic, never bits
        assert torch.equal(frame_similarity(x, chunk_frames=chunk), default)
    from tango_prune.core.strope import normalize

    for t in (x, x[:, 0]):  # per token (T, L, D) and per frame (T, D): the same bits as the formula
        u = normalize(t)
        for chunk in (1, 2, 3, 4, 9, 10):
            assert torch.equal(frame_similarity(t, chunk_frames=chunk), (u[:-1] * u[1:]).sum(-1))
    assert frame_similarity(torch.randn(1, 4, 3)).shape == (0, 4)
    with pytest.raises(ValueError, match="chunk_frames"):
        frame_similarity(x, chunk_frames=0)


def test_frame_similarity_default_chunk_is_bounded_and_exact():
    # A frame larger than CHUNK_ELEMS still goes one frame at a time; a small one batches frames.
    from tango_prune.core.segment import CHUNK_ELEMS

    big = torch.randn(3, 2, CHUNK_ELEMS // 2 + 1)
    assert torch.equal(frame_similarity(big), frame_similarity(big, chunk_frames=3))
    small = torch.randn(40, 3, 5)
    assert torch.equal(frame_similarity(small), frame_similarity(small, chunk_frames=40))


def test_frame_similarity_fp64_beyond_fp32_range_and_bf16():
    from tango_prune.core.strope import normalize

    x = torch.randn(5, 3, 7, dtype=torch.float64)
    x[2] *= 1e300
    x[3, 1] = 0.0
    for t in (x, torch.randn(6, 4, 5).bfloat16()):
        u = normalize(t)
        for chunk in (1, 2, 64):
            assert torch.equal(frame_similarity(t, chunk), (u[:-1] * u[1:]).sum(-1))
    assert torch.isfinite(frame_similarity(x)).all()


def test_shape_errors():
    with pytest.raises(ValueError, match="frame_sim"):
        holitom_segments(torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match="frame_sim"):
        fastvid_segments(torch.zeros(4, 2), 0.5)
