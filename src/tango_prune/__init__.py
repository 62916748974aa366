"""tango-prune: training-free visual token pruning for Video LLMs.

Public API::

    from tango_prune import VideoTokens, TangoConfig, prune
    result = prune(VideoTokens(features=F, saliency=S, timestamps=ts), TangoConfig(retention=0.1))

    model = apply(model, TangoConfig.preset("llava-onevision", retention=0.1))   # upstream HF model
    model.generate(...)
    remove(model)
"""

from .api import make_config, prune
from .config import PruneConfig, TangoConfig
from .methods import names as _method_names
from .models import apply, remove
from .models.fastv import FastVConfig
from .tokens import PruneResult, TokenKind, VideoTokens

# The one version string: pyproject.toml reads it (tool.setuptools.dynamic); tests/test_packaging.py checks
# that the installed metadata agrees.
__version__ = "0.1.0"


def methods() -> list[str]:
    """Names of the registered pruning methods."""
    return _method_names()


__all__ = [
    "VideoTokens",
    "PruneResult",
    "TokenKind",
    "PruneConfig",
    "TangoConfig",
    "FastVConfig",
    "prune",
    "make_config",
    "methods",
    "apply",
    "remove",
    "__version__",
]
