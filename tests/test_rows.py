"""Row gathers (tango_prune.core.rows): the same values and gradients as gather / advanced indexing."""

import pytest
import torch

from tango_prune.core.rows import take_flat_rows, take_rows


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("contiguous", [True, False])
def test_take_rows_equals_gather(B, contiguous):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, 7, 10, generator=g)
    if not contiguous:
        x = torch.randn(B, 10, 7, generator=g).transpose(1, 2)
    idx = torch.randint(0, 7, (B, 5), generator=g)
    want = torch.gather(x, 1, idx.unsqueeze(-1).expand(B, 5, 10))
    assert torch.equal(take_rows(x, idx), want)
    assert torch.equal(take_rows(x[0], idx[0]), want[0])


def test_take_rows_gradient_matches_gather():
    x = torch.randn(2, 6, 4, requires_grad=True)
    idx = torch.tensor([[0, 0, 5], [3, 1, 3]])
    (take_rows(x, idx) * torch.arange(12.0).reshape(1, 3, 4)).sum().backward()
    got = x.grad.clone()
    x.grad = None
    (torch.gather(x, 1, idx.unsqueeze(-1).expand(2, 3, 4)) * torch.arange(12.0).reshape(1, 3, 4)).sum().backward()
    assert torch.equal(got, x.grad)


@pytest.mark.parametrize("contiguous", [True, False])
def test_take_flat_rows_equals_advanced_indexing(contiguous):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 9, 6, generator=g) if contiguous else torch.randn(4, 6, 9, generator=g).transpose(1, 2)
    frames = torch.randint(0, 4, (2, 5), generator=g)
    pos = torch.randint(0, 9, (2, 5), generator=g)
    got = take_flat_rows(x, frames, pos)
    assert got.shape == (2, 5, 6)
    assert torch.equal(got, x[frames, pos])
