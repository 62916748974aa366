"""Host-device synchronisations inside ``prune``, counted on CPU by construction (SyncCounter).

Recorded for Tango (LLaVA-OneVision preset): 14 + 17 per segment, independent of the number of frames.
It was 14 + 34 before ST-RoPE took its position tables from the segment instead of ``unique``, and
before the nearest-anchor assignment took the exact copies that DPC-KNN had found (``return_copies``)
and applied them without asking whether any near tie exists. What remains, and why (site: reason):

- per segment, core/tango.py: the chosen salient tokens and the context pool (``nonzero``, ``int`` of the
  pool size, ``tolist`` of pool sizes per frame) are data-dependent sizes that the segment's loop needs
  to allocate and window its clustering; core/strope.py ``bool(safe.all())``: normalize takes the
  rescaling path only when a norm is out of range; core/dpc.py: duplicate detection and the near-tie re-decision (``first_copies``,
  ``_resolve_near_ties``) branch on whether any duplicate / near tie exists; core/merge.py ``bincount``:
  the cluster sizes.
- once per call: segmentation (core/segment.py copies the frame similarities to the host, where the
  published algorithm runs), the static/dynamic split of every segment at once (core/tango.py
  ``_static_splits``: one ``tolist`` of the static counts and two ``nonzero``; it was three waits per
  segment while each segment computed its own), PruneResult's index checks (tokens.py) and the info
  counts.

Removing the other per-segment ones means removing the Python loop over segments (issue 14, item 4).
"""

from __future__ import annotations

import torch

import tango_prune as tp
from tango_prune.bench.syncs import SyncCounter
from tango_prune.synthetic import synthetic_tokens

BASE = 14
PER_SEGMENT = 17


def test_counter_counts_what_waits_for_the_device_and_nothing_else():
    x = torch.randn(10)
    mask = x > 0
    with SyncCounter() as c:
        x.sum().item()
        bool(mask.any())
        x[mask]
        torch.nonzero(x)
        x.to("cpu")
        y = x.clone()
        y[mask] = 0.0
    assert c.total == 6, c.sites
    with SyncCounter() as c:
        x.masked_fill(mask, 0.0)
        x.to(x.device)
        x[torch.arange(3)]
        torch.where(mask, x, 0.0)
        x.argmax()
    assert c.total == 0, c.sites


def _count(T: int, cut: int) -> tuple[int, int]:
    tok = synthetic_tokens(T, grid=14, dim=32, seed=0, cut_every=cut)
    with SyncCounter() as c:
        res = tp.prune(tok, tp.TangoConfig.preset("llava-onevision", retention=0.2))
    return c.total, len(res.info["segments"])


def test_tango_syncs_are_bounded_per_segment_and_do_not_grow_with_frames():
    n8, s8 = _count(8, 4)
    n16, s16 = _count(16, 4)
    n32, s32 = _count(32, 8)
    assert (s8, s16, s32) == (2, 4, 4)
    for n, s in ((n8, s8), (n16, s16), (n32, s32)):
        assert n <= BASE + PER_SEGMENT * s, (n, s)
    assert n32 == n16  # twice the frames, the same segments: not one sync more
