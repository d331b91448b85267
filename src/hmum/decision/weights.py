"""Value weights without request logs: fixed business weights or per-user weight columns.

The paper learns w per request from request logs (the value-weight model). A team
without those logs decides with one of three other *weights sources*:

* ``fixed``: one weight per response for everyone, e.g. ``usage_time=0.7,video_views=0.3``
  (``parse_weights``);
* ``config``: the same from a JSON file, ``{"usage_time": 0.7, "video_views": 0.3}`` or
  ``{"weights": {...}}`` (``load_weights_config``);
* ``columns``: per-user weights read from columns of the users' table, e.g.
  ``usage_time=w_usage,video_views=w_views`` (``parse_weight_columns`` /
  ``column_weights``).

Weights are normalized to sum 1 (per user for columns); a negative weight, an
all-zero weight vector or a response the model does not predict is refused with a
one-line ``DecisionConfigError``. ``FixedWeights`` and ``UserColumnWeights`` answer
``predict_weights(requests)`` (Nq, R) like a fitted value-weight model, so the
per-request decision path works unchanged when requests are given.

Shapes: w (R,) fixed, w_user (N, R), per request (Nq, R); rows sum to 1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hmum.exceptions import DecisionConfigError

SOURCES = ("value_model", "fixed", "config", "columns")


def _pairs(text: str, what: str, flag: str) -> list[tuple[str, str]]:
    out = []
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise DecisionConfigError(f"{flag}: expected RESPONSE={what}[,RESPONSE={what}...], "
                                      f"got {part!r}")
        out.append((name.strip(), value.strip()))
    if not out:
        raise DecisionConfigError(f"{flag}: expected RESPONSE={what}[,...], got {text!r}")
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DecisionConfigError(f"{flag}: response(s) {dup} given more than once")
    return out


def _check_names(names, responses: Sequence[str], flag: str) -> None:
    unknown = [n for n in names if n not in responses]
    if unknown:
        raise DecisionConfigError(f"{flag}: unknown response(s) {unknown}; the model's responses "
                                  f"are {list(responses)}")


def normalize_weights(values: Mapping[str, float], responses: Sequence[str], *,
                      flag: str = "--weights") -> np.ndarray:
    """w (R,) in the order of ``responses`` from {response: weight}; missing ones are 0.

    Raises DecisionConfigError for an unknown response, a negative or non-finite
    weight, or weights that are all zero.
    """
    _check_names(list(values), responses, flag)
    w = np.zeros(len(responses), dtype=np.float64)
    for name, v in values.items():
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise DecisionConfigError(f"{flag}: weight of {name!r} must be a number, "
                                      f"got {v!r}") from None
        if not np.isfinite(x) or x < 0:
            raise DecisionConfigError(f"{flag}: weight of {name!r} must be a finite number >= 0, "
                                      f"got {v!r}")
        w[list(responses).index(name)] = x
    if w.sum() <= 0:
        raise DecisionConfigError(f"{flag}: the weights are all zero; give at least one "
                                  "response a positive weight")
    return w / w.sum()


def parse_weights(text: str, responses: Sequence[str], *, flag: str = "--weights") -> np.ndarray:
    """w (R,) from ``"usage_time=0.7,video_views=0.3"`` (normalized to sum 1)."""
    return normalize_weights(dict(_pairs(text, "WEIGHT", flag)), responses, flag=flag)


def load_weights_config(path: str | Path, responses: Sequence[str], *,
                        flag: str = "--weights-config") -> np.ndarray:
    """w (R,) from a JSON file: {response: weight} or {"weights": {response: weight}}."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise DecisionConfigError(f"{flag}: no such file {str(p)!r}") from None
    except (OSError, ValueError) as e:
        raise DecisionConfigError(f"{flag}: cannot read {str(p)!r} as JSON ({e})") from None
    if isinstance(d, dict) and isinstance(d.get("weights"), dict):
        d = d["weights"]
    if not isinstance(d, dict) or not d:
        raise DecisionConfigError(f"{flag}: expected a JSON object {{response: weight}} or "
                                  f"{{\"weights\": {{...}}}} in {str(p)!r}")
    return normalize_weights(d, responses, flag=flag)


def parse_weight_columns(text: str | Sequence[str], responses: Sequence[str], *,
                         flag: str = "--weight-column") -> dict[str, str]:
    """{response: column} from ``"usage_time=w_usage,video_views=w_views"`` (or a list of
    such strings, one per repeated flag). Every response needs a column."""
    items = [text] if isinstance(text, str) else list(text)
    pairs = _pairs(",".join(items), "COLUMN", flag)
    mapping = dict(pairs)
    _check_names(list(mapping), responses, flag)
    missing = [r for r in responses if r not in mapping]
    if missing:
        raise DecisionConfigError(f"{flag}: no column for response(s) {missing}; give one "
                                  "column per response, e.g. "
                                  + ",".join(f"{r}=w_{r}" for r in responses))
    return mapping


def column_weights(columns: Mapping[str, np.ndarray], mapping: Mapping[str, str],
                   responses: Sequence[str], *, flag: str = "--weight-column") -> np.ndarray:
    """w_user (N, R): the weight columns (``columns``: {column name: (N,) values}) in the
    order of ``responses``, each row normalized to sum 1.

    Raises DecisionConfigError naming the column for NaN / negative values and
    the number of rows whose weights are all zero.
    """
    w = np.stack([np.asarray(columns[mapping[r]], dtype=np.float64) for r in responses], axis=1)
    for j, r in enumerate(responses):
        bad = ~np.isfinite(w[:, j]) | (w[:, j] < 0)
        if bad.any():
            raise DecisionConfigError(f"{flag}: column {mapping[r]!r} ({r}) has {int(bad.sum())} "
                                      "value(s) that are missing, non-finite or negative; "
                                      "weights must be finite numbers >= 0")
    total = w.sum(axis=1)
    zero = total <= 0
    if zero.any():
        raise DecisionConfigError(f"{flag}: {int(zero.sum())} row(s) have all weights zero "
                                  f"(columns {[mapping[r] for r in responses]}); every row needs "
                                  "a positive weight")
    return w / total[:, None]


class FixedWeights:
    """The same w (R,) for every request: answers ``predict_weights`` like a value-weight
    model (``responses_``; (Nq, R) float64)."""

    def __init__(self, w: np.ndarray, responses: Sequence[str]):
        self.w_ = np.asarray(w, dtype=np.float64)
        self.responses_ = list(responses)

    def predict_weights(self, requests) -> np.ndarray:
        n = requests.num_rows if hasattr(requests, "num_rows") else len(requests)
        return np.broadcast_to(self.w_, (n, len(self.w_))).copy()


class UserColumnWeights:
    """Each request gets its user's weights (w_user (N, R) of users ``user_ids`` (N,)),
    joined on the requests' ``user_id``; requests of unknown users get the mean weight."""

    def __init__(self, user_ids: np.ndarray, w_user: np.ndarray, responses: Sequence[str]):
        self.user_ids_ = np.asarray(user_ids)
        self.w_user_ = np.asarray(w_user, dtype=np.float64)
        self.responses_ = list(responses)

    def predict_weights(self, requests) -> np.ndarray:
        rid = np.asarray(requests.column("user_id").to_numpy())
        order = np.argsort(self.user_ids_, kind="stable")
        pos = np.searchsorted(self.user_ids_[order], rid)
        pos = np.clip(pos, 0, len(order) - 1)
        found = self.user_ids_[order][pos] == rid
        w = np.where(found[:, None], self.w_user_[order][pos], self.w_user_.mean(axis=0))
        return w


def weights_record(source: str, *, weights: np.ndarray | None = None,
                   responses: Sequence[str] = (), columns: Mapping[str, str] | None = None,
                   path: str | None = None) -> dict:
    """The JSON-able description of a weights source kept in the decision config's ``fit``."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    rec: dict = {"source": source}
    if weights is not None:
        rec["weights"] = {r: float(v) for r, v in zip(responses, weights, strict=True)}
    if columns is not None:
        rec["columns"] = dict(columns)
    if path is not None:
        rec["path"] = str(path)
    return rec
