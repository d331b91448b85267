"""The trade-off plot: change in one response against another, per strategy.

matplotlib is imported lazily (Agg backend) so that importing hmum.decision never
pulls it in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hmum.decision.evaluation import pareto_front


def plot_tradeoff(
    names: Sequence[str],
    x: Sequence[float],
    y: Sequence[float],
    path: str | Path,
    *,
    x_label: str = "change in response 1 (%)",
    y_label: str = "change in response 2 (%)",
    title: str = "Trade-off between responses per strategy",
    xerr: np.ndarray | None = None,
    yerr: np.ndarray | None = None,
    highlight: Sequence[str] = (),
) -> Path:
    """Scatter of strategies (x, y in percent) with their Pareto front; writes a PNG.

    names, x, y: one entry per strategy (P). xerr / yerr: optional (2, P)
    distances below / above each point (confidence intervals). Strategies named
    in ``highlight`` are drawn as stars; points are numbered, the legend names
    them, and points on the front have a black edge. The Pareto front (no other strategy is at
    least as good on both axes and better on one) is the dashed line. Quadrant
    lines mark "no change"; the top-right quadrant raises both responses.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not len(names) == len(xs) == len(ys):
        raise ValueError(f"names, x and y must have the same length, got {len(names)}, "
                         f"{len(xs)}, {len(ys)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=120)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.axvline(0, color="0.6", lw=0.8)
    front = pareto_front(np.stack([xs, ys], axis=1)) if len(xs) else np.zeros(0, bool)
    if front.sum() > 1:
        order = np.argsort(xs[front])
        ax.plot(xs[front][order], ys[front][order], "--", color="tab:green", lw=1.2,
                label="Pareto front", zorder=1)
    if xerr is not None or yerr is not None:
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="none", ecolor="0.55", elinewidth=0.8,
                    capsize=2, zorder=2)
    cmap = plt.get_cmap("tab20")
    for i, (n, a, b) in enumerate(zip(names, xs, ys, strict=True)):
        big = n in highlight
        ax.scatter([a], [b], s=120 if big else 45, color=cmap(i % 20), zorder=3,
                   edgecolor="black" if front[i] else "none", linewidth=1.0,
                   marker="*" if big else "o", label=f"{i + 1}. {n}")
    # points are numbered (names in the legend); strategies at (almost) the same
    # point share one label instead of overprinting
    span = max(float(np.ptp(xs)) if len(xs) else 0.0, float(np.ptp(ys)) if len(ys) else 0.0)
    tol = 0.01 * span if span > 0 else 1e-12
    done = np.zeros(len(xs), dtype=bool)
    for i in range(len(xs)):
        if done[i]:
            continue
        near = ~done & (np.abs(xs - xs[i]) <= tol) & (np.abs(ys - ys[i]) <= tol)
        done |= near
        ax.annotate(",".join(str(j + 1) for j in np.flatnonzero(near)), (xs[i], ys[i]),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5, frameon=False)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
