"""The scoring job and the store reads behind ``hmum score`` and ``hmum store get``.

* ``run_score``: score every user into the Parquet record and the uplift store,
  locally (shards one after another) or with Ray Data actors.
* ``read_deltas``: the relative uplifts delta (K x R) of user ids typed on a
  command line, matched exactly against the version's kind of ids.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from hmum.exceptions import DataError

#: An integer user id as typed: plain ASCII decimal, so "007", "+7", " 7" or "٣"
#: are never read as user 7 or 3 (the service matches ids exactly, too).
DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)")

ENGINES = ("local", "ray")


def run_score(model: str | Path, input: str | Path, out: str | Path, store, cfg, *,
              engine: str = "local", namespace: str = "default", workers: int | None = None,
              address: str | None = None,
              progress: Callable[[str, int, int], None] | None = None):
    """Score all users of ``input`` with the model at ``model`` into the record under
    ``out`` and the uplift store ``store`` (a URL, a path or a store object).

    engine: "local" (``hmum.serving.scoring.run_scoring``) or "ray" (Ray Data actors,
    ``hmum.serving.ray_runner.run_scoring_ray``: ``workers`` actors, joining the
    cluster at ``address`` or starting a local one). Both write the same shards,
    files and store content and resume an interrupted run. Returns the report.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "ray":
        from hmum.serving.ray_runner import run_scoring_ray

        return run_scoring_ray(model, input, out, store, cfg, workers=workers, address=address,
                               namespace=namespace, progress=progress)
    if address:
        raise ValueError("address needs engine='ray'")
    from hmum.serving.scoring import run_scoring

    return run_scoring(model, input, out, store, cfg, namespace=namespace, progress=progress)


def parse_user_ids(user_ids: Sequence[str], id_kind: str, version: str) -> np.ndarray:
    """(N,) ids to look up in ``version``: int64 for a version of integer ids (each
    written in plain decimal, within int64), else the strings themselves.

    Raises DataError listing the ids that are not plain decimal integers.
    """
    if id_kind != "int":
        return np.asarray(user_ids, dtype=object)
    bad = [u for u in user_ids if not DECIMAL.fullmatch(u) or not -(2**63) <= int(u) < 2**63]
    if bad:
        raise DataError(f"user ids {bad}: version {version!r} stores integer user ids (int64), "
                        "written in plain decimal such as 7 (no '+', leading zeros or spaces)")
    return np.asarray([int(u) for u in user_ids], dtype=np.int64)


def read_deltas(store, user_ids: Sequence[str], *, version: str | None = None,
                timeout: float = 1.0) -> dict:
    """The delta (K x R) of each user id (as typed) from an open uplift store.

    version: None reads the current version. Returns ``{"version", "treatments",
    "responses", "users": [{"user_id", "found", "delta": {treatment: {response:
    float or None}}}]}``, the users in the order given. Raises DataError when the
    namespace has no current version and none is named, or for ids the version
    cannot hold.
    """
    name = version or store.current()
    if name is None:
        raise DataError(f"namespace {store.namespace!r} has no current version; pass --version")
    info = store.info(name)
    ids = parse_user_ids(user_ids, info.id_kind, name)
    res = store.get(ids, version=name, timeout=timeout)
    treatments = list(info.arms[1:])
    rows = []
    for u, ok, d in zip(user_ids, res.found.tolist(), res.delta, strict=True):
        rows.append({"user_id": u, "found": ok, "delta": {
            t: {r: (float(d[k, j]) if ok else None) for j, r in enumerate(info.responses)}
            for k, t in enumerate(treatments)}})
    return {"version": res.version, "treatments": treatments,
            "responses": list(info.responses), "users": rows}
