"""Accuracy-against-retention plot (PNG) of an eval report, drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_report"]

_PALETTE = (
    (228, 26, 28),
    (55, 126, 184),
    (77, 175, 74),
    (152, 78, 163),
    (255, 127, 0),
    (166, 86, 40),
    (247, 129, 191),
    (100, 100, 100),
    (23, 190, 207),
    (188, 189, 34),
    (0, 0, 128),
    (128, 0, 0),
    (0, 128, 128),
    (128, 128, 0),
    (90, 90, 200),
    (200, 90, 90),
)


def plot_report(report: dict, path: str | Path, width: int = 900, height: int = 560) -> Path:
    """Draw accuracy (%) against retention for every row of ``report`` that has cells, with the full-token
    accuracy as a dashed line; retentions are evenly spaced, ascending. Returns the PNG path."""
    from PIL import Image, ImageDraw

    if not isinstance(width, int) or not isinstance(height, int) or width < 300 or height < 200:
        raise ValueError(f"width and height must be ints >= 300 and >= 200, got {width!r}, {height!r}")
    rs = sorted(float(r) for r in report["retentions"])
    if not rs:
        raise ValueError("report must list at least one retention")
    rows = [m for m in report["methods"] if report["results"].get(m)]
    legend_w = 260
    left, right, top, bottom = 50, width - legend_w, 30, height - 40
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)

    def x_of(r: float) -> float:
        i = rs.index(r)
        return left + (right - left) * (i / (len(rs) - 1) if len(rs) > 1 else 0.5)

    def y_of(acc: float) -> float:
        return bottom - (bottom - top) * acc

    for k in range(0, 101, 10):
        y = y_of(k / 100)
        d.line([(left, y), (right, y)], fill=(225, 225, 225))
        d.text((8, y - 6), f"{k}%", fill="black")
    for r in rs:
        d.line([(x_of(r), top), (x_of(r), bottom)], fill=(235, 235, 235))
        d.text((x_of(r) - 10, bottom + 6), f"r={r:g}", fill="black")
    d.rectangle([left, top, right, bottom], outline="black")
    fy = y_of(report["full"]["accuracy"])
    for x0 in range(left, right, 12):
        d.line([(x0, fy), (min(x0 + 6, right), fy)], fill="black", width=2)
    d.text(
        (left, 8),
        f"testbed accuracy vs retention, {report['n']} questions "
        f"(dashed: all tokens {100 * report['full']['accuracy']:.1f}%)",
        fill="black",
    )
    ly = top
    for i, m in enumerate(rows):
        color = _PALETTE[i % len(_PALETTE)]
        pts = [
            (x_of(float(r)), y_of(x["accuracy"]))
            for r, x in sorted(report["results"][m].items(), key=lambda rx: float(rx[0]))
        ]
        if len(pts) > 1:
            d.line(pts, fill=color, width=2)
        for x, y in pts:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        d.line([(right + 12, ly + 6), (right + 32, ly + 6)], fill=color, width=3)
        d.text((right + 38, ly), m, fill="black")
        ly += 16
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
