import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_tango import ref_dpc
from tango_prune.core.dpc import dpc_knn, nearest


def blobs(k, per=20, D=16, seed=0, spread=0.05):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, D, generator=g) * 5
    pts = centres.repeat_interleave(per, 0) + spread * torch.randn(k * per, D, generator=g)
    labels = torch.arange(k).repeat_interleave(per)
    return pts, labels


@pytest.mark.parametrize("k", [2, 5, 9])
def test_one_centre_per_well_separated_blob(k):
    pts, labels = blobs(k)
    perm = torch.randperm(len(pts), generator=torch.Generator().manual_seed(3))
    pts, labels = pts[perm], labels[perm]
    c = dpc_knn(pts, k, 5)
    assert sorted(labels[c].tolist()) == list(range(k))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 60), D=st.integers(2, 12), seed=st.integers(0, 10_000), k=st.integers(1, 8), data=st.data())
def test_matches_dense_fp64_reference(n, D, seed, k, data):
    num = data.draw(st.integers(1, n))
    x = torch.randn(n, D, generator=torch.Generator().manual_seed(seed))
    got = dpc_knn(x, num, k).tolist()
    assert got == ref_dpc(x.double(), num, k)


@pytest.mark.parametrize("n", [1, 3, 37, 300])
def test_blocked_equals_dense(n):
    x = torch.randn(4, n, 24, generator=torch.Generator().manual_seed(n))
    dense = dpc_knn(x, max(1, n // 5), 7, block_elems=1 << 30)
    for block in (7, 1000):
        assert torch.equal(dpc_knn(x, max(1, n // 5), 7, block_elems=block), dense)


def test_batched_equals_per_set():
    x = torch.randn(3, 40, 8, generator=torch.Generator().manual_seed(0))
    both = dpc_knn(x, 6, 7)
    for b in range(3):
        assert torch.equal(both[b], dpc_knn(x[b], 6, 7))


def test_duplicates_are_deterministic_and_input_untouched():
    x = torch.randn(10, 8, generator=torch.Generator().manual_seed(0)).repeat(3, 1)   # exact triplicates
    before = x.clone()
    a = dpc_knn(x, 10, 3)
    assert torch.equal(a, dpc_knn(x, 10, 3))
    assert torch.equal(x, before)
    assert len(set(a.tolist())) == 10


def test_nearest_ties_go_to_first_centre_and_blocks_agree():
    x = torch.randn(100, 6, generator=torch.Generator().manual_seed(1))
    c = torch.cat([x[:5], x[:1]])  # centre 5 duplicates centre 0
    a = nearest(x, c)
    assert (a != 5).all()
    assert torch.equal(a, nearest(x, c, block_elems=7))


def test_argument_errors():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="num"):
        dpc_knn(x, 6, 3)
    with pytest.raises(ValueError, match="k"):
        dpc_knn(x, 2, 0)
    with pytest.raises(ValueError, match="shape"):
        dpc_knn(torch.randn(5), 1, 1)


def _other_blas(monkeypatch, seed):
    """Make distances come out as another BLAS kernel might round them: every entry moves by up to one
    unit of fp32 rounding of its operands, independently (different summation order per entry)."""
    import tango_prune.core.dpc as dpc

    real = dpc.pairwise_sqdist
    g = torch.Generator().manual_seed(seed)

    def jittered(a, b, a_sq=None, b_sq=None):
        a_sq = (a * a).sum(-1) if a_sq is None else a_sq
        b_sq = (b * b).sum(-1) if b_sq is None else b_sq
        d2 = real(a, b, a_sq, b_sq)
        ulp = 2.0 ** -24 * (a_sq.unsqueeze(-1) + b_sq.unsqueeze(-2))
        return (d2 + ulp * (2 * torch.rand(d2.shape, generator=g) - 1)).clamp_min(0.0)

    monkeypatch.setattr(dpc, "pairwise_sqdist", jittered)


@pytest.mark.parametrize("seed", range(4))
def test_nearest_is_exact_under_any_rounding(monkeypatch, seed):
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(1))
    c = torch.cat([x[:5], x[:1], x[3:4]])                 # centres 5 and 6 duplicate centres 0 and 3
    # Points on the bisector of two mirrored centres are exactly equidistant from both.
    mirror = torch.zeros(2, 6)
    mirror[0, 0], mirror[1, 0] = 1.0, -1.0
    on_plane = x.clone()
    on_plane[:, 0] = 0.0
    expected = nearest(x, c)
    expected_plane = nearest(on_plane, mirror)
    assert (expected < 5).all() and (expected_plane == 0).all()
    _other_blas(monkeypatch, seed)
    assert torch.equal(nearest(x, c), expected)
    assert torch.equal(nearest(x, c, block_elems=7), expected)
    assert torch.equal(nearest(on_plane, mirror), expected_plane)


def test_fixed_order_sqdist_is_exact_for_duplicates_and_blocking():
    from tango_prune.core.dpc import fixed_order_sqdist

    a = torch.randn(50, 37, generator=torch.Generator().manual_seed(0))
    b = torch.roll(a, 1, 0)
    full = fixed_order_sqdist(a, b)
    assert full.dtype == torch.float64
    assert torch.equal(full, fixed_order_sqdist(a, b, chunk_elems=64))
    assert torch.equal(fixed_order_sqdist(a, a), torch.zeros(50, dtype=torch.float64))
    assert torch.allclose(full, ((a.double() - b.double()) ** 2).sum(-1))
