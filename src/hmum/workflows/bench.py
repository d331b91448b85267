"""The benchmark harness behind ``hmum bench``: every model on every seed of a dataset.

One *cell* is (model, seed, split): fit on the split's train part (valid drives
early stopping), predict the test part, score it with the same metrics as
``hmum evaluate`` (:func:`hmum.workflows.train.evaluate_estimator`): normalized Qini and
AUUC per (treatment, response), plus PEHE and ATE error when the test rows carry
ground truth (``test.mu``). Replicated datasets (IHDP, ACIC) give several splits
per seed; a seed also seeds the split and the model.

Each finished cell is written atomically as JSON under ``out_dir/cells/``, named
by a hash of every setting that changes its result (dataset, path, options,
model spec, trainer overrides, seed, split, harness version), so a rerun skips
finished cells and a changed setting never reuses a stale one. A cell whose model
raises is recorded as ``{"status": "failed", "error": "<type>: <message>"}`` and
the run goes on; failed cells count as finished (``retry_failed`` runs them
again). A single-treatment model on a dataset with K > 1 is reported as
``n/a (single-treatment model)`` without fitting.

Results (mean ± std over seeds × replications; std is the sample standard
deviation, ddof 1, shown only when n > 1) are written as ``results.md`` (one
table per metric, rows = models, columns = (treatment, response); the best value
per column in **bold**, the best baseline, i.e. the best model outside the HUM
family, underlined with ``<u>…</u>``; higher is better for Qini and AUUC, lower
for PEHE), ``results.csv`` (long format: one row per model × (treatment,
response) × metric with mean, std, n) and ``results.json`` (everything, including
per-cell values and errors).

Paired comparisons: every cell keeps BOOT_REPLICATES bootstrap replicates of Qini and
AUUC over its test rows (and of PEHE / ATE bias with ground truth), resampled on the
same rows for every model of the (seed, split); ``paired_differences`` turns them into
each model's difference to a reference (``reference=``, else the best baseline by the
metric) with a 95 % interval, shown in ``results.md``, ``paired.csv`` and
``results.json["paired"]``. Cells written before the Qini / AUUC replicates existed are
reused as they are and simply have no paired Qini / AUUC rows.

The user's own experiment is a source like a named dataset:
``run_bench(UserData(path, schema, test_path=None), ...)`` (``hmum bench --data``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hmum.data.datasets.user import UserData
from hmum.data.validate import PARTIAL_TRUTH_NOTE, partial_truth
from hmum.models.registry import ModelEntry, get_entry, list_models

__all__ = [
    "BenchCallbacks",
    "BenchResult",
    "METRICS",
    "aggregate_cells",
    "bench_tables",
    "load_dataset_splits",
    "model_catalog",
    "resolve_models",
    "run_bench",
]

#: bump when a change to the harness changes cell results (invalidates old cells).
#: 2 added the ground-truth metrics (truth.py): only cells with ground truth carry it,
#: so the cells of datasets without truth, whose results did not change, stay valid.
HARNESS_VERSION = 2

#: metric -> (title, higher is better)
METRICS: dict[str, tuple[str, bool | None]] = {
    "qini": ("Qini (normalized, higher is better)", True),
    "auuc": ("AUUC (normalized, higher is better)", True),
    "pehe": ("PEHE (root mean squared uplift error, lower is better)", False),
    "ate_bias": ("ATE bias (mean estimated minus true uplift; closer to 0 is better)", None),
    "tau_corr": ("Correlation with the true uplift (higher is better)", True),
    "spread_ratio": ("Spread ratio sd(estimated uplift) / sd(true uplift) (1 = as spread)",
                     None),
    "delta_rmse": ("RMSE of the relative uplift delta (what DDM reads; lower is better)", False),
    "oracle_qini": ("Qini of the true uplift on the same rows (the oracle's ranking)", None),
}
#: metrics whose best value is a target rather than a maximum or minimum
METRIC_TARGETS = {"ate_bias": 0.0, "spread_ratio": 1.0}
#: also kept per cell and in the CSV / JSON, not tabulated in Markdown
EXTRA_METRICS = ("ate_error", "level_bias_0", "level_bias_k")
#: ranking metrics with paired bootstrap replicates over the test rows (every dataset)
RANKING_PAIRED = ("qini", "auuc")
#: ground-truth metrics with paired bootstrap replicates (hmum.metrics.truth)
TRUTH_PAIRED = ("pehe", "ate_bias")
#: every metric with a paired-difference table, in report order
PAIRED_METRICS = (*RANKING_PAIRED, *TRUTH_PAIRED)
#: the metric that picks the default reference (the best baseline) of each paired metric
PAIRED_REFERENCE_BY = {"qini": "qini", "auuc": "auuc", "pehe": "pehe", "ate_bias": "pehe"}


def _single_treatment(cls: type, k: int) -> bool:
    limit = getattr(cls, "max_treatments", None)
    return limit is not None and k > limit


def model_catalog() -> list[dict]:
    """Every registered model in table order, as ``hmum models`` prints it.

    Returns one dict per model: ``name`` (for ``--models`` / ``get_model``), ``label``
    (the tables' name), ``model_type`` (what an artifact records), ``max_treatments``
    (the largest K it runs on; None: any K) and ``ours`` (True for the HUM family).
    """
    out = []
    for spec in map(get_entry, list_models()):
        out.append({"name": spec.name, "label": spec.display, "model_type": spec.model_type,
                    "max_treatments": getattr(spec.cls, "max_treatments", None),
                    "ours": spec.ours})
    return out


def resolve_models(
    models: Sequence[str | ModelEntry] | None, k: int
) -> tuple[list[ModelEntry], list[dict]]:
    """The specs to run on a dataset with ``k`` treatments, and the ones left out.

    ``models=None``: every registered model that can run here (applicable to
    K treatments, causalml installed for the causalml ones). Named models always
    run (a model that cannot run is reported as failed or n/a in the table).

    Returns (specs, skipped) with skipped = [{"name", "reason"}].
    Raises ValueError for an unknown model name.
    """
    if models is not None:
        specs, unknown = [], []
        for m in models:
            if isinstance(m, ModelEntry):
                specs.append(m)
            elif m in list_models():
                specs.append(get_entry(m))
            else:
                unknown.append(m)
        if unknown:
            raise ValueError(
                f"models: unknown model name(s) {unknown}; expected some of {list_models()}"
            )
        names = [s.name for s in specs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"models: each model may appear once, repeated: {dup}")
        if not specs:
            raise ValueError("models: expected at least one model name, received none")
        return specs, []
    from hmum.models.causalml import causalml_available

    have_causalml = causalml_available()
    specs, skipped = [], []
    for spec in map(get_entry, list_models()):
        if _single_treatment(spec.cls, k):
            reason = f"n/a (single-treatment model; K={k})"
        elif spec.model_type.startswith("causalml_") and not have_causalml:
            reason = "needs the extra hmum[causalml]: pip install 'hmum[causalml]'"
        else:
            specs.append(spec)
            continue
        skipped.append({"name": spec.name, "reason": reason})
    return specs, skipped


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


def load_dataset_splits(name: str, path=None, *, seed: int = 0, **options) -> list:
    """The splits of benchmark dataset ``name`` for ``seed`` (``hmum.data.datasets``).

    Each split has ``.name``, ``.train``, ``.valid``, ``.test`` (ExperimentData).
    """
    from hmum.data.datasets import load_benchmark

    return load_benchmark(name, path, seed=seed, **options)


# --------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------


class BenchCallbacks:
    """Progress hooks of :func:`run_bench`; the defaults do nothing."""

    def start(self, total_cells: int) -> None:
        """Called once the number of cells is known."""

    def cell_start(self, model: str, seed: int, split: str, max_epochs: int | None) -> None:
        """A cell begins fitting."""

    def epoch(self, record: dict) -> None:
        """One finished epoch of the current fit (the trainer's log record)."""

    def cell_end(self, cell: dict, reused: bool) -> None:
        """A cell finished (or was read back from an earlier run: ``reused``)."""


# --------------------------------------------------------------------------------------
# cells
# --------------------------------------------------------------------------------------


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _cell_file(cells_dir: Path, settings: dict) -> tuple[str, Path]:
    key = hashlib.sha256(_canonical(settings).encode()).hexdigest()[:16]
    split = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(settings["split"]))
    name = f"{settings['model']['name']}-seed{settings['seed']}-{split}-{key}.json"
    return key, cells_dir / name


def _write_json_atomic(path: Path, obj) -> None:
    """Write JSON so that a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _read_cell(path: Path) -> dict | None:
    try:
        cell = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # missing or unreadable: run the cell again
    return cell if isinstance(cell, dict) and "status" in cell else None


def _restore_cells(results: Path, cells_dir: Path) -> int:
    """Write back, into ``cells_dir``, the cells a ``results.json`` holds but ``cells_dir`` lacks.

    Only a cell whose recorded key is its own settings' key is restored, so a cell edited
    or written by another harness is run again rather than trusted. Returns how many were
    written; an unreadable ``results.json`` restores nothing (the cells are simply run).
    """
    try:
        old = json.loads(results.read_text())
    except (OSError, json.JSONDecodeError):
        return 0
    written = 0
    for cell in old.get("cells", []) if isinstance(old, dict) else []:
        if not (isinstance(cell, dict) and isinstance(cell.get("settings"), dict)
                and cell.get("status") in ("ok", "failed")):
            continue
        try:
            key, file = _cell_file(cells_dir, cell["settings"])
        except (KeyError, TypeError):
            continue
        if key != cell.get("key") or file.exists():
            continue
        _write_json_atomic(file, {k: v for k, v in cell.items() if k != "reused"})
        written += 1
    return written


def _short_error(e: BaseException) -> str:
    # str(KeyError("x")) is "'x'": take the argument itself
    msg = (str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)).strip() or repr(e)
    return f"{type(e).__name__}: {msg}"


def _fit_and_score(spec: ModelEntry, split, trainer: dict, callbacks) -> dict:
    """Fit ``spec`` on one split and score its test part; raises what the model raises."""
    from hmum.workflows.train import evaluate_estimator

    if spec.model_type.startswith("causalml_"):
        from hmum.models.causalml import backend

        backend()  # import causalml (seconds) before the clock starts
    est = spec.build(split.train.schema, trainer=trainer)
    t0 = time.perf_counter()
    est.fit(split.train, split.valid, progress=False, log=callbacks.epoch)
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    res = evaluate_estimator(est, split.test)
    eval_s = time.perf_counter() - t1
    table = res["table"]
    metrics = [
        {"treatment": str(r.treatment), "response": str(r.response),
         "qini": float(r.qini), "auuc": float(r.auuc)}
        for r in table.itertuples(index=False)
    ]
    if res["truth"] is not None:
        for m, r in zip(metrics, res["truth"].itertuples(index=False), strict=True):
            m["pehe"] = float(r.pehe)
            m["ate_error"] = float(r.ate_error)
            m["oracle_qini"] = float(r.oracle_qini)
    _add_ranking_replicates(metrics, split, res["tau_hat"])
    if split.test.mu is not None:
        _add_truth_metrics(metrics, split, res["y_hat"])
    out = {"metrics": metrics, "fit_seconds": fit_s, "eval_seconds": eval_s}
    history = getattr(est, "history_", None)
    if history is not None and getattr(history, "epochs", None) is not None:
        out["epochs"] = len(history.epochs)
        out["best_epoch"] = history.best_epoch
    return out


def _boot_seed(split) -> int:
    """The bootstrap seed of a split's test rows: the same for every model of a
    (seed, split), so their replicates pair up."""
    return int(hashlib.sha256(f"{split.name}:{len(split.test)}".encode()).hexdigest()[:8], 16)


def _add_ranking_replicates(metrics: list[dict], split, tau_hat: np.ndarray) -> None:
    """Qini and AUUC under BOOT_REPLICATES resamples of the test rows (within each arm),
    the same resampled rows for every model of the split (``uplift_replicates``)."""
    from hmum.metrics.bootstrap import uplift_replicates

    test = split.test
    kinds = [r.kind for r in test.schema.responses]
    reps = uplift_replicates(test.y, tau_hat, test.arm, kind=kinds, n_boot=BOOT_REPLICATES,
                             seed=_boot_seed(split))
    r_count = tau_hat.shape[2]
    for i, m in enumerate(metrics):
        k, r = divmod(i, r_count)  # uplift tables are treatment-major
        got = {p: reps[p][:, k, r] for p in RANKING_PAIRED}
        m.setdefault("replicates", {}).update(
            {p: v.round(8).tolist() for p, v in got.items() if np.isfinite(v).all()})


def _add_truth_metrics(metrics: list[dict], split, y_hat: np.ndarray) -> None:
    """Ground-truth errors (hmum.metrics.truth) and their paired bootstrap replicates.

    The replicate weights are seeded by the test rows' identity (split name and
    size), so every model of a (seed, split) shares them and differences pair up.
    """
    from hmum.metrics.truth import replicate_errors, uplift_errors

    test = split.test
    errs = uplift_errors(test.mu, y_hat)
    reps = replicate_errors(test.mu, y_hat, n_boot=BOOT_REPLICATES, seed=_boot_seed(split))
    r_count = test.mu.shape[2]
    for i, (m, e) in enumerate(zip(metrics, errs.itertuples(index=False), strict=True)):
        k, r = divmod(i, r_count)  # uplift tables are treatment-major
        for name in ("ate_bias", "tau_corr", "spread_ratio", "delta_rmse", "level_bias_0",
                     "level_bias_k"):
            m[name] = float(getattr(e, name))
        m.setdefault("replicates", {}).update(
            {p: reps[p][:, k, r].round(8).tolist() for p in TRUTH_PAIRED})


#: bootstrap replicates per ground-truth cell (paired across models)
BOOT_REPLICATES = 200


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------


@dataclass
class BenchResult:
    """What :func:`run_bench` produced.

    Attributes:
        cells: one record per (model, seed, split), as in ``cells/*.json``.
        summary: long DataFrame (see :func:`aggregate_cells`).
        markdown: the Markdown report.
        files: {"markdown", "csv", "json"} -> path.
        fitted: cells fitted in this call (including ones that failed).
        reused: cells read back from an earlier run.
        skipped: models left out of a default run, with the reason.
    """

    cells: list[dict]
    summary: pd.DataFrame
    markdown: str
    files: dict[str, Path]
    fitted: int = 0
    reused: int = 0
    skipped: list[dict] = field(default_factory=list)


def run_bench(
    dataset: str | UserData,
    models: Sequence[str | ModelEntry] | None = None,
    seeds: int | Sequence[int] = 3,
    out_dir: str | Path = "runs/bench",
    *,
    path: str | Path | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    trainer: dict | None = None,
    options: dict | None = None,
    resume: bool = True,
    retry_failed: bool = False,
    callbacks: BenchCallbacks | None = None,
    loader: Callable[..., list] | None = None,
    reference: str | None = None,
) -> BenchResult:
    """Train and evaluate every model on every seed of ``dataset``; write the tables.

    Args:
        dataset: a name of ``hmum.data.datasets.DATASETS`` (e.g. "criteo"), or the
            user's own experiment, ``hmum.data.datasets.UserData(path, schema,
            test_path=None)``: a seeded 8:1:1 split stratified by arm (9:1 train / valid
            with a test file); its cell keys hold the schema and a fingerprint of the
            files' content, so a changed file never reuses cells.
        models: harness names (keys of ``list_models()``) or ModelEntry objects; None =
            every model that can run on this dataset (see :func:`resolve_models`).
        seeds: N (seeds 0..N-1) or the seeds themselves. A seed sets the split and
            the model's initialization.
        out_dir: output folder: ``cells/``, ``results.md``, ``results.csv``, ``results.json``.
        path: the dataset's file or folder (None: its default under the shared data).
        epochs, batch_size: trainer overrides (max_epochs, batch_size) for the neural
            models; None keeps the defaults (the paper's).
        threads: torch threads and LightGBM n_jobs (None: torch as is, LightGBM 1).
        trainer: more TrainerConfig overrides (e.g. {"lr": 1e-3}); part of the cell key.
        options: dataset loader options (e.g. {"replications": 10}).
        resume: read back cells an earlier run finished with the same settings: from
            ``cells/``, or, for a cell whose file is missing (a fresh clone keeps only
            the tables), from the ``results.json`` already in ``out_dir``.
        retry_failed: with ``resume``, run failed cells again instead of reusing them.
        callbacks: progress hooks (:class:`BenchCallbacks`).
        loader: ``loader(dataset, path, seed=..., **options) -> list of splits``
            (default :func:`load_dataset_splits`).
        reference: the model every paired difference is taken to (a name of
            ``models``); None: per column, the best baseline by the metric (by PEHE for
            the ATE bias).

    Returns:
        BenchResult. Raises ValueError for an unknown model name and what the loader
        raises for an unknown dataset or unreadable data; a model failing never stops
        the run.
    """
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError(f"seeds: expected N >= 1 or a list of seeds, received {seeds!r}")
    if len(set(seed_list)) != len(seed_list):
        raise ValueError(f"seeds: each seed may appear once, received {seed_list}")
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("threads", threads)):
        if v is not None and v < 1:
            raise ValueError(f"{name}: expected an integer >= 1 or None, received {v}")
    callbacks = callbacks or BenchCallbacks()
    load = loader or load_dataset_splits
    options = dict(options or {})
    source_key = None
    if isinstance(dataset, UserData):
        if path is not None or loader is not None:
            raise ValueError("path / loader: not used with user data (UserData holds its files)")
        source_key = dataset.key()  # reads and validates the files: bad data fails here
        load = dataset.loader
        dataset = dataset.name
    out = Path(out_dir)
    cells_dir = out / "cells"
    overrides = {k: v for k, v in {**(trainer or {}), "max_epochs": epochs,
                                   "batch_size": batch_size}.items() if v is not None}
    path_key = str(Path(path).resolve()) if path is not None else None
    if reference is not None and models is not None:
        names = [m.name if isinstance(m, ModelEntry) else m for m in models]
        if reference not in names:
            raise ValueError(f"reference: expected one of the models run {names}, received "
                             f"{reference!r}")

    if resume:  # before the thread count changes: a failed write must not leave it changed
        _restore_cells(out / "results.json", cells_dir)
    old_threads = None
    if threads:
        import torch

        old_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    try:
        cells, fitted, specs, skipped, info = _run_cells(
            dataset, models, seed_list, load, path, path_key, options, overrides, threads,
            cells_dir, resume, retry_failed, callbacks, source_key,
        )
    finally:
        if old_threads is not None:
            import torch

            torch.set_num_threads(old_threads)

    if reference is not None and reference not in {s.name for s in specs}:
        raise ValueError(f"reference: expected one of the models run "
                         f"{[s.name for s in specs]}, received {reference!r}")
    summary = aggregate_cells(cells, specs)
    settings = {"dataset": dataset, "path": path_key, "options": options, "seeds": seed_list,
                "trainer": overrides, "threads": threads, "harness": HARNESS_VERSION, **info}
    if source_key is not None:
        settings["source"] = source_key
    if reference is not None:
        settings["reference"] = reference
    paired = pd.concat([paired_differences(cells, summary, m, reference=reference)
                        for m in PAIRED_METRICS], ignore_index=True)
    md = bench_tables(summary, dataset=dataset, settings=settings, skipped=skipped, cells=cells,
                      reference=reference)
    files = _write_results(out, md, summary, cells, specs, skipped, settings, paired)
    return BenchResult(cells=cells, summary=summary, markdown=md, files=files, fitted=fitted,
                       reused=sum(bool(c.get("reused")) for c in cells), skipped=skipped)


def _run_cells(dataset, models, seed_list, load, path, path_key, options, overrides, threads,
               cells_dir, resume, retry_failed, callbacks, source_key=None):
    cells: list[dict] = []
    fitted = 0
    specs: list[ModelEntry] | None = None
    skipped: list[dict] = []
    info: dict = {}
    for i, seed in enumerate(seed_list):
        splits = list(load(dataset, path, seed=seed, **options))
        if not splits:
            raise ValueError(f"dataset {dataset!r}: the loader returned no splits for seed {seed}")
        schema = splits[0].train.schema
        if specs is None:
            specs, skipped = resolve_models(models, schema.K)
            callbacks.start(len(specs) * len(splits) * len(seed_list))
            info = {"K": schema.K, "R": schema.R, "arms": list(schema.arms),
                    "responses": list(schema.response_names),
                    "splits_per_seed": len(splits),
                    "ground_truth": splits[0].test.mu is not None,
                    "partial_truth": partial_truth(splits[0].test),
                    "rows": {"train": len(splits[0].train), "valid": len(splits[0].valid),
                             "test": len(splits[0].test)}}
        elif i and schema.K != info["K"]:
            raise ValueError(f"dataset {dataset!r}: seed {seed} gave K={schema.K} treatments, "
                             f"seed {seed_list[0]} gave K={info['K']}")
        for split in splits:
            for spec in specs:
                cls = spec.cls
                truth = split.test.mu is not None
                model_key = spec.key()
                version = getattr(cls, "defaults_version", 1)
                if version != 1:  # the model's own defaults changed: its old cells are stale
                    model_key["defaults_version"] = version
                settings = {"harness": HARNESS_VERSION if truth else 1, "dataset": dataset,
                            "path": path_key, "options": options, "model": model_key,
                            "trainer": overrides, "seed": seed, "split": str(split.name)}
                if source_key is not None:  # the user's files: their content is the key
                    settings["source"] = source_key
                key, file = _cell_file(cells_dir, settings)
                base = {"key": key, "model": spec.name, "label": spec.display,
                        "ours": spec.ours, "seed": seed, "split": str(split.name)}
                if _single_treatment(cls, schema.K):
                    cell = {**base, "status": "n/a",
                            "error": f"n/a (single-treatment model; this dataset has "
                                     f"K={schema.K} treatments)"}
                    cells.append(cell)
                    callbacks.cell_end(cell, reused=False)
                    continue
                old = _read_cell(file) if resume else None
                if old is not None and not (retry_failed and old["status"] == "failed"):
                    old["reused"] = True
                    cells.append(old)
                    callbacks.cell_end(old, reused=True)
                    continue
                trainer_cfg = {**overrides, **spec.trainer, "seed": seed}
                if threads:
                    trainer_cfg["num_threads"] = threads
                callbacks.cell_start(spec.name, seed, str(split.name),
                                     trainer_cfg.get("max_epochs", _default_epochs()))
                t0 = time.perf_counter()
                try:
                    got = _fit_and_score(spec, split, trainer_cfg, callbacks)
                    cell = {**base, "status": "ok", **got}
                except Exception as e:  # noqa: BLE001 - a failing model is reported, not fatal
                    cell = {**base, "status": "failed", "error": _short_error(e),
                            "traceback": traceback.format_exc(limit=8),
                            "seconds": time.perf_counter() - t0}
                cell["settings"] = settings
                cell["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                _write_json_atomic(file, cell)
                fitted += 1
                cells.append(cell)
                callbacks.cell_end(cell, reused=False)
    return cells, fitted, specs, skipped, info


def _default_epochs() -> int:
    from hmum.training.trainer import TrainerConfig

    return TrainerConfig().max_epochs


# --------------------------------------------------------------------------------------
# aggregation and tables
# --------------------------------------------------------------------------------------

SUMMARY_COLUMNS = ["model", "label", "ours", "treatment", "response", "metric", "mean", "std",
                   "n", "n_failed", "n_na", "status", "error", "values"]


def aggregate_cells(cells: list[dict], specs: Sequence[ModelEntry] | None = None) -> pd.DataFrame:
    """Mean ± std over seeds × replications per model, (treatment, response) and metric.

    Args:
        cells: cell records (status "ok" with "metrics", "failed" with "error", "n/a").
        specs: the models in table order (default: order of first appearance).

    Returns:
        A long DataFrame with columns ``SUMMARY_COLUMNS``: one row per model ×
        (treatment, response) × metric (Qini, AUUC, PEHE and ATE error when present)
        plus one "fit_seconds" row per model (treatment and response empty); a model
        with no successful cell has one row with metric empty, its status ("failed"
        or "n/a") and its first error. ``std`` is the sample std (ddof 1), NaN when n
        is 1; ``values`` are the per-cell values in cell order.
    """
    order: list[str] = [s.name for s in specs] if specs else []
    meta = {s.name: (s.display, s.ours) for s in specs or []}
    by_model: dict[str, list[dict]] = {}
    for c in cells:
        by_model.setdefault(c["model"], []).append(c)
        if c["model"] not in order:
            order.append(c["model"])
        meta.setdefault(c["model"], (c.get("label", c["model"]), bool(c.get("ours"))))
    rows = []
    for name in order:
        group = by_model.get(name, [])
        label, ours = meta[name]
        ok = [c for c in group if c["status"] == "ok"]
        failed = [c for c in group if c["status"] == "failed"]
        na = [c for c in group if c["status"] == "n/a"]
        errors = [c["error"] for c in failed + na]
        common = {"model": name, "label": label, "ours": ours, "n_failed": len(failed),
                  "n_na": len(na), "error": errors[0] if errors else ""}
        if not ok:
            status = "failed" if failed else ("n/a" if na else "missing")
            rows.append({**common, "treatment": "", "response": "", "metric": "", "mean": np.nan,
                         "std": np.nan, "n": 0, "status": status, "values": []})
            continue
        status = "ok" if not failed else "partial"
        values: dict[tuple[str, str, str], list[float]] = {}
        for c in ok:
            for m in c["metrics"]:
                for metric in (*METRICS, *EXTRA_METRICS):
                    if metric in m:
                        values.setdefault((m["treatment"], m["response"], metric), []).append(
                            float(m[metric]))
        fit = [float(c["fit_seconds"]) for c in ok if "fit_seconds" in c]
        if fit:
            values[("", "", "fit_seconds")] = fit
        for (t, r, metric), v in values.items():
            a = np.asarray(v, dtype=np.float64)
            rows.append({**common, "treatment": t, "response": r, "metric": metric,
                         "mean": float(a.mean()),
                         "std": float(a.std(ddof=1)) if a.size > 1 else np.nan,
                         "n": int(a.size), "status": status, "values": v})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _fmt(mean: float, std: float, digits: int) -> str:
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _short(s: str, n: int = 90) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _best(values: list[float], higher: bool | None, target: float | None) -> float:
    if target is not None:
        return min(values, key=lambda v: abs(v - target))
    return max(values) if higher else min(values)


def metric_table(summary: pd.DataFrame, metric: str, *, digits: int = 4) -> str | None:
    """One Markdown table: rows = models, columns = (treatment, response) of ``metric``.

    The best mean per column (compared at the shown precision, so ties share the
    mark) is bold; the best among the baselines (``ours`` False) is underlined.
    Models without a value show their status ("failed: <error>", "n/a (...)").
    Returns None when no model has ``metric``.
    """
    higher = METRICS[metric][1]
    target = METRIC_TARGETS.get(metric)
    have = summary[summary["metric"] == metric]
    if have.empty:
        return None
    cols = list(dict.fromkeys(zip(have["treatment"], have["response"], strict=True)))
    models = list(dict.fromkeys(summary["model"]))
    status = summary.groupby("model", sort=False).first()
    cell = {(r.model, r.treatment, r.response): (r.mean, r.std)
            for r in have.itertuples(index=False)}
    best: dict[tuple, float] = {}
    best_base: dict[tuple, float] = {}
    for col in cols:
        vals = [(m, round(cell[(m, *col)][0], digits)) for m in models if (m, *col) in cell]
        if higher is None and target is None:
            continue  # e.g. the oracle's Qini: the same rows, a reference, not a contest
        if vals:
            best[col] = _best([v for _, v in vals], higher, target)
        base = [v for m, v in vals if not status.loc[m, "ours"]]
        if base:
            best_base[col] = _best(base, higher, target)
    head = ["model", *[f"{t} / {r}" for t, r in cols], "runs"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(cols) + "---|"]
    for m in models:
        st = status.loc[m]
        label = _md_escape(str(st["label"]))
        if st["status"] in ("failed", "n/a", "missing"):
            what = ("failed: " + _short(str(st["error"]))) if st["status"] == "failed" else (
                _short(str(st["error"])) or st["status"])
            lines.append("| " + " | ".join([label, _md_escape(what)] + ["—"] * (len(cols) - 1)
                                           + [_runs(summary, m)]) + " |")
            continue
        out = [label]
        for col in cols:
            if (m, *col) not in cell:
                out.append("—")
                continue
            mean, std = cell[(m, *col)]
            text = _fmt(mean, std, digits)
            v = round(mean, digits)
            if not st["ours"] and best_base.get(col) == v:
                text = f"<u>{text}</u>"
            if best.get(col) == v:
                text = f"**{text}**"
            out.append(text)
        out.append(_runs(summary, m))
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


PAIRED_COLUMNS = ["model", "label", "reference", "treatment", "response", "metric", "diff",
                  "lo", "hi", "n"]


def paired_differences(cells: list[dict], summary: pd.DataFrame, metric: str, *,
                       reference: str | None = None) -> pd.DataFrame:
    """Each model's paired difference of ``metric`` to a reference model, per column.

    ``metric`` is one of ``PAIRED_METRICS``: Qini and AUUC (replicates over resampled
    test rows, every dataset) or PEHE and the ATE bias (ground truth). The reference
    of a (treatment, response) column is ``reference`` when given, else the best
    baseline (``ours`` False) there by ``PAIRED_REFERENCE_BY[metric]`` (the highest
    mean Qini / AUUC, the lowest mean PEHE). Cells pair up by (seed, split); within a
    pair both models were scored on the same resampled rows. The interval is
    ``hmum.metrics.truth.paired_difference``'s hierarchical bootstrap over seeds and
    the replicates (95 %).

    Returns rows (model, label, reference, treatment, response, metric, diff, lo, hi, n);
    empty when no cell has replicates of ``metric``.
    """
    from hmum.metrics.truth import paired_difference

    reps: dict[tuple, dict[tuple, np.ndarray]] = {}  # (model, t, r) -> {(seed, split): (B,)}
    for c in cells:
        if c.get("status") != "ok":
            continue
        for m in c["metrics"]:
            if metric in m.get("replicates", {}):
                reps.setdefault((c["model"], m["treatment"], m["response"]), {})[
                    (c["seed"], c["split"])] = np.asarray(m["replicates"][metric])
    by = PAIRED_REFERENCE_BY.get(metric, metric)
    higher = METRICS[by][1]
    picked = summary[summary["metric"] == by]
    if not reps or picked.empty:
        return pd.DataFrame()
    labels = dict(zip(summary["model"], summary["label"], strict=False))
    rows = []
    for (t, r), col in picked.groupby(["treatment", "response"], sort=False):
        if reference is not None:
            ref = reference
        else:
            base = col[~col["ours"].astype(bool)]
            if base.empty:
                continue
            ref = str(base.loc[base["mean"].idxmax() if higher else base["mean"].idxmin(),
                               "model"])
        ref_reps = reps.get((ref, t, r), {})
        for model in dict.fromkeys(col["model"]):
            mine = reps.get((model, t, r), {})
            keys = [k for k in mine if k in ref_reps]
            if model == ref or not keys:
                continue
            mean, lo, hi = paired_difference([mine[k] for k in keys],
                                             [ref_reps[k] for k in keys])
            rows.append({"model": model, "label": labels.get(model, model), "reference": ref,
                         "treatment": t, "response": r, "metric": metric,
                         "diff": float(mean), "lo": float(lo), "hi": float(hi),
                         "n": len(keys)})
    return pd.DataFrame(rows)


def paired_table(cells: list[dict], summary: pd.DataFrame, metric: str, *,
                 digits: int = 4, reference: str | None = None) -> list[str]:
    """Markdown lines of :func:`paired_differences` (empty when it is)."""
    df = paired_differences(cells, summary, metric, reference=reference)
    if df.empty:
        return []
    cols = list(dict.fromkeys(zip(df["treatment"], df["response"], strict=True)))
    refs = {(t, r): labels for (t, r), labels in
            df.groupby(["treatment", "response"], sort=False)["reference"].first().items()}
    label_of = dict(zip(summary["model"], summary["label"], strict=False))
    by = PAIRED_REFERENCE_BY.get(metric, metric)
    if reference is not None:
        head = f"## Paired difference in {metric} to {label_of.get(reference, reference)} " \
               "(95 % interval)"
        why = "the reference is the model chosen with --reference"
    else:
        head = f"## Paired difference in {metric} to the best baseline (95 % interval)"
        best = "highest" if METRICS[by][1] else "lowest"
        why = f"the reference per column is the baseline with the {best} mean {by.upper()}"
    over = ("users and seeds" if metric in TRUTH_PAIRED else
            "test rows (the same bootstrap resamples of them for both) and seeds")
    lines = [head, "",
             f"Model minus reference on the same {over}; {why}: "
             + "; ".join(f"{t} / {r}: {label_of.get(refs[(t, r)], refs[(t, r)])}"
                         for t, r in cols) + ". An interval that excludes 0 is marked *.", "",
             "| model | " + " | ".join(f"{t} / {r}" for t, r in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for model in dict.fromkeys(df["model"]):
        out = [_md_escape(str(label_of.get(model, model)))]
        for t, r in cols:
            hit = df[(df["model"] == model) & (df["treatment"] == t) & (df["response"] == r)]
            if hit.empty:
                out.append("—")
                continue
            h = hit.iloc[0]
            sig = "*" if h["lo"] > 0 or h["hi"] < 0 else ""
            out.append(f"{h['diff']:+.{digits}f} [{h['lo']:+.{digits}f}, {h['hi']:+.{digits}f}]"
                       f"{sig}")
        lines.append("| " + " | ".join(out) + " |")
    return lines + [""]


def _runs(summary: pd.DataFrame, model: str) -> str:
    rows = summary[summary["model"] == model]
    r = rows.iloc[0]
    ok = int(rows["n"].max()) if r["status"] not in ("failed", "n/a", "missing") else 0
    total = ok + int(r["n_failed"]) + int(r["n_na"])
    text = f"{ok}/{total}"
    if r["status"] == "partial":
        text += f" ({int(r['n_failed'])} failed: {_md_escape(_short(str(r['error']), 60))})"
    return text


def runs_table(summary: pd.DataFrame) -> list[str]:
    """Markdown lines: every model with its runs, mean fit seconds and status or error."""
    lines = ["## Runs", "", "| model | runs | fit s | status |", "|---|---:|---:|---|"]
    for m in dict.fromkeys(summary["model"]):
        rows = summary[summary["model"] == m]
        r = rows.iloc[0]
        fit = rows[rows["metric"] == "fit_seconds"]
        fit_s = _fmt(fit.iloc[0]["mean"], fit.iloc[0]["std"], 1) if len(fit) else "—"
        st = str(r["status"])
        if st in ("failed", "partial"):
            st += ": " + _md_escape(_short(str(r["error"])))
        elif st == "n/a":
            st = _md_escape(_short(str(r["error"])))
        lines.append(f"| {_md_escape(str(r['label']))} | {_runs(summary, m).split(' (')[0]} "
                     f"| {fit_s} | {st} |")
    return lines


def bench_tables(summary: pd.DataFrame, *, dataset: str = "", settings: dict | None = None,
                 skipped: Sequence[dict] = (), digits: int = 4,
                 cells: list[dict] | None = None, reference: str | None = None) -> str:
    """The Markdown report: a header, one table per metric, paired differences to the
    best baseline (ground-truth data; needs ``cells``), the runs, left-out models."""
    settings = settings or {}
    lines = [f"# hmum bench: {dataset}" if dataset else "# hmum bench", ""]
    seeds = settings.get("seeds")
    if seeds is not None:
        desc = (f"Seeds {seeds} ({settings.get('splits_per_seed', 1)} split(s) per seed); "
                f"K={settings.get('K')} treatments {settings.get('arms', [])[1:]}, "
                f"R={settings.get('R')} responses {settings.get('responses')}; "
                f"trainer overrides {settings.get('trainer') or 'none (paper defaults)'}.")
        if "rows" in settings:
            rw = settings["rows"]
            desc += f" Rows per split: train {rw['train']:,}, valid {rw['valid']:,}, " \
                    f"test {rw['test']:,}."
        lines += [desc, ""]
    if settings.get("partial_truth"):
        lines += [f"Note: {PARTIAL_TRUTH_NOTE}.", ""]
    lines += [
        "Metrics on the test split, mean ± std (sample std) over seeds × replications. "
        "Qini and AUUC are normalized (1 = perfect ranking, 0 = random). "
        "**Bold**: best per column; <u>underlined</u>: best baseline (best model outside "
        "the HUM family). `runs`: successful cells / cells.", "",
    ]
    for metric, (title, _) in METRICS.items():
        table = metric_table(summary, metric, digits=digits)
        if table is not None:
            lines += [f"## {title}", "", table, ""]
    if cells is not None:
        for metric in PAIRED_METRICS:
            lines += paired_table(cells, summary, metric, digits=digits, reference=reference)
    lines += runs_table(summary) + [""]
    if skipped:
        lines += ["Not run: " + "; ".join(f"{s['name']}: {s['reason']}" for s in skipped), ""]
    return "\n".join(lines)


def _write_results(out: Path, md: str, summary: pd.DataFrame, cells, specs, skipped,
                   settings, paired: pd.DataFrame | None = None) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out / "results.md", "csv": out / "results.csv",
             "json": out / "results.json", "paired_csv": out / "paired.csv"}
    paired = paired if paired is not None else pd.DataFrame()
    tmp = files["paired_csv"].with_name(".paired.csv.tmp")
    paired.reindex(columns=PAIRED_COLUMNS).assign(dataset=settings["dataset"]).to_csv(
        tmp, index=False)
    os.replace(tmp, files["paired_csv"])
    tmp = files["markdown"].with_name(".results.md.tmp")
    tmp.write_text(md + "\n")
    os.replace(tmp, files["markdown"])
    csv = summary.drop(columns=["values"]).assign(dataset=settings["dataset"])
    csv = csv[["dataset", *[c for c in csv.columns if c != "dataset"]]]
    tmp = files["csv"].with_name(".results.csv.tmp")
    csv.to_csv(tmp, index=False)
    os.replace(tmp, files["csv"])
    records = summary.replace({np.nan: None}).to_dict(orient="records")
    _write_json_atomic(files["json"], {
        "settings": settings,
        "models": [s.as_dict() for s in specs or []],
        "skipped": list(skipped),
        "summary": records,
        "paired": paired.replace({np.nan: None}).to_dict(orient="records"),
        "cells": [{k: v for k, v in c.items()} for c in cells],
    })
    return files

