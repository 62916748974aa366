"""ST-RoPE: spatio-temporal rotary embedding used only to measure token distances (docs/algorithm.md §1.7).

Channels of an L2-normalised feature are split into three contiguous sections (time, row, column). Inside
each section of size d, channel j is paired with j + d/2 ("rotate-half") and the pair is rotated by
``p * base ** (-2j/d)`` where p is the frame time in seconds or the grid row / column. For unit vectors
``|R_p x - R_q y|^2 = 2 - 2 <x, R_(q-p) y>``, so Euclidean distances on the rotated copy are cosine
distances modulated by the relative spatio-temporal offset.
"""

from __future__ import annotations

import torch

__all__ = ["strope_sections", "strope_rotate", "strope_rotate_tables", "normalize", "normalize_into"]


def strope_sections(dim: int) -> tuple[int, int, int]:
    """Section sizes (d_t, d_h, d_w) for feature dimension ``dim``.

    d_h = d_w = 2 * floor(dim / 6) and d_t = dim - 2 * d_h, which reproduces the published hard-coded
    1196/1194/1194 split for dim = 3584 and keeps every section even for even ``dim``. For odd ``dim`` the
    temporal section is odd and its last channel is left unrotated.
    """
    if dim < 2:
        raise ValueError(f"dim must be >= 2 to apply ST-RoPE, got {dim}")
    d_hw = 2 * (dim // 6)
    return dim - 2 * d_hw, d_hw, d_hw


def normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L2-normalise the last dimension, returned in fp32 (a new tensor; zero vectors stay zero).

    The result does not depend on the scale of ``x``. Rows whose fp32 norm lies in [2**-40, 2**40] (no
    square can overflow or matter as a subnormal) are divided by it directly. Any other row is first
    multiplied by the power of two that brings its largest entry into [0.5, 1), which is exact: so ``x``
    and ``x * 2**k`` give the same bits, squares of 1e20 do not overflow nor those of 1e-20 underflow,
    and fp64 rows beyond the fp32 range are scaled before they are narrowed.
    """
    return _normalize(x, eps, None)


def normalize_into(x: torch.Tensor, out: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Write :func:`normalize` of ``x`` into the fp32 tensor ``out`` of the same shape and return ``out``.

    The same bits as :func:`normalize`, without its (n, D) temporary when every row has an ordinary norm.
    ``out`` may be ``x`` itself when ``x`` is fp32 (in-place normalisation of a fresh gather). For
    distance geometry only: ``out=`` does not record gradients, so inputs that require them are refused
    by torch; pass detached tensors.
    """
    return _normalize(x, eps, out)


def _normalize(x: torch.Tensor, eps: float, out: torch.Tensor | None) -> torch.Tensor:
    xf = x.float()
    norm = xf.norm(dim=-1, keepdim=True)
    safe = (norm >= 2.0**-40) & (norm <= 2.0**40)
    if bool(safe.all()):
        return torch.div(xf, norm.clamp_min(eps), out=out)
    wide = x if x.dtype == torch.float64 else xf
    _, e = torch.frexp(wide.abs().amax(-1, keepdim=True))
    # Two half steps: 2**-e alone can leave the normal range of the dtype (fp64 e = 1024, fp32 e = -130).
    h = torch.div(e, 2, rounding_mode="floor")
    one = torch.ones_like(wide[..., :1])
    scaled = (wide * torch.ldexp(one, -h) * torch.ldexp(one, h - e)).float()
    scaled = scaled / scaled.norm(dim=-1, keepdim=True).clamp_min(eps)
    result = torch.where(safe, xf / norm.clamp_min(eps), scaled)
    return result if out is None else out.copy_(result)


def _rotate_section_into(
    out: torch.Tensor, x: torch.Tensor, values: torch.Tensor, index: torch.Tensor, base: float
) -> None:
    """Write the rotation of section ``x`` (n, d) into ``out`` (n, d); row i sits at position
    ``values[index[i]]`` (``values`` fp64, a small table of positions; ``index`` (n,) long).

    Each element is ``a cos - b sin`` or ``b cos + a sin`` from separately rounded products, exactly as the
    unfused expressions; writing into one preallocated output instead of concatenating fresh tensors
    saves copies and, on the CPU, the page faults of large temporaries.
    """
    d = x.shape[-1]
    half = d // 2
    if half == 0:
        out.copy_(x)
        return
    inv_freq = base ** (-torch.arange(half, dtype=torch.float64, device=x.device) * 2.0 / (2 * half))
    # Tokens share few positions (frames, rows, columns): the trig tables are evaluated once per table
    # entry and gathered, instead of once per token. Each entry is computed on its own, so the table's
    # other entries never change a row's bits.
    angle = (values[:, None] * inv_freq[None, :]).to(torch.float32)  # (entries, half)
    cos, sin = angle.cos().index_select(0, index), angle.sin().index_select(0, index)
    a, b = x[:, :half], x[:, half : 2 * half]
    lo, hi = out[:, :half], out[:, half : 2 * half]
    tmp = torch.mul(b, sin)
    torch.mul(a, cos, out=lo).sub_(tmp)
    torch.mul(a, sin, out=tmp)
    torch.mul(b, cos, out=hi).add_(tmp)
    if 2 * half < d:
        out[:, 2 * half :].copy_(x[:, 2 * half :])


def strope_rotate(
    x: torch.Tensor, t: torch.Tensor, h: torch.Tensor, w: torch.Tensor, base_time: float = 1e4, base_space: float = 1e3
) -> torch.Tensor:
    """Rotate fp32 features ``x`` (n, D) at positions (t seconds, h row, w column), each of shape (n,).

    Returns a new (n, D) fp32 tensor; the input is not modified. Angles are computed in fp64 before being
    cast, so large timestamps lose no precision. The result carries no gradient: it only measures
    distances that steer the selection. Finding the distinct positions costs a host wait per section;
    :func:`strope_rotate_tables` takes them as tables and has none.
    """
    if x.dim() != 2:
        raise ValueError(f"x must have shape (n, D), got {tuple(x.shape)}")
    n = x.shape[0]
    for name, p in (("t", t), ("h", h), ("w", w)):
        if p.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {tuple(p.shape)}")
    tables = [torch.unique(p.to(torch.float64), return_inverse=True) for p in (t, h, w)]
    return _rotate(x, tables, base_time, base_space)


def strope_rotate_tables(
    x: torch.Tensor,
    tables: tuple[
        tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
    ],
    base_time: float = 1e4,
    base_space: float = 1e3,
) -> torch.Tensor:
    """:func:`strope_rotate` with each position given as (values, index): row i of ``x`` (n, D) sits at
    time ``t_values[t_index[i]]``, row ``h_values[h_index[i]]`` and column ``w_values[w_index[i]]``.

    ``tables`` is ``((t_values, t_index), (h_values, h_index), (w_values, w_index))``, values of any
    float or integer dtype (used in fp64), indices (n,) long. The same bits as :func:`strope_rotate` at
    those positions, without its host waits (a video's frame times and grid rows and columns are known
    tables, so no distinct positions need to be found).
    """
    if x.dim() != 2:
        raise ValueError(f"x must have shape (n, D), got {tuple(x.shape)}")
    n = x.shape[0]
    for name, (_, index) in zip(("t", "h", "w"), tables):
        if index.shape != (n,):
            raise ValueError(f"{name} index must have shape ({n},), got {tuple(index.shape)}")
    return _rotate(x, [(v.to(torch.float64), i) for v, i in tables], base_time, base_space)


def _rotate(x: torch.Tensor, tables, base_time: float, base_space: float) -> torch.Tensor:
    n, D = x.shape
    d_t, d_h, d_w = strope_sections(D)
    out = torch.empty(n, D, dtype=torch.float32, device=x.device)
    with torch.no_grad():
        x = x.float()
        bounds = ((0, d_t, base_time), (d_t, d_t + d_h, base_space), (d_t + d_h, D, base_space))
        for (lo, hi, base), (values, index) in zip(bounds, tables):
            _rotate_section_into(out[:, lo:hi], x[:, lo:hi], values, index, base)
    return out
