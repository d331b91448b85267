"""Helpers shared by the scoring tests (local runner, Ray runner, CLI)."""

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import typer

from hmum.cli_serving import score, store_app
from hmum.serving import scoring

DAY = dt.date(2024, 1, 2)
CFG = {"shard_rows": 500, "date": DAY, "sample_reads": 64}  # 3000 users -> 6 shards


def snapshot(part_dir: Path, store, version: str) -> dict:
    """Everything a run leaves behind: every record file's bytes and the store's content."""
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(part_dir.iterdir()) if p.name != scoring.LOCK_FILE}
    ids, delta = store.dump(version)
    return {"files": files, "ids": ids, "delta": delta, "count": store.count(version),
            "shards": store.loaded_shards(version), "status": store.info(version).status,
            "pointers": store.pointers()}


def assert_same(a: dict, b: dict) -> None:
    assert a["files"] == b["files"]
    np.testing.assert_array_equal(a["ids"], b["ids"])
    np.testing.assert_array_equal(a["delta"], b["delta"])
    assert (a["count"], a["shards"], a["status"], a["pointers"]) == (
        b["count"], b["shards"], b["status"], b["pointers"])


class Boom(RuntimeError):
    pass


def fail_on(monkeypatch, target, name: str, nth: int, when=lambda *a, **k: True):
    """Make ``target.name`` raise Boom on its nth matching call."""
    orig = getattr(target, name)
    calls = {"n": 0}

    def wrapped(*a, **k):
        if when(*a, **k):
            calls["n"] += 1
            if calls["n"] == nth:
                raise Boom(f"injected failure in {name}")
        return orig(*a, **k)

    monkeypatch.setattr(target, name, wrapped)


class ConstantModel:
    """A stand-in estimator for ``run_scoring``: the users table's features (seg, x1),
    the given arms and responses, y_hat (N, K+1, R) = ``base * (1 + 0.1 * arm)``."""

    def __init__(self, responses, arms=("control", "t1", "t2"), base: float = 2.0) -> None:
        from hmum.data.schema import FeatureSpec, ResponseSpec, Schema

        self.schema = Schema(
            features=[FeatureSpec(name="seg", kind="categorical"),
                      FeatureSpec(name="x1", kind="numeric")],
            arms=list(arms), responses=[ResponseSpec(name=r) for r in responses])
        self.base = base

    def predict_outcomes(self, table, batch_size=None):
        n, k1, r = table.num_rows, self.schema.K + 1, self.schema.R
        per_arm = self.base * (1 + 0.1 * np.arange(k1, dtype=np.float32))
        return np.broadcast_to(per_arm[None, :, None], (n, k1, r)).copy()


#: the score and store commands on a Typer app of their own
app = typer.Typer()
app.command()(score)
app.add_typer(store_app, name="store")
