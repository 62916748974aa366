import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_tango import ref_dpc
from tango_prune.core import dpc
from tango_prune.core.dpc import TILE, assign, dpc_knn, first_copies, nearest, sq_norms


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
    dense = dpc_knn(x, max(1, n // 5), 7)
    for block in (7, 1000, 1 << 30):
        assert torch.equal(dpc_knn(x, max(1, n // 5), 7, block_elems=block, gram_bytes=0), dense)


def test_batched_equals_per_set():
    x = torch.randn(3, 40, 8, generator=torch.Generator().manual_seed(0))
    both = dpc_knn(x, 6, 7)
    for b in range(3):
        assert torch.equal(both[b], dpc_knn(x[b], 6, 7))


def test_duplicates_are_deterministic_and_input_untouched():
    x = torch.randn(10, 8, generator=torch.Generator().manual_seed(0)).repeat(3, 1)  # exact triplicates
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
        ulp = 2.0**-24 * (a_sq.unsqueeze(-1) + b_sq.unsqueeze(-2))
        return (d2 + ulp * (2 * torch.rand(d2.shape, generator=g) - 1)).clamp_min(0.0)

    monkeypatch.setattr(dpc, "pairwise_sqdist", jittered)


@pytest.mark.parametrize("seed", range(4))
def test_nearest_is_exact_under_any_rounding(monkeypatch, seed):
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(1))
    x[150:160] = x[100]  # identical points take identical decisions
    c = torch.cat([x[:5], x[:1], x[3:4]])  # centres 5 and 6 duplicate centres 0 and 3
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
    assert (expected[150:160] == expected[100]).all()
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


def test_distance_matrix_is_exactly_symmetric_with_zero_diagonal():
    from tango_prune.core.dpc import _matrix

    x = torch.randn(2, 2 * TILE + 17, 33, generator=torch.Generator().manual_seed(5))
    d2 = _matrix(x, (x * x).sum(-1))
    assert torch.equal(d2, d2.transpose(1, 2))
    assert (d2.diagonal(dim1=1, dim2=2) == 0).all()


def test_first_copies_finds_bitwise_duplicates_only():
    x = torch.randn(2, 50, 7, generator=torch.Generator().manual_seed(0))
    assert first_copies(x) is None
    x[0, 40] = x[0, 3]
    x[1, 10] = x[1, 2]
    x[1, 30] = x[1, 2]
    x[1, 31] = x[1, 31] * (1 + 2**-20)  # nearly but not bitwise equal to itself before
    c = first_copies(x)
    want = torch.arange(50).repeat(2, 1)
    want[0, 40], want[1, 10], want[1, 30] = 3, 2, 2
    assert torch.equal(c, want)
    z = torch.zeros(1, 3, 4)
    z[0, 1] = -0.0
    assert torch.equal(first_copies(z), torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("gram_bytes", [0, 1 << 30])
def test_duplicates_in_different_tiles_are_exact_under_any_rounding(monkeypatch, seed, gram_bytes):
    # Copies sit in different BLAS tiles and rows; another kernel rounds their distances differently.
    g = torch.Generator().manual_seed(seed)
    n = TILE + 150  # two row strips
    base = torch.randn(n, 12, generator=g)
    src = torch.randint(0, n, (60,), generator=g)
    dst = torch.randint(0, n, (60,), generator=g)
    base[dst] = base[src]
    x = torch.stack([base, base.flip(0)])
    want = dpc_knn(x, 40, 7, block_elems=5000, gram_bytes=gram_bytes)
    canon = first_copies(x)
    assert (torch.gather(canon, 1, want) == want).all()  # a later copy is never a centre before its first
    _other_blas(monkeypatch, seed)
    assert torch.equal(dpc_knn(x, 40, 7, block_elems=5000, gram_bytes=gram_bytes), want)


def test_assign_from_distances_equals_nearest():
    x = torch.randn(3, 90, 10, generator=torch.Generator().manual_seed(2))
    x[:, 50] = x[:, 7]
    centres, d2 = dpc_knn(x, 12, 7, return_distances=True)
    asc = torch.sort(centres, 1).values
    for idx in (centres, asc):
        want = nearest(x, torch.gather(x, 1, idx[..., None].expand(3, 12, 10)))
        assert torch.equal(assign(x, idx, d2), want)
        assert torch.equal(assign(x, idx), want)
    assert dpc_knn(x, 12, 7, gram_bytes=0, return_distances=True)[1] is None


def test_thread_count_does_not_change_centres():
    x = torch.randn(2, 700, 64, generator=torch.Generator().manual_seed(3))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = dpc_knn(x, 50, 7), dpc_knn(x, 50, 7, gram_bytes=0, block_elems=20000)
        torch.set_num_threads(max(2, threads))
        many = dpc_knn(x, 50, 7), dpc_knn(x, 50, 7, gram_bytes=0, block_elems=20000)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one + many, one[:1] * 4))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(2, 120),
    k=st.integers(1, 9),
    dups=st.integers(0, 30),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_dense_shortcuts_equal_blocked_full_rows(n, k, dups, seed, data):
    # With the shortcuts on for every size, both paths read delta off each row's k nearest neighbours
    # (whole rows only at local density peaks) and the dense path looks for copies only near rows with a
    # close neighbour; without them every row is scanned. Blobs make many peaks, copies make ties.
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n, 6, generator=g) + 4 * torch.randint(0, 3, (2, n, 1), generator=g)
    if dups:
        src, dst = torch.randint(0, n, (2, dups), generator=g)
        x[:, dst] = x[:, src]
    num = data.draw(st.integers(1, n))
    plain = dpc_knn(x, num, k)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dpc, "SHORTCUT_MIN_POINTS", 1)
        dense, d2 = dpc_knn(x, num, k, return_distances=True)
        assert d2 is not None
        assert torch.equal(assign(x, dense, d2), assign(x, dense))
        assert torch.equal(dpc_knn(x, num, k, gram_bytes=0, block_elems=2000), dense)
    assert torch.equal(dense, plain)
    assert torch.equal(dpc_knn(x, num, k, gram_bytes=0), dense)


@pytest.mark.parametrize("shortcut", [1, 1 << 30])
def test_assign_leaves_the_distance_matrix_untouched_and_takes_views(monkeypatch, shortcut):
    monkeypatch.setattr(dpc, "SHORTCUT_MIN_POINTS", shortcut)
    x = torch.randn(2, 80, 9, generator=torch.Generator().manual_seed(4))
    x[:, 30] = x[:, 3]
    centres, d2 = dpc_knn(x, 10, 5, return_distances=True)
    before = d2.clone()
    want = assign(x, centres)
    assert torch.equal(assign(x, centres, d2), want)
    assert torch.equal(d2, before)
    # An exactly symmetric matrix read through its transpose: a non-contiguous view, never written.
    assert torch.equal(assign(x, centres, d2.transpose(1, 2)), want)


@pytest.mark.parametrize("shape", [(3, 700, 100), (1, 5000, 64), (2, 9, 3584), (4000, 896)])
def test_sq_norms_equals_sum_of_squares(shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(5)) * 3
    assert torch.equal(sq_norms(x), (x * x).sum(-1))


@pytest.mark.parametrize("dups", [0, 200])
def test_shortcuts_over_several_strips_equal_full_scans(monkeypatch, dups):
    # Three row strips: peaks are read off their own strip and, transposed, off the strips above them.
    g = torch.Generator().manual_seed(dups)
    n = 2 * TILE + 100
    x = torch.randn(2, n, 8, generator=g) + 3 * torch.randint(0, 4, (2, n, 1), generator=g)
    if dups:
        src, dst = torch.randint(0, n, (2, dups), generator=g)
        x[:, dst] = x[:, src]
    want = dpc_knn(x, 60, 6), dpc_knn(x, 60, 6, gram_bytes=0)
    monkeypatch.setattr(dpc, "SHORTCUT_MIN_POINTS", 1)
    got = dpc_knn(x, 60, 6), dpc_knn(x, 60, 6, gram_bytes=0)
    assert all(torch.equal(a, want[0]) for a in want + got)


@pytest.mark.parametrize("gram_bytes", [0, 1 << 30])
def test_returned_copies_are_first_copies_and_assign_takes_them(gram_bytes):
    x = torch.randn(3, 70, 6, generator=torch.Generator().manual_seed(6))
    x[1, 40] = x[1, 2]
    x[1, 55] = x[1, 2]
    centres, d2, copies = dpc_knn(x, 9, 5, gram_bytes=gram_bytes, return_distances=True, return_copies=True)
    assert torch.equal(copies, first_copies(x))
    assert torch.equal(centres, dpc_knn(x, 9, 5, gram_bytes=gram_bytes))
    assert dpc_knn(x[0], 9, 5, return_copies=True)[1] is None  # no copies in that set
    if d2 is not None:
        assert torch.equal(assign(x, centres, d2, copies=copies), assign(x, centres))
        c1, d1, k1 = dpc_knn(x[1], 9, 5, return_distances=True, return_copies=True)
        assert torch.equal(assign(x[1], c1, d1, copies=k1), assign(x[1], c1))
