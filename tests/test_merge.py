import pytest
import torch

from tango_prune.core.merge import merge_into_anchors, segment_sum


def test_singleton_anchor_unchanged_and_cluster_weighted():
    src = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 10.0], [10.0, 11.0], [10.0, 12.0]])
    anchors = torch.tensor([0, 3])
    out = merge_into_anchors(src, src, anchors, beta=0.6)
    # anchor 0 takes point 1 too: count 2 -> w = max(1/2, 0.6) = 0.6
    assert torch.allclose(out[0], 0.6 * src[0] + 0.4 * src[:2].mean(0))
    assert torch.allclose(out[1], 0.6 * src[3] + 0.4 * src[2:].mean(0))
    alone = merge_into_anchors(src, src, torch.tensor([0, 1, 2, 3, 4]), beta=0.6)
    assert torch.equal(alone, src)


def test_beta_below_half_lets_pair_weight_win():
    src = torch.tensor([[0.0], [1.0]])
    out = merge_into_anchors(src, src, torch.tensor([0]), beta=0.2)
    assert torch.allclose(out[0], 0.5 * src[0] + 0.5 * src.mean(0))


def test_bf16_large_cluster_counts_and_sums_in_fp32():
    # The published code counts in bf16, which saturates at 256; 1000 members must give the exact mean.
    n = 1000
    vals = torch.linspace(0, 1, n, dtype=torch.float64)
    src = vals[:, None].repeat(1, 4).to(torch.bfloat16)
    geo = torch.zeros(n, 2)
    out = merge_into_anchors(src, geo, torch.tensor([0]), beta=0.6)
    exact = 0.6 * src[0].double() + 0.4 * src.double().mean(0)
    assert out.dtype == torch.float32
    assert torch.allclose(out[0].double(), exact, atol=1e-6)


def test_segment_sum_deterministic_and_correct():
    v = torch.randn(500, 3)
    seg = torch.randint(0, 7, (500,), generator=torch.Generator().manual_seed(0))
    sums, counts = segment_sum(v, seg, 9)
    for j in range(9):
        assert torch.allclose(sums[j], v[seg == j].sum(0), atol=1e-5)
        assert counts[j] == (seg == j).sum()
    assert torch.equal(sums, segment_sum(v, seg, 9)[0])


@pytest.mark.parametrize("threads", [1, 2])
def test_segment_sum_adds_rows_in_input_order_bit_for_bit(threads):
    """The definition, bit for bit: each segment is ((0 + first row) + second row) + ... in input order,
    with signed zeros, NaN and inf rows, empty segments and a wide D, at any thread count."""
    g = torch.Generator().manual_seed(1)
    v = torch.randn(300, 1000, generator=g) * 10.0 ** torch.randint(-20, 20, (300, 1), generator=g)
    v[::5, ::3] = -0.0
    v[7, 4], v[9, 5], v[11, 6] = float("nan"), float("inf"), -float("inf")
    seg = torch.randint(0, 40, (300,), generator=g)
    seg[seg == 3] = 4  # segment 3 empty
    want = torch.zeros(41, 1000)
    for i in range(300):
        want[seg[i]] = want[seg[i]] + v[i]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sums, counts = segment_sum(v, seg, 41)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(sums.view(torch.int32), want.view(torch.int32))
    assert counts.tolist() == torch.bincount(seg, minlength=41).float().tolist()
    # bf16 values accumulate in fp32, in the same order
    vb = v.clamp(-1e30, 1e30).to(torch.bfloat16)
    want_b = torch.zeros(41, 1000)
    for i in range(300):
        want_b[seg[i]] = want_b[seg[i]] + vb[i].float()
    assert torch.equal(segment_sum(vb, seg, 41)[0].view(torch.int32), want_b.view(torch.int32))
