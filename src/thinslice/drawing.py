"""The look shared by every figure: sizes, fonts, image panels in millimetres with a scale bar
and orientation letters, and how a PNG is written."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.patheffects as patheffects  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from .io import atomic_path  # noqa: E402
from .scene import EDGE_LETTERS  # noqa: E402

DPI = 120
FONT = 9           # pt; nothing is drawn smaller than SMALL
SMALL = 8
PANEL_IN = 1.9     # width of one image column, inches


def _outline(width: float = 2.0):
    return [patheffects.withStroke(linewidth=width, foreground="black")]


def _nice_length(span_mm: float) -> float:
    """A round scale-bar length of about a quarter of `span_mm`."""
    for n in (100, 50, 20, 10, 5, 2, 1, 0.5):
        if n <= span_mm / 3.5:
            return float(n)
    return 0.5


def scale_bar(ax, width_mm: float, height_mm: float, x0: float = 0.0, y0: float = 0.0) -> None:
    """A white bar of a round length in the lower left of a panel of (width_mm, height_mm) from (x0, y0)."""
    length = _nice_length(width_mm)
    x, y = x0 + 0.06 * width_mm, y0 + height_mm * 0.94
    ax.plot([x, x + length], [y, y], color="white", lw=2.5, solid_capstyle="butt",
            path_effects=_outline(4.0))
    ax.text(x + length / 2, y - 0.02 * height_mm, f"{length:g} mm", color="white", ha="center", va="bottom",
            fontsize=SMALL, path_effects=_outline())


def letters(ax, plane: int, extent) -> None:
    """The anatomical direction at each edge of a panel showing `plane`."""
    top, bottom, left, right = EDGE_LETTERS[plane]
    x1, y1 = extent[1], extent[2]
    style = dict(color="white", fontsize=SMALL, fontweight="bold", path_effects=_outline())
    ax.text(x1 / 2, 0.01 * y1, top, ha="center", va="top", **style)
    ax.text(x1 / 2, 0.99 * y1, bottom, ha="center", va="bottom", **style)
    ax.text(0.01 * x1, y1 / 2, left, ha="left", va="center", **style)
    ax.text(0.99 * x1, y1 / 2, right, ha="right", va="center", **style)


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def show(ax, image, extent, lo, hi, cmap="gray", interpolation="antialiased"):
    """An image panel in mm (`extent`), equal aspect: pixels of any aspect keep their physical shape."""
    ax.set_facecolor("black")
    im = ax.imshow(image, cmap=cmap, vmin=lo, vmax=hi, extent=extent, interpolation=interpolation,
                   aspect="equal")
    _bare(ax)
    return im


def error_colormap():
    """For |error| and uncertainty maps: voxels outside the truth (NaN) in dark grey, apart from zero's black."""
    return plt.get_cmap("magma").with_extremes(bad="#2a2a2a")


def heading(title: str, what: str) -> str:
    """A figure's title: the caller's (run and subject) above what the figure shows."""
    return f"{title}\n{what}" if title else what


def save(fig, out_png) -> None:
    """Write the PNG atomically (no half-written figure for the workflow to pick up) and free the figure."""
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", facecolor="white", bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)
