"""Linear probe of the testbed vision tower: how well does one LLM token's pooled feature tell the colour and
the shape of the object under it?

Renders ``--clips`` training clips, runs the tower of a saved testbed model (default: the shipped weights),
pools the patch features with the model's own ``apply_pooling`` (before the projector), and fits a linear
classifier on 80% of the object-covered tokens, reporting accuracy on the other 20%. Chance is 25% for shape
(4 classes) and ~17% for colour (6 classes).

    python benchmarks/testbed_probe.py [--model DIR] [--clips 300]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from tango_prune.testbed import data as D
from tango_prune.testbed.model import load
from tango_prune.testbed.train import _cell_labels


def main() -> None:
    """Print the probe accuracies."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="saved testbed model directory (default: shipped weights)")
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.clips < 10:
        raise SystemExit("--clips must be >= 10")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, proc = load(args.model)
    cell = 2 * proc.patch_size
    feats, shapes, colors = [], [], []
    with torch.no_grad():
        for i in range(args.clips):
            clip = D.make_clip(D.TRAIN, 20_000_000 + i)  # clips the language stage never cached
            hidden = model.model.vision_tower(
                proc.pixels(clip.frames)[0], output_hidden_states=True, return_dict=True
            ).hidden_states[model.config.vision_feature_layer]
            feats.append(model.model.apply_pooling(hidden).flatten(0, 1))  # the upstream 2x bilinear pooling
            shapes.append(torch.from_numpy(_cell_labels(clip.shape_ids, cell, len(D.SHAPES) + 1)))
            colors.append(torch.from_numpy(_cell_labels(clip.color_ids, cell, len(D.COLORS) + 1)))
    X, S, C = torch.cat(feats), torch.cat(shapes), torch.cat(colors)
    obj = S > 0
    X, S, C = X[obj], S[obj] - 1, C[obj] - 1
    X = (X - X.mean(0)) / (X.std(0) + 1e-5)
    n = X.shape[0]
    perm = torch.from_numpy(np.random.default_rng(0).permutation(n))
    tr, te = perm[: int(0.8 * n)], perm[int(0.8 * n) :]
    for name, Y, k in (("shape", S, len(D.SHAPES)), ("colour", C, len(D.COLORS))):
        probe = torch.nn.Linear(X.shape[1], k)
        opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
        for _ in range(500):
            loss = F.cross_entropy(probe(X[tr]), Y[tr])
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = (probe(X[te]).argmax(-1) == Y[te]).float().mean().item()
        print(
            f"{name:>6} of the object under a token: {100 * acc:.1f}% (linear probe, {len(te)} held-out "
            f"object tokens of {args.clips} clips)"
        )


if __name__ == "__main__":
    main()
