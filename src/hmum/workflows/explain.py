"""Which features drive the predicted uplift: permutation importance per (treatment, response).

Importance of feature f for treatment k and response r::

    I_f^{k,r} = mean_b  mean_n | tau_hat_{n,k,r}(x) - tau_hat_{n,k,r}(x^{(f, b)}) |

where x^{(f, b)} is x with column f permuted by repeat b's permutation,
with its spread = the standard deviation over the repeats. It is in the units of the
response (how much the predicted uplift of a user moves, on average, when the
feature's value is replaced by another user's). We use this rather than the drop in
the variance of the uplift explained because (i) it needs no outcomes, truth or
refitting, only ``predict_uplift`` (so every registered model is explained the same
way), (ii) it stays defined and stable when the predicted uplift hardly varies
(a variance ratio divides by that variance) and (iii) it is stated in the response's
own units, which a reader can compare with the uplift itself. Like every permutation
importance it credits correlated features jointly weakly (permuting one leaves the
other's information in place).

The permutation is done on the columns of the validated pyarrow feature table (one
``take`` per repeat), the ``repeats`` permuted copies of a feature are stacked and
scored in one batched ``predict_uplift`` call: no per-row Python.

Shapes: tau (N, K, R); the importance table has one row per (treatment, response,
feature): K * R * F rows.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from hmum.data.validate import ExperimentData
from hmum.workflows.reports import markdown_table

COLUMNS = ["treatment", "response", "feature", "importance", "std", "share", "rank"]


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value)).strip("_") or "x"


def permutation_importance(
    model,
    data: ExperimentData,
    *,
    repeats: int = 5,
    rows: int | None = 20000,
    seed: int = 0,
    batch_rows: int = 262144,
) -> pd.DataFrame:
    """Permutation importance of each feature on the predicted uplift (module docstring).

    Args:
        model: any fitted model with ``predict_uplift`` (N, K, R) and ``schema``.
        data: the rows to explain (features only are read).
        repeats: permutations per feature (>= 1).
        rows: explain a seeded sample of at most this many rows (None: all).
        seed: seeds the sample and the permutations.
        batch_rows: most rows scored per ``predict_uplift`` call (the stacked copies of a
            feature are split into calls of this size).

    Returns:
        DataFrame with K * R * F rows: treatment, response, feature, importance (mean
        |delta tau| in response units), std (over repeats), share (importance / the
        sum over features of that (treatment, response)) and rank (1 = largest).
    """
    if repeats < 1:
        raise ValueError(f"repeats: expected an integer >= 1, got {repeats}")
    if rows is not None and rows < 1:
        raise ValueError(f"rows: expected an integer >= 1 or None, got {rows}")
    s = model.schema
    rng = np.random.default_rng(seed)
    n = len(data)
    if n < 2:
        raise ValueError(f"data: permutation importance needs at least 2 rows, got {n}")
    if rows is not None and n > rows:
        data = data.take(np.sort(rng.choice(n, rows, replace=False)))
        n = rows
    feats = data.features
    names = [f for f in s.feature_names if f in feats.column_names]
    missing = [f for f in s.feature_names if f not in feats.column_names]
    if missing:
        raise ValueError(f"data: feature column(s) {missing} of the model are missing")
    base = np.asarray(model.predict_uplift(data), dtype=np.float64)  # (N, K, R)
    kk, rr = base.shape[1], base.shape[2]
    imp = np.zeros((len(names), repeats, kk, rr))
    for i, f in enumerate(names):
        col = feats.column(f)
        j = feats.column_names.index(f)
        perms = [rng.permutation(n) for _ in range(repeats)]
        # the repeats' permuted copies, stacked, scored in batches of whole copies
        per_call = max(1, batch_rows // n)
        for start in range(0, repeats, per_call):
            chunk = perms[start:start + per_call]
            tables = [feats.set_column(j, f, col.take(pa.array(p))) for p in chunk]
            stacked = ExperimentData(schema=data.schema, features=pa.concat_tables(tables))
            tau = np.asarray(model.predict_uplift(stacked), dtype=np.float64)
            tau = tau.reshape(len(chunk), n, kk, rr)
            imp[i, start:start + len(chunk)] = np.abs(tau - base[None]).mean(axis=1)
    mean, std = imp.mean(axis=1), imp.std(axis=1)  # (F, K, R)
    out = []
    tn, rn = s.arms[1:], s.response_names
    for k in range(kk):
        for r in range(rr):
            m = mean[:, k, r]
            total = m.sum()
            order = np.argsort(-m, kind="stable")
            rank = np.empty(len(names), dtype=np.int64)
            rank[order] = np.arange(1, len(names) + 1)
            for i in order:
                out.append({"treatment": tn[k], "response": rn[r], "feature": names[i],
                            "importance": float(m[i]), "std": float(std[i, k, r]),
                            "share": float(m[i] / total) if total > 0 else 0.0,
                            "rank": int(rank[i])})
    return pd.DataFrame(out, columns=COLUMNS)


def plot_importance(table: pd.DataFrame, treatment: str, response: str, path: str | Path, *,
                    top: int = 20, dpi: int = 100) -> Path:
    """A horizontal bar chart (with the spread as error bars) of one (treatment, response)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = table[(table.treatment == treatment) & (table.response == response)]
    t = t.sort_values("importance", ascending=False).head(top)[::-1]
    fig = Figure(figsize=(6.5, 0.9 + 0.32 * max(len(t), 1)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.barh(t["feature"].astype(str), t["importance"], xerr=t["std"], color="tab:blue",
            ecolor="tab:gray", capsize=3)
    ax.set_xlabel(f"mean |change of predicted uplift| when permuted ({response} units)")
    ax.set_title(f"What drives the uplift of {treatment} on {response}")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path


def explain_markdown(table: pd.DataFrame, *, top: int | None = None) -> str:
    """One Markdown table per (treatment, response) (features by importance)."""
    parts = []
    for (k, r), t in table.groupby(["treatment", "response"], sort=False):
        t = t.sort_values("rank")
        if top is not None:
            t = t.head(top)
        parts += [f"#### {k} on {r}", "",
                  markdown_table(t[["rank", "feature", "importance", "std", "share"]]
                                 .reset_index(drop=True), floatfmt=".4g"), ""]
    return "\n".join(parts)


def explain(
    model,
    data: ExperimentData,
    out_dir: str | Path,
    *,
    repeats: int = 5,
    rows: int | None = 20000,
    seed: int = 0,
    plots: bool = True,
) -> dict:
    """``permutation_importance`` written to ``out_dir``: importance.csv, importance.md and
    one bar chart ``importance_<treatment>_<response>.png`` per (treatment, response).

    Returns {"table": DataFrame, "markdown": str, "csv": Path, "md": Path,
    "images": {(treatment, response): Path}, "rows": rows explained}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = permutation_importance(model, data, repeats=repeats, rows=rows, seed=seed)
    n = min(len(data), rows) if rows is not None else len(data)
    md = ("Permutation importance on the predicted uplift: mean |tau_hat(x) - tau_hat(x with "
          f"the feature permuted)| over {n:,} rows and {repeats} repeat(s), in the response's "
          "units; std: spread over the repeats; share: of the (treatment, response) total.\n\n"
          + explain_markdown(table))
    csv, mdp = out / "importance.csv", out / "importance.md"
    table.to_csv(csv, index=False)
    mdp.write_text("# Which features drive the predicted uplift\n\n" + md + "\n")
    images = {}
    if plots:
        for (k, r), _ in table.groupby(["treatment", "response"], sort=False):
            images[(k, r)] = plot_importance(
                table, k, r, out / f"importance_{_slug(k)}_{_slug(r)}.png")
    return {"table": table, "markdown": md, "csv": csv, "md": mdp, "images": images, "rows": n}
