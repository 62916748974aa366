import math

import pytest
import torch

from reference_tango import ref_rotate
from tango_prune.core.strope import normalize, normalize_into, strope_rotate, strope_rotate_tables, strope_sections


@pytest.mark.parametrize(
    "dim,expected",
    [(3584, (1196, 1194, 1194)), (896, (300, 298, 298)), (8192, (2732, 2730, 2730)), (6, (2, 2, 2)), (4, (4, 0, 0))],
)
def test_sections_derived_from_dim(dim, expected):
    assert strope_sections(dim) == expected
    assert sum(strope_sections(dim)) == dim


def test_sections_reject_tiny_dim():
    with pytest.raises(ValueError, match="dim"):
        strope_sections(1)


def _random(n, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        normalize(torch.randn(n, D, generator=g)),
        torch.rand(n, generator=g) * 30,
        torch.randint(0, 14, (n,), generator=g),
        torch.randint(0, 14, (n,), generator=g),
    )


def test_rotation_preserves_norm_and_matches_reference():
    x, t, h, w = _random(50, 96)
    y = strope_rotate(x, t, h, w)
    assert torch.allclose(y.norm(dim=1), torch.ones(50), atol=1e-5)
    ref = ref_rotate(x.double(), t.double(), h.double(), w.double(), 1e4, 1e3)
    assert torch.allclose(y.double(), ref, atol=1e-5)


def test_zero_position_is_identity_and_input_untouched():
    x, _, _, _ = _random(10, 64)
    before = x.clone()
    z = torch.zeros(10, dtype=torch.long)
    assert torch.allclose(strope_rotate(x, z.double(), z, z), x, atol=1e-7)
    assert torch.equal(x, before)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_relative_offset_property(axis):
    # <R_p x, R_q y> depends only on q - p: shifting both positions by the same amount changes nothing.
    x, t, h, w = _random(20, 120, seed=1)
    y, _, _, _ = _random(20, 120, seed=2)
    pos_a = [t, h.double(), w.double()]
    pos_b = [t + 3.0, h.double() + 2, w.double() + 5]
    shift = [torch.full((20,), 7.5), torch.full((20,), 4.0), torch.full((20,), 6.0)]
    pa = [p.clone() for p in pos_a]
    pb = [p.clone() for p in pos_b]
    pa[axis] = pa[axis] + shift[axis]
    pb[axis] = pb[axis] + shift[axis]
    d0 = (strope_rotate(x, *pos_a) * strope_rotate(y, *pos_b)).sum(1)
    d1 = (strope_rotate(x, *pa) * strope_rotate(y, *pb)).sum(1)
    assert torch.allclose(d0, d1, atol=1e-5)
    # and distance^2 = 2 - 2 <x, R_(q-p) y> for unit vectors
    dist2 = (strope_rotate(x, *pos_a) - strope_rotate(y, *pos_b)).pow(2).sum(1)
    assert torch.allclose(dist2, 2 - 2 * d0, atol=1e-5)


def test_nearby_tokens_closer_than_far_ones():
    # Same feature, different places: ST-RoPE distance grows with the spatial offset.
    x = normalize(torch.randn(1, 3584).repeat(3, 1))
    t = torch.zeros(3, dtype=torch.float64)
    h = torch.tensor([0, 0, 0])
    w = torch.tensor([0, 1, 8])
    y = strope_rotate(x, t, h, w)
    assert (y[0] - y[1]).norm() < (y[0] - y[2]).norm()
    assert math.isclose(float((y[0] - y[0]).norm()), 0.0)


def test_shape_errors():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="t must have shape"):
        strope_rotate(x, torch.zeros(3), torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="x must have shape"):
        strope_rotate(torch.randn(2, 4, 8), torch.zeros(4), torch.zeros(4), torch.zeros(4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_normalize_into_has_the_bits_of_normalize(dtype):
    x = torch.randn(6, 9, dtype=torch.float64)
    x[1] = 0.0  # a zero row stays zero
    if dtype == torch.float64:
        x[2] *= 1e300  # beyond the fp32 range: scaled before it is narrowed
        x[3] *= 1e-300
    x = x.to(dtype)
    ref = normalize(x)
    assert torch.equal(normalize_into(x, torch.empty(6, 9)), ref)
    if dtype == torch.float32:
        y = x.clone()
        assert normalize_into(y, y) is y and torch.equal(y, ref)  # in place


def test_strope_rotate_carries_no_gradient_and_keeps_its_input():
    x = normalize(torch.randn(5, 12)).requires_grad_()
    before = x.detach().clone()
    z = torch.arange(5)
    y = strope_rotate(x, z.double(), z, z)
    assert not y.requires_grad and torch.equal(x.detach(), before)


def test_rotate_with_position_tables_is_bitwise_the_same():
    g = torch.Generator().manual_seed(7)
    n, D = 300, 3584
    x = torch.randn(n, D, generator=g)
    times = torch.rand(12, generator=g, dtype=torch.float64) * 1e4  # irregular, large timestamps
    fi = torch.randint(0, 12, (n,), generator=g)
    hi, wi = torch.randint(0, 14, (n,), generator=g), torch.randint(0, 14, (n,), generator=g)
    grid = torch.arange(14)
    want = strope_rotate(x, times[fi], hi, wi)
    got = strope_rotate_tables(x, ((times, fi), (grid, hi), (grid, wi)))
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="h index"):
        strope_rotate_tables(x, ((times, fi), (grid, hi[:-1]), (grid, wi)))
