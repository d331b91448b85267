"""Qini and uplift curve plots (matplotlib, PNG).

Kept apart from :mod:`hmum.metrics` so that computing metrics never imports
matplotlib. Figures are drawn with matplotlib's object API and the Agg canvas: no
pyplot state, no GUI backend, and the user's backend is left alone.

Curves can have one point per row; for drawing they are sampled at ``max_points``
evenly spaced x positions of the piecewise-linear curve (the same curve whose area
the scores measure), so a 14 M-row curve plots as quickly as a small one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .ranking import (
    perfect_qini_curve,
    perfect_uplift_curve,
    qini_auc_score,
    qini_curve,
    uplift_auc_score,
    uplift_curve,
)
from .tables import _as_arm, _as_tau, _as_y, _kinds, _names

__all__ = ["plot_qini_curve", "plot_uplift_curve", "save_curve_plots"]


def _thin(x: np.ndarray, v: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """The piecewise-linear curve through (x, v) at most at ``max_points`` x positions."""
    if x.shape[0] <= max_points:
        return x, v
    xs = np.linspace(float(x[0]), float(x[-1]), max_points)
    return xs, np.interp(xs, x, v)


def _new_axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    fig = Figure(figsize=(5.5, 4.0))
    FigureCanvasAgg(fig)
    return fig.add_subplot()


def _draw(ax, model, perfect, score_name, score, label, max_points, share=False) -> Axes:
    """Perfect (when given), model and random lines; ``share``: x as the share of rows."""
    xm, vm = _thin(*model, max_points)
    scale = float(xm[-1]) if share and xm[-1] > 0 else 1.0
    if perfect is not None:
        xp, vp = _thin(*perfect, max_points)
        ax.plot(xp / scale, vp, color="tab:green", lw=1.2, label="perfect")
    ax.plot(xm / scale, vm, color="tab:blue", lw=1.5,
            label=f"{label} ({score_name} = {score:.4g})")
    ax.plot([0, xm[-1] / scale], [0, vm[-1]], color="tab:gray", lw=1, ls="--", label="random")
    ax.set_xlabel("share of users targeted (by descending predicted uplift)" if share
                  else "rows targeted (by descending score)")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def plot_qini_curve(
    y,
    score,
    treatment,
    *,
    kind: str = "auto",
    negative_effect: bool = True,
    ax: Axes | None = None,
    label: str = "model",
    max_points: int = 2000,
    perfect: bool = True,
    share: bool = False,
    ylabel: str | None = None,
) -> Axes:
    """Draw the Qini curve of a ranking with its perfect curve and the random line.

    Args:
        y: (N,) responses; score: (N,) predicted uplift; treatment: (N,) 0/1 indicator.
        kind, negative_effect: as in :func:`~hmum.metrics.qini_auc_score`.
        ax: axes to draw on (default: a new figure, see ``ax.figure``).
        label: legend label of the model curve.
        max_points: most points drawn per curve.
        perfect: draw the perfect curve (False: model and random only, on their own scale).
        share: x axis as the share of users targeted instead of a row count.
        ylabel: the y-axis label (default: "incremental responses (Qini)").

    Returns:
        The axes.
    """
    ax = _new_axes(ax)
    model = qini_curve(y, score, treatment, kind=kind)
    best = (perfect_qini_curve(y, treatment, kind=kind, negative_effect=negative_effect)
            if perfect else None)
    score_value = qini_auc_score(y, score, treatment, kind=kind, negative_effect=negative_effect)
    _draw(ax, model, best, "Qini", score_value, label, max_points, share)
    ax.set_ylabel(ylabel or "incremental responses (Qini)")
    return ax


def plot_uplift_curve(
    y,
    score,
    treatment,
    *,
    kind: str = "auto",
    ax: Axes | None = None,
    label: str = "model",
    max_points: int = 2000,
    perfect: bool = True,
    share: bool = False,
    ylabel: str | None = None,
) -> Axes:
    """Draw the uplift curve of a ranking with its perfect curve and the random line.

    Args and returns as :func:`plot_qini_curve`.
    """
    ax = _new_axes(ax)
    model = uplift_curve(y, score, treatment, kind=kind)
    best = perfect_uplift_curve(y, treatment, kind=kind) if perfect else None
    score_value = uplift_auc_score(y, score, treatment, kind=kind)
    _draw(ax, model, best, "AUUC", score_value, label, max_points, share)
    ax.set_ylabel(ylabel or "uplift x rows (uplift curve)")
    return ax


def _unit(response, kind: str) -> str:
    """What the curves' y values count: labels are min-max scaled unless binary."""
    if kind == "binary":
        return f"{response}\n(in positive outcomes)"
    return f"{response}\n(in {response} units, min-max scaled to [0, 1])"


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value)).strip("_") or "x"


def save_curve_plots(
    y,
    tau_hat,
    arm,
    out_dir,
    *,
    kind: str | Sequence[str] = "auto",
    negative_effect: bool = True,
    response_names: Sequence | None = None,
    treatment_names: Sequence | None = None,
    prefix: str = "",
    max_points: int = 2000,
    dpi: int = 100,
) -> list[Path]:
    """Write one PNG per (treatment, response): Qini and uplift curves side by side, the
    model against random on their own scale (top row, x = share of users targeted) and
    with the perfect curve (bottom row); y axes state their units.

    Treatment k uses the rows with ``arm`` 0 or k and the scores ``tau_hat[:, k-1, r]``,
    as :func:`~hmum.metrics.uplift_table` does.

    Args:
        y: (N, R) responses ((N,) when R = 1).
        tau_hat: (N, K, R) predicted uplift ((N, K) or (N,) when R = 1).
        arm: (N,) arm of each row, 0 = control.
        out_dir: folder for the PNGs (created if missing).
        kind, negative_effect, response_names, treatment_names: as in ``uplift_table``.
        prefix: put before each file name (e.g. the model's name).
        max_points: most points drawn per curve.
        dpi: resolution of the PNGs.

    Returns:
        The paths written, K * R of them, named
        ``<prefix>curves_<treatment>_<response>.png``.
    """
    y = _as_y(y)
    tau_hat = _as_tau("tau_hat", tau_hat, y.shape[0], y.shape[1])
    arm = _as_arm(arm, y.shape[0], tau_hat.shape[1])
    k_count, r_count = tau_hat.shape[1], y.shape[1]
    response_names = _names("response_names", response_names, r_count, range(r_count))
    treatment_names = _names("treatment_names", treatment_names, k_count, range(1, k_count + 1))
    kinds = _kinds(kind, y, response_names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(1, k_count + 1):
        rows = (arm == 0) | (arm == k)
        t = (arm[rows] == k).astype(np.int8)
        for j in range(r_count):
            fig = Figure(figsize=(12, 8.5))
            FigureCanvasAgg(fig)
            axes = fig.subplots(2, 2)
            args = (y[rows, j], tau_hat[rows, k - 1, j], t)
            unit = _unit(response_names[j], kinds[j])
            # top: model and random on their own scale; bottom: the same with the perfect
            # curve, whose scale usually dwarfs them
            for row, perfect in ((0, False), (1, True)):
                tag = " with the perfect ranking" if perfect else ""
                plot_qini_curve(
                    *args, kind=kinds[j], negative_effect=negative_effect, ax=axes[row, 0],
                    max_points=max_points, perfect=perfect, share=True,
                    ylabel=f"Qini: cumulative incremental {unit}",
                )
                plot_uplift_curve(
                    *args, kind=kinds[j], ax=axes[row, 1], max_points=max_points,
                    perfect=perfect, share=True,
                    ylabel=f"cumulative uplift x users targeted, {unit}",
                )
                axes[row, 0].set_title(f"Qini curve{tag}", fontsize="medium")
                axes[row, 1].set_title(f"uplift curve{tag}", fontsize="medium")
            fig.suptitle(
                f"treatment {treatment_names[k - 1]} vs control, response "
                f"{response_names[j]} ({kinds[j]}; {int(t.sum())} treated, "
                f"{int(t.size - t.sum())} control rows)"
            )
            fig.tight_layout()
            name = f"curves_{_slug(treatment_names[k - 1])}_{_slug(response_names[j])}.png"
            path = out / f"{prefix}{name}"
            fig.savefig(path, dpi=dpi)
            paths.append(path)
    return paths
