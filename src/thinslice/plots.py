"""The table figures of a run: the scores of every method (metrics.csv) and the training curves
of its models (the loss logs under models/). Each function writes a PNG."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .drawing import FONT, SMALL, heading, save
from .errors import ThinsliceError
from .methods import REGISTRY, color as method_color, label as method_label, order as reading_order

# loss-log columns that are not losses: the training state logged beside them
NOT_LOSSES = {"step", "lr", "kl_weight", "learning_rate", "epoch", "time", "seconds"}


def read_metrics(path) -> pd.DataFrame:
    """metrics.csv: one row per (subject, method), every score a float (NaN where empty or not
    a number, e.g. PSNR without a truth); names stay text (subject '001' is not 1)."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        table = pd.DataFrame()
    if table.empty:
        raise ThinsliceError(f"{path}: no rows")
    scores = [c for c in table.columns if c not in ("subject", "method")]
    table[scores] = table[scores].apply(pd.to_numeric, errors="coerce")
    return table


def read_losses(path) -> pd.DataFrame:
    """A loss log as numbers (NaN where not one), one row per step in step order; a resumed
    run's repeated steps keep their last row."""
    log = pd.read_csv(path, dtype=str, keep_default_na=False)
    if log.empty or "step" not in log.columns:
        raise ThinsliceError(f"{path}: not a loss log (needs a 'step' column and rows)")
    log = log.apply(pd.to_numeric, errors="coerce").dropna(subset=["step"])
    return log.drop_duplicates("step", keep="last").sort_values("step", ignore_index=True)


def _finite(table: pd.DataFrame, key: str) -> bool:
    return key in table and bool(np.isfinite(table[key]).any())


def metrics_figure(metrics_csv, out_png, methods: list[str] | None = None, title: str = "") -> None:
    """Per-method scores, one point per subject (grey lines join a subject's points) and the
    mean as a bar with its value: PSNR and SSIM where a truth exists, else through-plane
    sharpness; always the periodic-artifact score. Methods in the order of `methods`, any
    others after them in the registry's reading order."""
    table = read_metrics(metrics_csv)
    present = list(table["method"].unique())
    order = [m for m in (methods or []) if m in present]
    order += reading_order(m for m in present if m not in order)
    has_truth = _finite(table, "psnr")
    keys = [("psnr", "PSNR (dB)"), ("ssim", "SSIM")] if has_truth else \
        [("sharpness", "through-plane sharpness\n(mean |slice difference|, normalised)")]
    if _finite(table, "periodic_artifact"):
        keys.append(("periodic_artifact", "periodic artifact\n(max/min texture over slice phases; 1 = none)"))
    subjects = list(table["subject"].unique())
    # subject x method; a repeated (subject, method) row keeps its last scores
    scores = table.drop_duplicates(["subject", "method"], keep="last").set_index(["subject", "method"])
    colors = [method_color(m, order) for m in order]
    fig, axes = plt.subplots(1, len(keys), figsize=(max(3.0, 0.7 * len(order) + 1.2) * len(keys), 3.4),
                             layout="constrained", squeeze=False)
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.12, 0.12, len(subjects)) if len(subjects) > 1 else np.zeros(1)
    for ax, (key, label) in zip(axes[0], keys):
        if key in scores:
            values = scores[key].unstack().reindex(index=subjects, columns=order).to_numpy(float)
        else:
            values = np.full((len(subjects), len(order)), np.nan)
        x = np.arange(len(order))
        for si in range(len(subjects)):
            if len(subjects) > 1:
                ax.plot(x + jitter[si], values[si], color="#bbbbbb", lw=0.7, zorder=1)
            ax.scatter(x + jitter[si], values[si], s=16, color=colors, edgecolor="black", linewidth=0.4, zorder=3)
        ok = np.isfinite(values)
        count = ok.sum(axis=0)  # a method without this score (e.g. no periodic artifact) has no mean
        means = np.where(count > 0, np.where(ok, values, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
        for xi, (c, mean) in enumerate(zip(colors, means)):
            if not np.isfinite(mean):
                continue
            ax.hlines(mean, xi - 0.32, xi + 0.32, color=c, lw=2.5, zorder=2)
            ax.annotate(f"{mean:.2f}" if key == "psnr" else f"{mean:.4f}" if key.startswith("ssim") else f"{mean:.3g}",
                        (xi, mean), xytext=(0, 4), textcoords="offset points", ha="center", va="bottom",
                        fontsize=SMALL, zorder=4,
                        bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.8))
        finite = values[ok]
        if finite.size:
            span = float(finite.max() - finite.min()) or abs(float(finite.max())) * 0.05 or 1.0
            ax.set_ylim(finite.min() - 0.15 * span, finite.max() + 0.25 * span)
        ax.set_xticks(x, [method_label(m) for m in order], rotation=30 if len(order) > 3 else 0,
                      ha="right" if len(order) > 3 else "center", fontsize=SMALL)
        ax.set_xlim(-0.6, len(order) - 0.4)
        ax.set_ylabel(label, fontsize=FONT)
        ax.tick_params(axis="y", labelsize=SMALL)
        ax.grid(axis="y", color="#eeeeee", lw=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    what = "against the ground truth" if has_truth else "no ground truth: a no-reference check"
    fig.suptitle(heading(title, f"{what}; {len(subjects)} subject{'s' if len(subjects) != 1 else ''}, "
                                f"bar = mean"), fontsize=FONT + 1)
    save(fig, out_png)


def training_figure(losses: dict[str, str], out_png, title: str = "") -> None:
    """One panel per model: every loss column of its log (positive ones; log y) against the
    training step. `losses`: model name (vae, sr_vae, ...) -> loss CSV."""
    if not losses:
        raise ThinsliceError("training figure: no loss CSV given")
    n = len(losses)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 0.4, 3.2), layout="constrained", squeeze=False)
    for ax, (name, path) in zip(axes[0], losses.items()):
        log = read_losses(path)
        steps = log["step"].to_numpy(float)
        total = log["loss"].to_numpy(float) if "loss" in log else None
        drawn = 0
        colors = iter(plt.get_cmap("tab10").colors)  # one per loss column, drawn or not: stable colours
        for col in log.columns:
            if col.lower() in NOT_LOSSES:
                continue
            vals = log[col].to_numpy(float)
            ok = np.isfinite(vals)
            color = next(colors)
            if not ok.any() or (vals[ok] <= 0).any():
                continue  # log y: signed or zero columns (e.g. an unused term) are left out
            if col != "loss" and total is not None and np.allclose(vals, total, equal_nan=True):
                continue  # the total when it is the only term
            main = col == "loss"
            ax.plot(steps[ok], vals[ok], lw=1.8 if main else 1.0, color="black" if main else color,
                    label=col, zorder=3 if main else 2)
            drawn += 1
        ax.set_yscale("log")
        model = REGISTRY.get(name)
        ax.set_title(model.training_title if model and model.training_title else name, fontsize=FONT)
        ax.set_xlabel("training step", fontsize=FONT)
        ax.set_ylabel("loss (log scale)", fontsize=FONT)
        ax.tick_params(which="both", labelsize=SMALL)
        ax.grid(True, which="major", color="#eeeeee", lw=0.8)
        if drawn:
            ax.legend(fontsize=SMALL, frameon=False)
        else:
            ax.text(0.5, 0.5, "no positive loss values", transform=ax.transAxes, ha="center", fontsize=FONT)
    fig.suptitle(heading(title, "training curves"), fontsize=FONT + 1)
    save(fig, out_png)
