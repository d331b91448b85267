"""End-to-end workflows behind the command line: train, evaluate, report, demo.

These functions glue the layers together (data -> estimator -> metrics -> a
Markdown report); they hold no modeling logic of their own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hmum.data.split import split_from_record, split_indices
from hmum.data.validate import ExperimentData, data_fingerprint
from hmum.exceptions import DataError, option_name
from hmum.models.base import UpliftModel
from hmum.models.hum import HUMEstimator
from hmum.workflows.reports import markdown_table, write_html_report

#: the 8:1:1 split of the paper (§5.1.1), stratified by arm
SPLIT = (0.8, 0.1, 0.1)


def split_data(d: ExperimentData, seed: int = 0) -> tuple[ExperimentData, ...]:
    """(train, valid, test) parts of ``d``: seeded 8:1:1, stratified by arm."""
    return tuple(d.take(idx) for idx in split_indices(d.arm, SPLIT, seed=seed))


def test_indices(arm: np.ndarray, seed: int = 0) -> np.ndarray:
    """Row indices of the test part of ``split_data`` for arms ``arm`` (N,)."""
    return split_indices(arm, SPLIT, seed=seed)[2]


def held_out_indices(est, arm: np.ndarray, seed: int = 0) -> np.ndarray:
    """Test rows (indices into the table the model was trained from, arms (N,)).

    The split recorded in the model's artifact when there is one (stratified for
    ``hmum train``, a row-index hash for data-parallel training); otherwise the
    seeded stratified 8:1:1 test part. Unchecked: ``held_out_rows`` (what
    ``--test-split`` uses) also refuses a table the model was not split from.
    """
    split = getattr(est, "split_", None)
    if split and len(split["fractions"]) == 3:
        return split_from_record(split, arm)[2]
    return test_indices(arm, seed)


def _fingerprint_text(fp: dict) -> str:
    return f"{fp['rows']:,} rows, {fp['key']} hash {fp['hash'][:12]}"


def held_out_rows(est, data: ExperimentData, *, source: str = "data") -> np.ndarray:
    """Indices of the test rows the model held out of ``data`` (N rows), refusing any
    other table.

    ``data`` must be the table the model was split from: the model's artifact
    records the split rule and seed (``split_``) and a fingerprint of that table
    (``data_fingerprint_``: row count and a hash of the user ids, or of the rows).
    On a subset or superset of it, or another file, the same rule picks training
    rows as "test" rows, so this raises DataError instead; so it does for a model
    that records no split (trained on every row, or with a separate validation
    file) or no fingerprint (an artifact written before fingerprints were kept).
    ``source`` names ``data`` in messages (the CLI passes its flag and path).
    """
    flag = option_name("test_split", "held_out_rows")
    split = getattr(est, "split_", None)
    if not split or len(split.get("fractions", ())) != 3:
        raise DataError(
            f"{flag}: the model records no held-out test rows (trained on every row of its "
            f"data, or with a separate validation file); evaluate it on a separate test file "
            f"without {flag}")
    recorded = getattr(est, "data_fingerprint_", None)
    if not recorded:
        raise DataError(
            f"{flag}: the model records its split but no fingerprint of the table it split "
            f"(an artifact written before fingerprints were kept), so {source} cannot be "
            f"checked to be that table; retrain it, or evaluate on a separate test file "
            f"without {flag}")
    got = data_fingerprint(data)
    if got != recorded:
        raise DataError(
            f"{flag}: {source} is not the table the model was split from ({_fingerprint_text(got)}"
            f"; the model's: {_fingerprint_text(recorded)}), so its test rows would include "
            f"training rows; pass the training file, or evaluate on another file without {flag}")
    return split_from_record(split, data.arm)[2]


def train_model(
    name: str,
    data,
    valid=None,
    *,
    model: dict | None = None,
    trainer: dict | None = None,
    split: bool = True,
    checkpoint_dir=None,
    resume: bool = False,
    progress: bool = False,
):
    """Train the registered model ``name`` (``hmum.models.registry.list_models``).

    data / valid: ExperimentData (its schema builds the model). With
    ``split`` (and no ``valid``) the seeded 8:1:1 test part of ``data`` is held out and
    recorded in the model with a fingerprint of ``data`` (``--test-split``). ``model``:
    config fields over the entry's; ``trainer``: TrainerConfig fields (None values left
    to the defaults). The estimator records ``name`` (``registry_name_``, saved in the
    artifact). Returns the fitted estimator and a one-line description of the rows used.
    """
    from hmum.models.registry import get_entry

    entry = get_entry(name)
    trainer = {k: v for k, v in (trainer or {}).items() if v is not None}
    seed = trainer.get("seed", 0)
    if split and valid is None:
        tr, va, te = split_data(data, seed)
        info = f"train {len(tr):,} / valid {len(va):,} rows; test split of {len(te):,} held out"
    else:
        tr, va = data, valid
        info = f"train {len(tr):,} rows" + (f" / valid {len(va):,}" if va is not None else "")
    est = entry.build(data.schema, model=model or None, trainer=trainer or None)
    kwargs = {"checkpoint_dir": checkpoint_dir, "resume": resume} if (
        checkpoint_dir is not None or resume) else {}
    est.fit(tr, va, progress=progress, **kwargs)
    est.registry_name_ = name
    if split and valid is None:
        est.split_ = {"rule": "stratified", "fractions": list(SPLIT), "seed": seed}
        est.data_fingerprint_ = data_fingerprint(data)
    return est, info


def train_hum(
    data: ExperimentData,
    valid: ExperimentData | None = None,
    *,
    kl_weight: float = 1.0,
    model: dict | None = None,
    trainer: dict | None = None,
    split: bool = True,
    checkpoint_dir=None,
    resume: bool = False,
    progress: bool = False,
) -> tuple[HUMEstimator, str]:
    """Train HUM (``train_model("hum", ...)`` with ``kl_weight``); with ``split`` the
    seeded 8:1:1 test part of ``data`` is held out.

    Returns the fitted estimator and a one-line description of the rows used.
    """
    return train_model("hum", data, valid, model={**(model or {}), "kl_weight": kl_weight},
                       trainer=trainer, split=split, checkpoint_dir=checkpoint_dir,
                       resume=resume, progress=progress)


def train_hum_distributed(
    data: str | Path,
    schema,
    out: str | Path | None,
    *,
    nproc: int | None = None,
    valid_data: str | Path | None = None,
    kl_weight: float = 1.0,
    trainer: dict | None = None,
    split: bool = True,
    device: str = "cpu",
    checkpoint_dir=None,
    resume: bool = False,
    progress: bool = False,
):
    """Data-parallel HUM training (DDP, ``hmum.training.distributed``) of a Parquet file.

    ``nproc`` local workers (None: this process is one worker started by torchrun),
    each reading only its row groups; without ``valid_data`` the split is a seeded
    hash of the row index, holding out a test part as ``train_hum`` does with
    ``split``. ``trainer``: TrainerConfig fields (None values and ``device`` are
    left out; the device is ``device``). Writes the artifact to ``out`` (rank 0) and
    returns the fitted estimator. Raises DistributedError when a worker fails.
    """
    from hmum.training import distributed as hd

    job = hd.DistributedJob(
        data=data, data_schema=schema.model_dump(), out=out, valid_data=valid_data,
        fractions=SPLIT if split else (0.9, 0.1), model={"kl_weight": kl_weight},
        trainer={k: v for k, v in (trainer or {}).items() if v is not None and k != "device"},
        device=device, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
    )
    return hd.run(job, nproc)


# --------------------------------------------------------------------------------------
# evaluation and report
# --------------------------------------------------------------------------------------


def evaluate_estimator(
    est: UpliftModel, data: ExperimentData, *, levels: bool = False
) -> dict:
    """Metrics of one model (any ``UpliftModel``) on ``data``.

    Returns {"table": uplift table (K*R rows), "truth": ground-truth table or None,
    "tau_hat": (N, K, R), "y_hat": (N, K+1, R) (float64, from the one
    ``predict_outcomes`` call the uplift is taken from), "levels": level table
    ((K+1)*R rows, ``hmum.metrics.levels.level_table``) or None}.
    """
    from hmum.metrics import ground_truth_table, uplift_table
    from hmum.metrics.levels import level_table

    s = data.schema
    level = None
    # predict_uplift is this subtraction: one prediction serves every table
    y_hat = np.asarray(est.predict_outcomes(data), dtype=np.float64)
    tau_hat = y_hat[:, 1:] - y_hat[:, :1]
    if levels:
        level = level_table(data.y, data.arm, y_hat, arm_names=s.arms,
                            response_names=s.response_names)
    kinds = [r.kind for r in s.responses]
    names = {"kind": kinds, "response_names": s.response_names, "treatment_names": s.arms[1:]}
    table = uplift_table(data.y, tau_hat, data.arm, **names)
    truth = None
    if data.mu is not None:
        truth = ground_truth_table(data.y, data.tau, tau_hat, data.arm, **names)[
            ["treatment", "response", "pehe", "ate_error", "oracle_qini", "oracle_auuc"]
        ]
    return {"table": table, "truth": truth, "tau_hat": tau_hat, "y_hat": y_hat, "levels": level}


def evaluate_models(
    models: dict[str, UpliftModel],
    data: ExperimentData,
    out_dir: str | Path,
    *,
    title: str = "hmum evaluation",
    preamble: str = "",
    plots: bool = True,
    explanations: dict[str, dict] | None = None,
) -> dict:
    """Evaluate several models on the same rows; write tables, curves and report.md, and
    the same as one self-contained report.html (images embedded; ``write_html_report``).

    ``explanations``: {model name: ``hmum.workflows.explain.explain`` result} to add a
    "which features drive the uplift" section (its tables and bar charts) per model.

    Returns {"tables": {name: uplift table}, "truth": {name: ground-truth table},
    "levels": {name: level table (mean prediction vs observed mean per arm)},
    "report": path of report.md, "html": path of report.html}.
    """
    from hmum.metrics.levels import Z_FLAG
    from hmum.metrics.plots import save_curve_plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = data.schema
    tables, truths, levels, images = {}, {}, {}, {}
    for name, est in models.items():
        res = evaluate_estimator(est, data, levels=True)
        tables[name], truths[name], levels[name] = res["table"], res["truth"], res["levels"]
        res["table"].to_csv(out / f"{name}_uplift.csv", index=False)
        res["levels"].to_csv(out / f"{name}_levels.csv", index=False)
        if res["truth"] is not None:
            res["truth"].to_csv(out / f"{name}_ground_truth.csv", index=False)
        if plots:
            images[name] = save_curve_plots(
                data.y, res["tau_hat"], data.arm, out / "curves", prefix=f"{name}_",
                response_names=s.response_names, treatment_names=s.arms[1:],
                kind=[r.kind for r in s.responses],
            )
    lines = [f"# {title}", ""]
    if preamble:
        lines += [preamble, ""]
    counts = np.bincount(data.arm, minlength=s.K + 1)
    lines += [
        f"Evaluated on {len(data):,} rows ("
        + ", ".join(f"{a}: {c:,}" for a, c in zip(s.arms, counts, strict=True))
        + "). Qini and AUUC are normalized (1 = perfect ranking, 0 = random); for "
        "continuous and count responses labels are min-max normalized (see README, Metrics).",
        "",
    ]
    for name in models:
        lines += [f"## {name}", "", "### Normalized Qini and AUUC per (treatment, response)", "",
                  markdown_table(tables[name]), ""]
        lines += ["### Levels: mean prediction against observed mean, per arm", "",
                  "On the rows that received each arm: the model's mean prediction for that "
                  "arm, the observed mean and its standard error (SE); gap = predicted - "
                  f"observed, flagged beyond {Z_FLAG:g} SE (more than sampling error explains).",
                  "", markdown_table(levels[name]), ""]
        if truths[name] is not None:
            lines += ["### Ground truth (simulated data)", "",
                      "PEHE: root mean squared error of the uplift; ATE error: mean "
                      "estimated minus mean true uplift; oracle Qini: the Qini of ranking by "
                      "the true uplift on the same rows (a reference, not a ceiling: on a "
                      "finite sample the noise in the observed responses can put a model's "
                      "Qini above it).",
                      "", markdown_table(truths[name]), ""]
        for img in images.get(name, []):
            lines += [f"![{Path(img).stem}]({Path(img).relative_to(out)})", ""]
        if explanations and name in explanations:
            ex = explanations[name]
            lines += ["### Which features drive the predicted uplift", "", ex["markdown"], ""]
            for img in ex.get("images", {}).values():
                img = Path(img)
                ref = img.relative_to(out) if img.is_relative_to(out) else img
                lines += [f"![{img.stem}]({ref})", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    html = write_html_report(report)
    (out / "summary.json").write_text(json.dumps({
        "tables": {k: v.to_dict(orient="records") for k, v in tables.items()},
        "truth": {k: (v.to_dict(orient="records") if v is not None else None)
                  for k, v in truths.items()},
        "levels": {k: v.to_dict(orient="records") for k, v in levels.items()},
    }, indent=2, default=float))
    return {"tables": tables, "truth": truths, "levels": levels, "report": report,
            "html": html}


# --------------------------------------------------------------------------------------
# the demo (README's main job)
# --------------------------------------------------------------------------------------




