"""The volume figures of a run: one subject's LR, method outputs and truth (a `scene.Scene`)
drawn as through-plane views. Panels are in millimetres (pixels of any aspect keep their
physical shape) with a scale bar and orientation letters; every row of grey images shares one
window (percentiles over the row).

Figures (one function each, all write a PNG):
    reformats_figure    through-plane reformats of LR, each method and the truth, with zooms
    errors_figure       |method - truth| on the same planes
    uncertainty_figure  each SR output beside its uncertainty map (and its |error| with a truth)
    profile_figure      intensities along the slice axis through a structure
    pipeline_figure     real LR -> VAE synthetic HR -> its degraded LR, and the SR output
qc_summary gives the title lines of a subject's quality-control figures.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import ConnectionPatch, Rectangle

from .drawing import FONT, PANEL_IN, SMALL, error_colormap, heading, letters, save, scale_bar, show
from .errors import ThinsliceError
from .scene import (EDGE_LETTERS, LR_COLOR, PLANE_NAMES, TRUTH_COLOR, TRUTH_LABEL, Scene, display_position,
                    plane_section, profile_line, window, zoom_box)

ZOOM_COLOR = "#ffd400"
PROFILE_COLOR = "#00c8ff"


def reformats_figure(scene: Scene, out_png, title: str = "") -> None:
    """Through-plane reformats: one column per image (LR, each method, truth), for each of
    the two planes that contain the slice axis a full view with a marked square and, below it,
    that square enlarged."""
    panels = [scene.lr] + scene.methods + ([scene.truth] if scene.truth is not None else [])
    planes = scene.planes()
    heights = []
    for plane in planes:
        h, w = scene.size_mm(plane)
        heights += [PANEL_IN * h / w, PANEL_IN]
    fig = plt.figure(figsize=(PANEL_IN * len(panels) + 0.5, sum(heights) + 0.7), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.01, hspace=0.01)
    grid = fig.add_gridspec(len(heights), len(panels), height_ratios=heights)
    for p_i, plane in enumerate(planes):
        cut = scene.centre(plane)
        sections = [plane_section(panel.ras, plane, cut) for panel in panels]
        fg = plane_section(scene.fg, plane, cut)
        lo, hi = window(sections, fg)
        extent = scene.extent(plane)
        x0, y0, zw, zh = zoom_box(scene, plane)
        for col, (panel, sec) in enumerate(zip(panels, sections)):
            ax = fig.add_subplot(grid[2 * p_i, col])
            show(ax, sec, extent, lo, hi)
            ax.add_patch(Rectangle((x0, y0), zw, zh, fill=False, ec=ZOOM_COLOR, lw=1.2))
            if p_i == 0:
                ax.set_title(panel.label, fontsize=FONT, color=panel.color if panel.key != "lr" else "black")
            if col == 0:
                ax.set_ylabel(PLANE_NAMES[plane], fontsize=FONT)
                letters(ax, plane, extent)
                scale_bar(ax, extent[1], extent[2])
            zax = fig.add_subplot(grid[2 * p_i + 1, col])
            show(zax, sec, extent, lo, hi, interpolation="nearest")
            zax.set_xlim(x0, x0 + zw)
            zax.set_ylim(y0 + zh, y0)
            for s in zax.spines.values():
                s.set_visible(True)
                s.set_color(ZOOM_COLOR)
                s.set_linewidth(1.5)
            if col == 0:
                zax.set_ylabel(f"{PLANE_NAMES[plane]}, zoom", fontsize=FONT)
                scale_bar(zax, zw, zh, x0, y0)
    fig.suptitle(heading(title, f"through-plane reformats; {scene.describe()}"), fontsize=FONT + 1)
    save(fig, out_png)


def errors_figure(scene: Scene, out_png, title: str = "") -> None:
    """|method - truth| on the through-plane planes; the truth in the first column, one colour
    scale for all maps; each panel gives the mean |error| over the foreground of the volume."""
    if scene.truth is None:
        raise ThinsliceError("errors figure: needs a ground truth (--truth)")
    panels = [scene.lr] + scene.methods
    planes = scene.planes()
    truth = scene.truth.ras
    errors = {p.key: np.where(scene.inside, np.abs(p.ras - truth), np.nan) for p in panels}
    fg = scene.fg & scene.inside
    vmax = float(np.nanpercentile(np.concatenate([errors[p.key][fg] for p in scene.methods] or [errors["lr"][fg]]),
                                  99.5)) if fg.any() else 1.0
    vmax = vmax if vmax > 0 else 1.0
    heights = [PANEL_IN * scene.size_mm(k)[0] / scene.size_mm(k)[1] for k in planes]
    ncols = len(panels) + 1
    fig = plt.figure(figsize=(PANEL_IN * ncols + 1.0, sum(heights) + 0.8), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.01, hspace=0.01)
    grid = fig.add_gridspec(len(planes), ncols, height_ratios=heights)
    cmap = error_colormap()
    image = None
    axes = []
    for row, plane in enumerate(planes):
        cut = scene.centre(plane)
        extent = scene.extent(plane)
        t = plane_section(truth, plane, cut)
        lo, hi = window([t], plane_section(fg, plane, cut))
        ax = fig.add_subplot(grid[row, 0])
        show(ax, t, extent, lo, hi)
        ax.set_ylabel(PLANE_NAMES[plane], fontsize=FONT)
        letters(ax, plane, extent)
        scale_bar(ax, extent[1], extent[2])
        if row == 0:
            ax.set_title(TRUTH_LABEL, fontsize=FONT)
        for col, panel in enumerate(panels, start=1):
            ax = fig.add_subplot(grid[row, col])
            image = show(ax, plane_section(errors[panel.key], plane, cut), extent, 0.0, vmax, cmap=cmap)
            axes.append(ax)
            if row == 0:
                mae = float(np.nanmean(errors[panel.key][fg])) if fg.any() else math.nan
                ax.set_title(f"{panel.label}\nMAE {mae:.3g}", fontsize=FONT,
                             color=panel.color if panel.key != "lr" else "black")
    bar = fig.colorbar(image, ax=axes, shrink=0.8, pad=0.01, extend="max")
    bar.set_label("|output - truth| (intensity)", fontsize=FONT)
    bar.ax.tick_params(labelsize=SMALL)
    fig.suptitle(heading(title, "absolute error against the ground truth "
                                "(MAE: mean over the foreground, whole volume)"), fontsize=FONT + 1)
    save(fig, out_png)


def uncertainty_figure(scene: Scene, out_png, uncertainty: dict[str, str], title: str = "") -> None:
    """Where an output is not to be trusted: one row per method with a map (`uncertainty`:
    method -> NIfTI on the output grid, the per-voxel SD of predictions that should agree), and
    for each through-plane plane the output, its map and, with a truth, |output - truth|. A row's
    map and error share one colour scale, 0 to the map's 99th percentile in the object, so the
    map can be held against the real error; each row label gives both means over the object."""
    unknown = [m for m in uncertainty if m not in {p.key for p in scene.methods}]
    if unknown or not uncertainty:
        raise ThinsliceError("uncertainty figure: " + (f"no output of {', '.join(unknown)} for its map"
                                                       if unknown else "no uncertainty map given"))
    rows = [p for p in scene.methods if p.key in uncertainty]
    maps = {p.key: scene.on_grid(uncertainty[p.key], f"uncertainty map of {p.key}") for p in rows}
    truth, fg = scene.truth, scene.fg
    kinds = ["output", "uncertainty (SD)"] + (["|output - truth|"] if truth is not None else [])
    planes = scene.planes()
    cuts = {k: scene.centre(k) for k in planes}
    # equal row heights: each column as wide as its plane's aspect asks
    widths = [scene.size_mm(k)[1] / scene.size_mm(k)[0] for k in planes for _ in kinds]
    fig = plt.figure(figsize=(PANEL_IN * sum(widths) + 1.3, PANEL_IN * len(rows) + 0.9), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.01, hspace=0.01)
    grid = fig.add_gridspec(len(rows), len(widths), width_ratios=widths)
    cmap = error_colormap()
    for r, panel in enumerate(rows):
        sd = maps[panel.key]
        ok = fg & np.isfinite(sd)
        ok = ok if ok.any() else np.isfinite(sd)
        vmax = float(np.percentile(sd[ok], 99)) if ok.any() else 0.0
        vmax = vmax if vmax > 0 else 1.0
        images = {"output": panel.ras, "uncertainty (SD)": sd}
        label = f"{panel.label}\nmean SD {float(np.mean(sd[ok])) if ok.any() else math.nan:.3g}"
        if truth is not None:
            images["|output - truth|"] = np.where(scene.inside, np.abs(panel.ras - truth.ras), np.nan)
            label += f", MAE {float(np.nanmean(images['|output - truth|'][fg])) if fg.any() else math.nan:.3g}"
        # one grey window for the row's outputs: the two planes' sections flattened together
        sections = [plane_section(panel.ras, k, cuts[k]).ravel() for k in planes]
        lo, hi = window([np.concatenate(sections)],
                         np.concatenate([plane_section(fg, k, cuts[k]).ravel() for k in planes]))
        axes, image = [], None
        for p_i, plane in enumerate(planes):
            extent = scene.extent(plane)
            for c, kind in enumerate(kinds):
                ax = fig.add_subplot(grid[r, p_i * len(kinds) + c])
                sec = plane_section(images[kind], plane, cuts[plane])
                if kind == "output":
                    show(ax, sec, extent, lo, hi)
                    if r == 0:
                        letters(ax, plane, extent)
                        scale_bar(ax, extent[1], extent[2])
                else:
                    image = show(ax, sec, extent, 0.0, vmax, cmap=cmap)
                    axes.append(ax)
                if r == 0:
                    ax.set_title(f"{kind}\n{PLANE_NAMES[plane]}", fontsize=FONT)
                if p_i == 0 and c == 0:
                    ax.set_ylabel(label, fontsize=FONT, color=panel.color)
        bar = fig.colorbar(image, ax=axes, shrink=0.9, pad=0.01, extend="max")
        bar.set_label("SD, |error| (input intensity)" if truth is not None else "SD (input intensity)",
                      fontsize=SMALL)
        bar.ax.tick_params(labelsize=SMALL)
    fig.suptitle(heading(title, "uncertainty: spread of predictions that should agree (both 2D orientations, "
                               f"volume and flip); {scene.describe()}"), fontsize=FONT + 1)
    save(fig, out_png)


def profile_figure(scene: Scene, out_png, title: str = "") -> None:
    """Left: a through-plane reformat with the chosen line. Right: intensities along it for the
    real LR samples (markers at the real slice positions), each method and the truth, drawn in
    the reformat's direction (a vertical line gives a vertical profile)."""
    s = scene.slice_ras
    point = profile_line(scene)
    plane = scene.planes()[0]
    line = [slice(None) if k == s else point[k] for k in range(3)]
    line = tuple(line)
    n, z = scene.shape[s], scene.zooms[s]
    disp = (n - 1 - np.arange(n) + 0.5) * z  # mm from the panel's left (or top) edge
    horizontal = scene.slice_is_horizontal(plane)
    on = np.flatnonzero(scene.fg[line])
    pad = scene.geometry.spacing_mm * 1.5
    span = (disp[on[-1]] - pad, disp[on[0]] + pad) if on.size else (disp[-1], disp[0])

    h, w = scene.size_mm(plane)
    thumb_w = max(2.2, 3.0 * w / h) if h >= w else 3.0
    fig = plt.figure(figsize=(thumb_w + (5.4 if horizontal else 3.6), 3.9), layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=[thumb_w, 5.4 if horizontal else 3.6])
    ax = fig.add_subplot(grid[0, 0])
    sec = plane_section(scene.reference, plane, point[plane])
    lo, hi = window([sec], plane_section(scene.fg, plane, point[plane]))
    extent = scene.extent(plane)
    show(ax, sec, extent, lo, hi)
    letters(ax, plane, extent)
    scale_bar(ax, extent[1], extent[2])
    end = list(point)
    end[s] = n - 1
    (x0, y0), (x1, y1) = (display_position(p, plane, scene.shape, scene.zooms) for p in (point, end))
    ax.plot([x0, x1], [y0, y1], color=PROFILE_COLOR, lw=1.4)
    ax.set_title(f"{PLANE_NAMES[plane]}, {scene.reference_label}", fontsize=FONT)

    pax = fig.add_subplot(grid[0, 1])

    def draw(values, **kw):
        return pax.plot(disp, values, **kw) if horizontal else pax.plot(values, disp, **kw)

    if scene.truth is not None:
        draw(scene.truth.ras[line], color=TRUTH_COLOR, lw=2.0, label=TRUTH_LABEL, zorder=3)
    for panel in scene.methods:
        draw(panel.ras[line], color=panel.color, lw=1.3, label=panel.label, zorder=4)
    samples = scene.lr_samples[line]
    real = np.isfinite(samples)
    draw(np.where(real, samples, np.nan), ls="none", marker="s", ms=5, mfc="white", mec=LR_COLOR, mew=1.3,
         label="LR samples (real slices)", zorder=5)
    top, bottom, left, right = EDGE_LETTERS[plane]
    guide = pax.axvline if horizontal else pax.axhline
    for d in disp[real]:
        guide(d, color="#dddddd", lw=0.6, zorder=0)
    if horizontal:
        pax.set_xlim(*span)
        pax.set_xlabel(f"position (mm), {left} \u2190 \u2192 {right}", fontsize=FONT)
        pax.set_ylabel("intensity", fontsize=FONT)
    else:
        pax.set_ylim(span[1], span[0])  # top of the panel = top of the reformat
        pax.set_ylabel(f"position (mm), {top} (up) \u2194 {bottom} (down)", fontsize=FONT)
        pax.set_xlabel("intensity", fontsize=FONT)
    pax.tick_params(labelsize=SMALL)
    fig.legend(*pax.get_legend_handles_labels(), loc="outside lower center", ncols=min(4, len(scene.methods) + 2),
               fontsize=SMALL, frameon=False)
    for side in ("top", "right"):
        pax.spines[side].set_visible(False)
    pax.set_title("intensity along the blue line (object only)", fontsize=FONT)
    fig.suptitle(heading(title, scene.describe()), fontsize=FONT + 1)
    save(fig, out_png)


def pipeline_figure(scene: Scene, out_png, title: str = "") -> None:
    """The method on one subject: real LR -> VAE-synthesized HR -> that volume degraded with
    the acquisition's slice model, and the SR network's output on the real LR scan."""
    by_key = {p.key: p for p in scene.methods}
    steps = [("1. real LR scan", scene.lr)]
    if "vae" in by_key or "vae" in scene.extra:
        steps.append(("2. VAE-synthesized HR", by_key.get("vae") or scene.extra["vae"]))
    if "degraded" in scene.extra:
        steps.append(("3. synthetic HR degraded", scene.extra["degraded"]))
    sr = by_key.get("sr_vae") or by_key.get("sr_both")
    if sr is not None:
        steps.append((f"4. {sr.label} on the real LR", sr))
    if len(steps) < 2:
        raise ThinsliceError("pipeline figure: needs the VAE output, the degraded volume or an sr_vae/sr_both output")
    plane = scene.planes()[0]
    cut = scene.centre(plane)
    sections = [plane_section(p.ras, plane, cut) for _, p in steps]
    lo, hi = window(sections, plane_section(scene.fg, plane, cut))
    extent = scene.extent(plane)
    h, w = scene.size_mm(plane)
    n = len(steps)
    fig = plt.figure(figsize=(2.3 * n + 0.3, 2.3 * h / w + 1.4), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.05, wspace=0.12)
    axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
    for ax, (name, panel), sec in zip(axes, steps, sections):
        show(ax, sec, extent, lo, hi, interpolation="nearest")
        ax.set_title(name, fontsize=FONT)
    letters(axes[0], plane, extent)
    scale_bar(axes[0], extent[1], extent[2])
    notes = {("1", "2"): "VAE: decode a spline\nthrough the real\nslices' latents",
             ("2", "3"): f"slice model: {scene.geometry.thickness_mm:.3g} mm profile,\n"
                         f"every {_ordinal(scene.geometry.factor)} slice kept",
             ("3", "4"): "SR net trained on\n(3 \u2192 2) pairs,\napplied to 1"}
    fig.suptitle(heading(title, f"the method on one subject ({PLANE_NAMES[plane]}); {scene.describe()}"),
                 fontsize=FONT + 1)
    fig.get_layout_engine().set(rect=(0, 0.16, 1, 0.84))
    fig.canvas.draw()
    fig.set_layout_engine("none")  # freeze the positions the notes are placed by
    bottom = min(a.get_position().y0 for a in axes)
    for (a_name, _), (b_name, _), a, b in zip(steps, steps[1:], axes, axes[1:]):
        learned = b_name.startswith("4")
        fig.add_artist(ConnectionPatch(
            xyA=(1.0, 0.5), coordsA=a.transAxes, xyB=(0.0, 0.5), coordsB=b.transAxes,
            arrowstyle="-|>", mutation_scale=14, lw=1.5, color="#444444", ls="--" if learned else "-"))
        note = notes.get((a_name[0], b_name[0]), "")
        if note:
            mid = (a.get_position().x1 + b.get_position().x0) / 2
            fig.text(mid, bottom - 0.03, note, ha="center", va="top", fontsize=SMALL, color="#333333")
    save(fig, out_png)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def qc_summary(entries: list[dict]) -> str:
    """The QC entries of one subject (evaluate --qc) as title lines: the slice profile, each
    method's consistency with the acquisition, and the warnings."""
    if not entries:
        return ""
    first = entries[0]
    header, est, used = (first.get(k) for k in ("fwhm_header_mm", "fwhm_estimate_mm", "slice_thickness_used_mm"))
    lines = ["slice profile: header " + (f"{header:.3g} mm" if header is not None else "- (no thickness)")
             + ", estimated from the scan " + (f"{est:.3g} mm" if est is not None else "- (too few slices)")
             + (f", used {used:.3g} mm" if used is not None else ""),
             "consistency (dB): " + ", ".join(f"{e['method']} {e['consistency_psnr']:.1f}" for e in entries)]
    warnings = sorted({w for e in entries for w in e.get("warnings", [])})
    return "\n".join(lines + [f"warning: {w}" for w in warnings])
