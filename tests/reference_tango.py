"""A deliberately naive, dense, fp64 re-statement of docs/algorithm.md §2, used as the test oracle.

Written straight from that section's prose with Python loops and full n x n matrices, sharing no code with
the library, with the library's deterministic tie-break rules (index order instead of random noise).
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch


def _frac(x):
    """A ratio as the decimal it was written as (0.3 -> 3/10)."""
    return x if isinstance(x, Fraction) else Fraction(repr(float(x)))


def _floor(q):
    return q.numerator // q.denominator


def _ceil(q):
    return -((-q.numerator) // q.denominator)


def ref_rotate(x, t, h, w, base_t, base_s):
    """ST-RoPE on (n, D) rows, section by section, channel pair by channel pair."""
    D = x.shape[1]
    dh = 2 * (D // 6)
    dt = D - 2 * dh
    out = x.clone()
    for lo, size, pos, base in ((0, dt, t, base_t), (dt, dh, h, base_s), (dt + dh, dh, w, base_s)):
        half = size // 2
        for j in range(half):
            ang = pos * base ** (-2.0 * j / size)
            a, b = x[:, lo + j], x[:, lo + j + half]
            out[:, lo + j] = a * torch.cos(ang) - b * torch.sin(ang)
            out[:, lo + j + half] = b * torch.cos(ang) + a * torch.sin(ang)
    return out


def ref_dpc(x, num, k):
    n = x.shape[0]
    if n == 1:
        return [0]
    d = (x[:, None, :] - x[None, :, :]).pow(2).sum(-1).sqrt()  # exactly symmetric
    kk = min(k + 1, n)
    knn = d.sort(dim=1).values[:, 1:kk]
    rho = torch.exp(-(knn**2).mean(1))
    dmax = d.max()
    gamma = []
    for i in range(n):
        denser = [j for j in range(n) if rho[j] > rho[i] or (rho[j] == rho[i] and j < i)]
        delta = d[i, denser].min() if denser else dmax
        gamma.append(float(rho[i] * delta))
    return sorted(range(n), key=lambda i: (-gamma[i], i))[:num]


def _nearest(x, centres):
    return (x[:, None, :] - centres[None, :, :]).pow(2).sum(-1).argmin(1).tolist()


def _merge(feat, rot, pool, budget, cfg):
    """Context merging of pool (list of token ids) into ``budget`` anchors -> {token: feature}."""
    if budget <= 0 or not pool:
        return {}
    if len(pool) <= budget:
        return {p: feat[p] for p in pool}
    P = torch.stack([rot[p] for p in pool])
    anchors = ref_dpc(P, budget, cfg.k_neighbors)
    asc = sorted(anchors)
    assign = _nearest(P, P[asc])
    merged = []
    for a_i, a in enumerate(asc):
        members = [pool[m] for m in range(len(pool)) if assign[m] == a_i]
        cnt = max(len(members), 1)
        mean = torch.stack([feat[m] for m in members]).sum(0) / cnt if members else torch.zeros_like(feat[pool[a]])
        w = max(1.0 / cnt, cfg.beta)
        merged.append(w * feat[pool[a]] + (1 - w) * mean)
    slots = anchors if cfg.compat == "published" else asc
    return {pool[slot]: merged[i] for i, slot in enumerate(slots)}


def _salient(rot, score, ids, target, cfg):
    """Diverse salient choice among token ids (list) -> list of chosen ids."""
    if target <= 0:
        return []
    pub = cfg.compat == "published"
    M = min(int(cfg.alpha * target) if pub else _floor(_frac(cfg.alpha) * target), len(ids))
    cand = sorted(ids, key=lambda i: (-float(score[i]), i))[:M]
    if M <= target or M <= 1 or not cfg.diversity:
        return cand[:target]
    C = torch.stack([rot[i] for i in cand])
    centres = ref_dpc(C, target, cfg.k_neighbors)
    assign = _nearest(C, C[centres])
    out = []
    for j in range(target):
        members = [m for m in range(M) if assign[m] == j]
        out.append(cand[members[0]] if members else cand[centres[j]])
    return list(dict.fromkeys(out))


def _compress(feat, rot, score, ids, r, cfg):
    n = len(ids)
    c = cfg.context_ratio if cfg.merge_context else 0.0
    if cfg.compat == "published":  # the published double expressions
        K = max(1, math.ceil(n * float(r))) if n else 0
        Ks = int(K * (1.0 - c))
    else:  # exact rationals
        K = max(1, _ceil(_frac(r) * n)) if n else 0
        Ks = _floor(K * (1 - _frac(c)))
    Kc = K - Ks
    sal = _salient(rot, score, ids, Ks, cfg)
    pool = [i for i in ids if i not in set(sal)]
    out = {i: feat[i] for i in sal}
    out.update(_merge(feat, rot, pool, min(Kc, len(pool)), cfg))
    return out


def ref_holitom(sim_above):
    """Naive DP over an (N-1, L) bool tensor of 'similar' flags."""
    N = sim_above.shape[0] + 1

    def value(a, b):
        if b <= a:
            return 0
        return int(sim_above[a:b].all(0).sum()) * (b - a)

    dp = [0] * (N + 1)
    start = [0] * N
    for i in range(N):
        best, bs = dp[i], i
        for w in range(2, min(i + 1, 1024) + 1):
            v = dp[i - w + 1] + value(i - w + 1, i)
            if v > best:
                best, bs = v, i - w + 1
        dp[i + 1], start[i] = best, bs
    sizes, i = [], N - 1
    while i >= 0:
        sizes.append(i - start[i] + 1)
        i = start[i] - 1
    return sizes[::-1]


def ref_tango(F, S, ts, cfg, sizes=None):
    """Reference Tango -> (sorted indices list, {index: feature fp64})."""
    T, H, W, D = F.shape
    L = H * W
    X = F.reshape(T * L, D).double()
    s = S.reshape(T * L).double().clone()
    for r_, c_ in cfg.sinks:
        for t in range(T):
            s[t * L + r_ * W + c_] = 0.0
    xn = X / X.norm(dim=1, keepdim=True).clamp_min(1e-12)
    tt = ts.double().repeat_interleave(L)
    hh = torch.arange(H).repeat_interleave(W).repeat(T).double()
    ww = torch.arange(W).repeat(H * T).double()
    rot = ref_rotate(xn, tt, hh, ww, cfg.base_time, cfg.base_space) if cfg.strope else xn
    if sizes is None:
        if cfg.segmentation == "none" or T == 1:
            sizes = [T]
        else:
            xs = xn.reshape(T, L, D)
            sizes = ref_holitom((xs[:-1] * xs[1:]).sum(-1) > cfg.tau_segment)
    kept = {}
    a = 0
    for n_f in sizes:
        frames = list(range(a, a + n_f))
        if n_f == 1:
            kept.update(_compress(X, rot, s, [a * L + l for l in range(L)], cfg.retention, cfg))
            a += n_f
            continue
        xs = xn.reshape(T, L, D)
        static = [l for l in range(L) if all(float(xs[f, l] @ xs[f + 1, l]) > cfg.tau_static for f in frames[:-1])]
        S_ = len(static)
        if cfg.compat == "published":
            r_adj = min(cfg.retention / ((n_f * L - (n_f - 1) * S_) / (n_f * L)), 1.0)
        else:
            r_adj = min(_frac(cfg.retention) * n_f * L / (n_f * L - (n_f - 1) * S_), Fraction(1))
        if S_:
            # Static tokens: mean feature, frame-0 geometry, mean score, placed at frame a.
            sf, sr, ss = X.clone(), rot, s.clone()
            for l in static:
                sf[a * L + l] = torch.stack([X[f * L + l] for f in frames]).mean(0)
                ss[a * L + l] = torch.stack([s[f * L + l] for f in frames]).mean()
            kept.update(_compress(sf, sr, ss, [a * L + l for l in static], r_adj, cfg))
        dyn = [l for l in range(L) if l not in set(static)]
        Ld = len(dyn)
        if Ld:
            c = cfg.context_ratio if cfg.merge_context else 0.0
            if cfg.compat == "published":
                R = math.ceil(Ld * r_adj)
                Ks = int(R * (1.0 - c))
            else:
                R = _ceil(Ld * r_adj)
                Ks = _floor(R * (1 - _frac(c)))
            Kc = R - Ks
            chosen = set()
            for f in frames:
                chosen.update(_salient(rot, s, [f * L + l for l in dyn], min(Ks, Ld), cfg))
            kept.update({i: X[i] for i in chosen})
            pool = [f * L + l for f in frames for l in dyn if f * L + l not in chosen]
            kept.update(_merge(X, rot, pool, Kc * n_f, cfg))
        a += n_f
    return sorted(kept), kept
