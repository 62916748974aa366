import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


def make_tokens(T=4, H=6, W=6, D=24, seed=0, static=0, dtype=torch.float32, fps=1.0):
    """Random tokens; the first ``static`` positions are identical in every frame."""
    import tango_prune as tp

    g = torch.Generator().manual_seed(seed)
    F = torch.randn(T, H, W, D, generator=g)
    if static:
        flat = F.reshape(T, H * W, D)
        flat[:, :static] = flat[:1, :static]
    S = torch.rand(T, H, W, generator=g)
    ts = torch.arange(T, dtype=torch.float64) / fps
    return tp.VideoTokens(features=F.to(dtype), saliency=S, timestamps=ts)


@pytest.fixture(autouse=True)
def _run_in_a_temporary_directory(tmp_path, monkeypatch):
    """Tests never write into the working directory: each one runs with its own temporary cwd, so a default
    output path (``bench_out``, ``demo_out``, ``kept_tokens.png``) lands there."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tokens_factory():
    return make_tokens


# CI runs must be reproducible: hypothesis explores the same examples on every CI run; locally it keeps
# exploring new ones. HYPOTHESIS_PROFILE=thorough runs many more examples.
from hypothesis import settings as _hsettings  # noqa: E402

_hsettings.register_profile("ci", derandomize=True, deadline=None)
_hsettings.register_profile("thorough", max_examples=400, deadline=None)
if os.environ.get("HYPOTHESIS_PROFILE"):
    _hsettings.load_profile(os.environ["HYPOTHESIS_PROFILE"])
elif os.environ.get("CI"):
    _hsettings.load_profile("ci")
