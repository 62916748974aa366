import torch

import tango_prune as tp


def test_prune_runs_and_counts():
    g = torch.Generator().manual_seed(0)
    F = torch.randn(4, 6, 6, 16, generator=g)
    S = torch.rand(4, 6, 6, generator=g)
    r = tp.prune(tp.VideoTokens(F, S), retention=0.25)
    assert r.num_kept == 4 * 9
    assert torch.equal(r.indices, torch.unique(r.indices))
