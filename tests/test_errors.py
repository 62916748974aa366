import pytest
import torch

import tango_prune as tp
from conftest import make_tokens


def F(*shape):
    return torch.randn(*shape)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(features=F(0, 4, 4, 8)), "non-empty"),
        (dict(features=F(2, 0, 4, 8)), "non-empty"),
        (dict(features=F(2, 4, 4)), "features must have shape"),
        (dict(features=F(2, 4, 4, 1)), "D >= 2"),
        (dict(features=torch.ones(2, 4, 4, 8, dtype=torch.long)), "floating-point"),
        (dict(features=[[1.0]]), "torch.Tensor"),
        (dict(features=F(2, 4, 4, 8).index_fill(0, torch.tensor([1]), float("nan"))), "finite"),
        (dict(features=F(2, 4, 4, 8).index_fill(0, torch.tensor([1]), float("inf"))), "finite"),
        (dict(features=F(2, 4, 4, 8), saliency=F(2, 4, 5)), "saliency must have shape"),
        (dict(features=F(2, 4, 4, 8), saliency=F(2, 4, 4).fill_(float("nan"))), "saliency must contain only finite"),
        (dict(features=F(2, 4, 4, 8), timestamps=torch.tensor([0.0, 1.0, 2.0])), "timestamps must have shape"),
        (dict(features=F(2, 4, 4, 8), timestamps=torch.tensor([1.0, 0.0])), "non-decreasing"),
        (
            dict(features=F(2, 4, 4, 8), timestamps=torch.tensor([0.0, float("inf")])),
            "timestamps must contain only finite",
        ),
        (dict(features=F(2, 4, 4, 8), metric=F(3, 4)), "metric must have shape"),
        (dict(features=F(2, 4, 4, 8), metric=F(2, 4, 5, 3)), "metric must have shape"),
    ],
)
def test_video_tokens_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tp.VideoTokens(**kwargs)


def test_timestamps_accept_lists():
    tok = tp.VideoTokens(F(2, 2, 2, 4), timestamps=[0.0, 0.5])
    assert tok.timestamps.dtype == torch.float64


def test_prune_errors():
    tok = make_tokens(T=2, H=4, W=4, D=8)
    with pytest.raises(ValueError, match="retention"):
        tp.prune(tok, "tango", retention=0.0)
    with pytest.raises(ValueError, match="retention"):
        tp.prune(tok, "tango", retention=1.01)
    with pytest.raises(ValueError, match="method must be one of"):
        tp.prune(tok, "nonexistent", retention=0.1)
    with pytest.raises(ValueError, match="invalid option"):
        tp.prune(tok, "tango", retention=0.1, gamma=2)
    with pytest.raises(ValueError, match="tokens must be a VideoTokens"):
        tp.prune(tok.features, "tango")
    with pytest.raises(ValueError, match="sinks must lie inside the 4x4"):
        tp.prune(tok, "tango", sinks=((4, 0),))
    with pytest.raises(ValueError, match="saliency is required"):
        tp.prune(tp.VideoTokens(tok.features), "tango")
    with pytest.raises(ValueError, match="holitom"):
        tp.prune(tp.VideoTokens(tok.features, tok.saliency, metric=F(2, 5)), "tango")


def test_fastvid_accepts_per_frame_metric():
    tok = make_tokens(T=5, H=4, W=4, D=8)
    res = tp.prune(tp.VideoTokens(tok.features, tok.saliency, metric=F(5, 3)), "tango", segmentation="fastvid")
    assert sum(res.info["segments"]) == 5
