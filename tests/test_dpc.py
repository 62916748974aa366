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
