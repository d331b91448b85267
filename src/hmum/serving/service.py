"""The online decision service (paper §6.2, DDM online): ``create_app(config)``.

Per request: the value-weight model (ONNX Runtime) turns the request's candidate
and recent items into value weights w (R,); the user's relative uplifts delta
(K, R) come from the uplift store (``hmum.serving.store``); phi = delta @ w (K,)
and treatment k is enabled when phi_k > sigma (eqs. 10, 11) -- or, when the store
version holds a frozen decision rule (``hmum score --decision-config``;
``hmum.decision.rules``: per-treatment thresholds, guardrail multipliers, exclusive
mode), by that rule, so a switch or rollback of the store moves the rule with it.
A rule with a ``bound`` enables k where the lower confidence bound of its score clears
sigma_k, from the members' spread stored beside delta (``VersionInfo.members``,
``hmum.decision.bounds.spread_interval``) weighed with this request's w; the decision
then also carries ``phi_lower`` (K,), that lower bound.

Endpoints
---------
``POST /v1/decide``        one request  -> one decision
``POST /v1/decide/batch``  ``{"requests": [...]}`` (<= ``max_batch``) -> ``{"decisions": [...]}``
``GET  /healthz``          the process is up (always 200)
``GET  /readyz``           200 when the model is verified and the store answers, else 503
``GET  /metrics``          Prometheus text format

Request (JSON)::

    {"user_id": 1001,                     # int64 or a string of 1..128 characters
     "candidates": {"category": [3, 7, ...], "author_tier": [...], ...},
     "recent":     {"category": [...], ...}}

one list of integer item codes per item field of the model (every field, no
other); within ``candidates`` (and within ``recent``) the lists have the same
length L (Lr), 1 <= L <= ``max_candidates``, 1 <= Lr <= ``max_recent``; codes are
integers in [0, ``max_item_code``]. Anything else (malformed JSON, wrong types,
floats, NaN, inf, too many items, unknown or missing fields) is a 422 whose
``message`` names the field, e.g. ``candidates.category[3]: Input should be a
valid integer``.

Decision (JSON)::

    {"user_id": 1001,
     "weights": {"usage_time": 0.62, "video_views": 0.38},   # w (R,), sums to 1
     "phi": {"t1": 0.013, "t2": -0.002} | null,              # (K,); null without delta
     "enabled": ["t1"],                                       # treatments with phi > sigma
     "phi_lower": {"t1": 0.004, "t2": -0.011},               # only with a bound rule
     "degraded": false,
     "reason": null | "unknown_user" | "store_timeout" | "store_error" | "breaker_open"
               | "store_layout",
     "model_version": "3fa2b9c01d2e", "store_version": "20240102-3fa2b9c01d2e" | null}

Defaults (documented behaviour): an **unknown user** gets no treatment
(``enabled: []``), ``reason: "unknown_user"``, not degraded. When the store is
down, slow (a read past ``store_timeout_ms``) or its breaker is open, the
decision is the control decision (no treatment), ``degraded: true`` with the
reason, counted in ``hmum_degraded_total`` -- never a 5xx.

Circuit breaker: after ``breaker_failures`` consecutive store errors it opens and
requests skip the store (degraded at once, no waiting on a dead server); after
``breaker_cooldown_s`` one request probes it (half-open): success closes it,
failure re-opens it for another cool-down. So the service recovers by itself.

Start-up checks (``load_model``): the artifact's manifest sums, the ONNX graph's
fields and responses against the artifact's, and ONNX Runtime's w against
PyTorch's on ``verify_samples`` random requests (max |diff| <= ``verify_atol``):
this proves the .onnx file computes the verified weights' function, so it needs
no sum of its own. A model failing a check stops ``create_app`` with
``ModelCheckError`` (``hmum serve`` prints the reason and exits), unless
``keep_serving_on_error``: then the process stays up (``/healthz``), ``/readyz``
and both decide endpoints answer 503 with the reason.

Refusals before any decision (JSON ``{"message": ...}``): 401 without the bearer
token when one is configured (``Authorization: Bearer <token>``; every endpoint
but ``/healthz`` and ``/readyz``, whose details it unlocks); 429 with
``Retry-After`` past the client's rate limit; 415 when a POST's
``Content-Type`` is not ``application/json``; 413 for a body larger than the
largest valid request; 503 with ``Retry-After`` when ``max_batches_in_flight``
large batches are being processed. A 422 lists at most ``MAX_ERRORS`` errors
(``error_count`` says how many there were), each message and field name cut to a
few hundred characters, and never echoes the input.

The two decide endpoints are answered by a pure ASGI middleware (``_FastPath``)
before FastAPI's routing; the FastAPI routes run the same handlers (``_Handlers``)
and document the bodies. The token check (Starlette's
``AuthenticationMiddleware``) and the rate limit (``_RateLimit``) wrap both.

Small requests run on the event loop: a thread hand-off costs ~60 µs (p99 ~150
µs on busy cores), about as much as a whole small decision's model run, and the
store read is bounded by its deadline (a few ms, usually ~0.1 ms). A batch is
decoded one request at a time (``_request_spans`` finds the requests by scanning
the body's brackets and strings), yielding to the event loop after every ~1 ms of
work, and a call with more than ``offload_items`` items runs its value-weight
model (ONNX Runtime, which releases the GIL) on one of ``model_threads`` worker
threads, at a lower CPU priority: pydantic's JSON parser holds the GIL for a whole
body (~100 ms for 256 requests of 512 + 512 items), so a worker thread alone would
not keep the event loop free; slices do. A batch holds at most ``max_batch``
requests and ``max_batch_items`` candidate + recent items in all (422 beyond,
naming the request where it went over); the body limit follows from both.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    SimpleUser,
)

from hmum.exceptions import ConfigError, ModelCheckError, StoreTimeout
from hmum.serving.config import ServiceConfig
from hmum.serving.store import Lookup

try:  # orjson: several times faster serialization on the hot path
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
except ImportError:  # pragma: no cover - orjson is a dependency of the service extra
    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, allow_nan=False).encode()


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
JSON = "application/json"
#: endpoints open without the token (probes); /readyz's details still need it
PROBES = frozenset({"/healthz", "/readyz"})
#: a 422 lists at most this many errors (a 13 kB body of bad codes made a 275 kB answer)
MAX_ERRORS = 10
_MAX_MSG, _MAX_LOC_PART = 300, 64  # characters of one error message / one field name

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------
# request schema (validated with pydantic; the model-dependent limits afterwards)
# --------------------------------------------------------------------------------------

Code = Annotated[int, Field(strict=True, ge=0, le=2**31 - 1)]
UserId = Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX)] | Annotated[
    str, Field(strict=True, min_length=1, max_length=128)]


class DecideRequest(BaseModel):
    """One user request: the user and the value-weight model's inputs (item codes)."""

    model_config = ConfigDict(extra="forbid")

    user_id: UserId
    candidates: dict[str, list[Code]]
    recent: dict[str, list[Code]]


class BatchRequest(BaseModel):
    """Many requests at once (one store round trip for all users)."""

    model_config = ConfigDict(extra="forbid")

    requests: list[DecideRequest] = Field(min_length=1)


class RequestError(ValueError):
    """A request that passed the schema but not the model's limits: (loc, message)."""

    def __init__(self, loc: Sequence[str | int], msg: str) -> None:
        super().__init__(msg)
        self.loc, self.msg = tuple(loc), msg


def _loc_str(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _error_body(errors: list[dict]) -> bytes:
    """422 payload: {"message": first error naming its field, "detail": at most
    MAX_ERRORS errors, "error_count": all of them}; names and messages clipped (a
    field name is the client's text), inputs never echoed."""
    detail = []
    for e in errors[:MAX_ERRORS]:
        loc = [p if isinstance(p, int) else _clip(str(p), _MAX_LOC_PART) for p in e["loc"]]
        detail.append({"loc": ["body", *loc], "msg": _clip(str(e["msg"]), _MAX_MSG),
                       "type": e["type"]})
    first = detail[0]
    return _dumps({"message": f"{_loc_str(first['loc'][1:])}: {first['msg']}",
                   "detail": detail, "error_count": len(errors)})


# --------------------------------------------------------------------------------------
# circuit breaker
# --------------------------------------------------------------------------------------


class CircuitBreaker:
    """closed --(``failures`` consecutive errors)--> open --(``cooldown_s``)--> half-open:
    one probe; its success closes the breaker, its failure re-opens it.

    ``clock`` is injectable so tests need not sleep. Thread-safe (one lock).
    """

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, failures: int = 5, cooldown_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or cooldown_s <= 0:
            raise ValueError(f"failures must be >= 1 and cooldown_s > 0, got {failures}, "
                             f"{cooldown_s}")
        self.failures, self.cooldown_s, self.clock = int(failures), float(cooldown_s), clock
        self.state = self.CLOSED
        self.consecutive = 0
        self.opened_at = -math.inf
        self.opened_total = 0
        self._probe = False  # a half-open probe is in flight
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """May the caller try the store now? (Open: no, until the cool-down is over.)"""
        if self.state == self.CLOSED:  # the common case, without the lock
            return True
        with self._lock:
            if self.state == self.OPEN and self.clock() - self.opened_at >= self.cooldown_s:
                self.state, self._probe = self.HALF_OPEN, False
            if self.state == self.HALF_OPEN and not self._probe:
                self._probe = True
                return True
            return self.state == self.CLOSED

    def success(self) -> None:
        if self.state == self.CLOSED and self.consecutive == 0:
            return
        with self._lock:
            self.state, self.consecutive, self._probe = self.CLOSED, 0, False

    def failure(self) -> None:
        with self._lock:
            self.consecutive += 1
            if self.state == self.HALF_OPEN or self.consecutive >= self.failures:
                if self.state != self.OPEN:
                    self.opened_total += 1
                self.state, self.opened_at, self._probe = self.OPEN, self.clock(), False


# --------------------------------------------------------------------------------------
# the model (loaded and verified once)
# --------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """The verified value-weight model as the service runs it.

    Attributes:
        session: OnnxValueWeights; ``weights(cand (N, Fc, L), recent (N, Fr, Lr)) -> (N, R)``.
        cand_fields, recent_fields, responses: Fc, Fr and R names, in the graph's order.
        model_version: 12 hex of the artifact's sums (as ``hmum score`` names it).
        onnx_max_abs_diff: max |w_onnx - w_torch| found by the start-up check.
    """

    session: Any
    cand_fields: list[str]
    recent_fields: list[str]
    responses: list[str]
    model_version: str
    onnx_max_abs_diff: float


def load_model(config: ServiceConfig) -> LoadedModel:
    """Verify and load the value-weight model: manifest sums, ONNX metadata, ONNX vs
    PyTorch on ``config.verify_samples`` seeded random requests. Raises ArtifactError."""
    from hmum.exceptions import ArtifactError
    from hmum.models.value_weight import OnnxValueWeights, ValueWeightEstimator
    from hmum.serving.scoring import model_version_of

    path, onnx_path = config.value_weight_model, config.value_weight_onnx
    version = model_version_of(path)  # verifies the manifest's sums
    est = ValueWeightEstimator.load(path)
    if onnx_path is None or not onnx_path.is_file():
        raise ArtifactError(f"ONNX graph {onnx_path} not found (export it with "
                            "`hmum train-value-weights --onnx` or `hmum ddm`)")
    session = OnnxValueWeights(onnx_path, threads=config.onnx_threads)
    for key, want in (("cand_fields", est.cand_fields_), ("recent_fields", est.recent_fields_),
                      ("responses", est.responses_)):
        got = session.meta.get(key)
        if got != list(want):
            raise ArtifactError(f"{onnx_path}: {key} {got} differ from the artifact's {want}; "
                                "the ONNX graph was exported from another model")
    rng = np.random.default_rng(0)
    n = config.verify_samples
    # codes up to the cardinality: also exercises the out-of-range bucket
    cand = np.stack([rng.integers(0, c + 1, (n, est.n_candidates_))
                     for c in est.cand_cardinalities_], axis=1)
    recent = np.stack([rng.integers(0, c + 1, (n, max(est.n_recent_, 1)))
                       for c in est.recent_cardinalities_], axis=1)
    w_torch = est.predict_weights((cand, recent))
    w_onnx = session.weights(cand, recent)
    diff = float(np.max(np.abs(w_onnx - w_torch))) if w_onnx.shape == w_torch.shape else math.inf
    if not math.isfinite(diff) or diff > config.verify_atol:
        raise ArtifactError(f"{onnx_path}: ONNX Runtime's weights differ from PyTorch's by "
                            f"{diff:.3g} > verify_atol {config.verify_atol:g} on "
                            f"{n} sample requests; refusing to serve it")
    return LoadedModel(session, list(est.cand_fields_), list(est.recent_fields_),
                       list(est.responses_), version, diff)


# --------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------


class Metrics:
    """Prometheus metrics of one app (own registry: several apps per process in tests)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.latency = Histogram(
            "hmum_decision_latency_seconds", "in-process time of one decide call",
            ["endpoint"], registry=r,
            buckets=(5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0))
        self.decisions = Counter("hmum_decisions_total",
                                 "decisions by enabled treatment ('none': no treatment)",
                                 ["treatment"], registry=r)
        self.degraded = Counter("hmum_degraded_total",
                                "control decisions made because the store failed",
                                ["reason"], registry=r)
        self.unknown = Counter("hmum_unknown_users_total", "users without delta in the store",
                               registry=r)
        self.store_errors = Counter("hmum_store_errors_total", "failed store reads", ["kind"],
                                    registry=r)
        self.invalid = Counter("hmum_invalid_requests_total", "422 answers", registry=r)
        self.rejected = Counter("hmum_rejected_requests_total", "requests refused before a "
                                "decision (unauthorized, rate_limit, content_type, too_large, "
                                "busy, model_not_loaded)", ["reason"], registry=r)
        self.breaker = Gauge("hmum_breaker_open", "1 while the store breaker is open or "
                             "half-open", registry=r)
        self.version = Gauge("hmum_version_info", "model and store versions in use (value 1)",
                             ["model_version", "store_version"], registry=r)
        self.ready = Gauge("hmum_ready", "1 when model verified and store reachable",
                           registry=r)
        self._version_labels: tuple[str, str] | None = None

    def set_versions(self, model_version: str, store_version: str | None) -> None:
        labels = (model_version, store_version or "")
        if labels != self._version_labels:  # a switch: the old pair stops being reported
            if self._version_labels is not None:
                self.version.remove(*self._version_labels)
            self.version.labels(*labels).set(1)
            self._version_labels = labels


# --------------------------------------------------------------------------------------
# the decision service (framework-free: the app below only adapts HTTP)
# --------------------------------------------------------------------------------------


class DecisionService:
    """Value weights (ONNX) + delta (store) -> decisions; owns the breaker and metrics.

    Built by ``create_app``; usable alone (in-process benchmarks, tests).
    ``store`` may be given (an ``UpliftStore``); otherwise it is opened from the config.
    """

    def __init__(self, config: ServiceConfig, *, store=None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.metrics = Metrics()
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_cooldown_s, clock)
        self.model: LoadedModel | None = None
        self.model_error: str | None = None
        self.store = store
        self.store_error: str | None = None
        self._timeout = config.store_timeout_ms / 1000.0
        self._layouts: dict[str, tuple[list[str], str | None]] = {}  # version -> (arms, err)
        self._rules: dict[str, Any] = {}  # version -> its frozen DecisionRule, or None
        self.store_version: str | None = None
        self._check_max_code = config.max_item_code < 2**31 - 1  # else pydantic checked it
        self._decision_children: dict[str, Any] = {}
        self._unknown = self.metrics.unknown
        try:
            self.model = load_model(config)
        except Exception as e:  # any failure: never ready, the reason on /readyz
            self.model_error = f"{type(e).__name__}: {e}"
            if config.keep_serving_on_error:  # else create_app raises it: said once
                log.error("value-weight model %s failed its start-up checks: %s; serving 503 "
                          "(keep_serving_on_error)", config.value_weight_model, self.model_error)
        if self.store is None:
            self._open_store()
        if self.model is not None:
            self.metrics.set_versions(self.model.model_version, None)

    # --- store access -----------------------------------------------------------------
    def _open_store(self) -> None:
        from hmum.serving.store import open_store

        c = self.config
        kw: dict[str, Any] = {"read_timeout": self._timeout}
        if c.store_url.startswith(("redis://", "rediss://", "unix://")):
            kw.update(write_timeout=c.store_admin_timeout_s,
                      connect_timeout=c.store_connect_timeout_s, pointer_ttl=c.pointer_ttl_s)
        try:
            self.store = open_store(c.store_url, c.namespace, **kw)
            self.store_error = None
        except Exception as e:
            self.store, self.store_error = None, f"{type(e).__name__}: {e}"

    def _layout(self, version: str) -> tuple[list[str], str | None]:
        """(treatment names (K,), error or None) of a store version, checked once."""
        got = self._layouts.get(version)
        if got is None:
            info = self.store.info(version)
            err = None
            if info.responses != self.model.responses:
                err = (f"store version {version!r} holds responses {info.responses}, the model "
                       f"predicts weights for {self.model.responses}")
            self._rules[version] = None
            if err is None:
                err = self._version_rule(version, info)
            got = self._layouts[version] = (list(info.arms[1:]), err)
        return got

    def _version_rule(self, version: str, info) -> str | None:
        """Read the decision rule frozen into a version (if any); its error or None."""
        from hmum.decision.rules import rule_from_version_extra
        from hmum.exceptions import DecisionConfigError

        try:
            rule = rule_from_version_extra(info.extra, source=f"store version {version!r}")
        except DecisionConfigError as e:  # altered or malformed: the version is unusable
            return str(e)
        if rule is not None and (list(rule.responses) != list(self.model.responses)
                                 or list(rule.treatments) != list(info.arms[1:])):
            return (f"store version {version!r}: its decision rule is for responses "
                    f"{rule.responses} and treatments {rule.treatments}")
        if rule is not None and rule.bound is not None and info.members is None:
            return (f"store version {version!r}: its decision rule switches on a lower bound "
                    "of phi, but the version holds no members' spread (score it with hmum "
                    "score --decision-config and a HUM with several members)")
        self._rules[version] = rule
        return None

    def lookup(self, user_ids: list) -> tuple[Any, str | None]:
        """(Lookup or None, failure reason or None) for user_ids (n,), via the breaker."""
        if not self.breaker.allow():
            return None, "breaker_open"
        try:
            if self.store is None:
                self._open_store()
                if self.store is None:
                    raise ConnectionError(self.store_error)
            res = self.store.get(user_ids, timeout=self._timeout)
            if res.version not in self._layouts:
                self._layout(res.version)
        except StoreTimeout:
            self.metrics.store_errors.labels("timeout").inc()
            self._fail()
            return None, "store_timeout"
        except ValueError:
            # an id the store cannot hold (a string id for integer ids): that user has no
            # delta; in a mixed batch the integer ids are still looked up
            keep = [i for i, u in enumerate(user_ids) if isinstance(u, int)]
            if not keep or len(keep) == len(user_ids):
                return _NOT_FOUND, None
            sub, reason = self.lookup([user_ids[i] for i in keep])
            if sub is None or sub is _NOT_FOUND:
                return sub, reason
            delta = np.full((len(user_ids), *sub.delta.shape[1:]), np.nan, np.float32)
            found = np.zeros(len(user_ids), dtype=bool)
            delta[keep], found[keep] = sub.delta, sub.found
            return Lookup(delta, found, sub.version), None
        except Exception as e:  # connection refused/reset, a StoreError, a SQLite error
            self.metrics.store_errors.labels(type(e).__name__).inc()
            self._fail()
            return None, "store_error"
        if self.breaker.state != CircuitBreaker.CLOSED or self.breaker.consecutive:
            self.breaker.success()
            self.metrics.breaker.set(0)
        return res, None

    def _fail(self) -> None:
        self.breaker.failure()
        if self.breaker.state != CircuitBreaker.CLOSED:
            self.metrics.breaker.set(1)

    # --- decisions -------------------------------------------------------------------
    def codes(self, mapping: dict[str, list[int]], fields: list[str], limit: int,
              what: str) -> np.ndarray:
        """Item codes (F, L) int64 of one request's ``mapping`` (field -> codes).
        Raises RequestError naming the field."""
        a = None
        if len(mapping) == len(fields):
            try:  # the common case in one numpy call; any problem: the slow path below
                a = np.array([mapping[f] for f in fields], dtype=np.int64)
            except (KeyError, ValueError):
                a = None
        if a is None or a.ndim != 2:
            self._codes_error(mapping, fields, what)
        n = a.shape[1]
        if n < 1 or n > limit:
            raise RequestError((what, fields[0]), f"must hold between 1 and {limit} items, "
                               f"got {n}")
        if self._check_max_code and a.max() > self.config.max_item_code:
            raise RequestError((what,), f"item codes must be <= {self.config.max_item_code}")
        return a

    @staticmethod
    def _codes_error(mapping: dict[str, list[int]], fields: list[str], what: str) -> None:
        """Raise the RequestError that names what is wrong with ``mapping``."""
        missing = [f for f in fields if f not in mapping]
        if missing:
            raise RequestError((what, missing[0]), f"field required (the model reads "
                               f"{what} fields {fields})")
        extra = sorted(set(mapping) - set(fields))
        if extra:
            raise RequestError((what, extra[0]), f"unknown item field (the model reads "
                               f"{what} fields {fields})")
        n = len(mapping[fields[0]])
        for f in fields:
            if len(mapping[f]) != n:
                raise RequestError((what, f), f"holds {len(mapping[f])} items, "
                                   f"{what}.{fields[0]} holds {n}; every field must list "
                                   "the same items")
        raise RequestError((what,), "item codes could not be read")  # pragma: no cover

    def prepare(self, req: DecideRequest) -> tuple[Any, np.ndarray, np.ndarray]:
        """(user id, cand (Fc, L), recent (Fr, Lr)) of a validated request."""
        m, c = self.model, self.config
        return (req.user_id, self.codes(req.candidates, m.cand_fields, c.max_candidates,
                                        "candidates"),
                self.codes(req.recent, m.recent_fields, c.max_recent, "recent"))

    def weights(self, items: list[tuple[Any, np.ndarray, np.ndarray]]) -> np.ndarray:
        """w (n, R) float32 of n prepared requests: one ONNX run per group of equal
        (L, Lr) (normally one group)."""
        sess = self.model.session
        if len(items) == 1:
            _, c0, r0 = items[0]
            return sess.weights(c0[None], r0[None])
        w = np.empty((len(items), len(self.model.responses)), dtype=np.float32)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (_, c, r) in enumerate(items):
            groups.setdefault((c.shape[1], r.shape[1]), []).append(i)
        for idx in groups.values():
            w[idx] = sess.weights(np.stack([items[i][1] for i in idx]),
                                  np.stack([items[i][2] for i in idx]))
        return w

    def decide(self, items: list[tuple[Any, np.ndarray, np.ndarray]],
               w: np.ndarray | None = None) -> list[dict]:
        """Decisions for n prepared requests [(user id, cand (Fc, L), recent (Fr, Lr))].

        w (n, R) from ONNX (or given: computed on a worker thread), delta (n, K, R)
        from one store read for all users, phi (n, K) = einsum("nkr,nr->nk"),
        enabled = phi > sigma, or by the store version's frozen decision rule. Returns n
        decision dicts (see the module docstring).
        """
        return list(self.decisions(items, w))

    def decisions(self, items: list[tuple[Any, np.ndarray, np.ndarray]],
                  w: np.ndarray | None = None) -> Iterator[dict]:
        """``decide`` one decision at a time (a large batch yields to the event loop
        between them); the store is read once, for all n, before the first."""
        m = self.model
        n = len(items)
        w = self.weights(items) if w is None else w
        res, reason = self.lookup([it[0] for it in items])
        treatments: list[str] = []
        phi = enabled = lower = None
        store_version = None
        if res is not None and res is not _NOT_FOUND:
            treatments, err = self._layouts[res.version]
            store_version = res.version
            if err is not None:  # a store of another model family: unusable, control
                res, reason = None, "store_layout"
                self.metrics.store_errors.labels("layout").inc()
            else:
                # n == 1: a plain matmul is ~2x cheaper than einsum at this size
                phi = (res.delta[0] @ w[0])[None] if n == 1 else \
                    np.einsum("nkr,nr->nk", res.delta, w)
                rule = self._rules.get(res.version)
                # NaN rows (unknown users): False either way
                if rule is None:
                    enabled = (phi > self.config.sigma).tolist()
                elif rule.bound is None:
                    enabled = rule.decide(res.delta, w).tolist()
                else:  # the rule's score's lower bound, from the members' spread
                    lower = rule.lower_scores(res.spread, res.members, w)
                    enabled = rule.decide(res.delta, w, score=lower).tolist()
                    lower = lower.tolist()
                phi = phi.tolist()
        if store_version != self.store_version and store_version is not None:
            self.store_version = store_version
            self.metrics.set_versions(m.model_version, store_version)
        wl = w.tolist()
        count = self._count
        for i in range(n):
            d = {"user_id": items[i][0], "weights": dict(zip(m.responses, wl[i], strict=True)),
                 "phi": None, "enabled": [], "degraded": reason is not None, "reason": reason,
                 "model_version": m.model_version, "store_version": store_version}
            if reason is not None:
                self.metrics.degraded.labels(reason).inc()
                count("none")
            elif phi is None or not res.found[i]:
                d["reason"] = "unknown_user"
                self._unknown.inc()
                count("none")
            else:
                d["phi"] = dict(zip(treatments, phi[i], strict=True))
                if lower is not None:
                    d["phi_lower"] = dict(zip(treatments, lower[i], strict=True))
                on = [t for t, e in zip(treatments, enabled[i], strict=True) if e]
                d["enabled"] = on
                for t in on or ("none",):
                    count(t)
            yield d

    def _count(self, treatment: str) -> None:
        """decisions_total{treatment} += 1, with the labelled child cached (hot path)."""
        child = self._decision_children.get(treatment)
        if child is None:
            child = self._decision_children[treatment] = \
                self.metrics.decisions.labels(treatment)
        child.inc()

    # --- health ------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, dict]:
        """(ready, details): model loaded and verified, store answers within its deadline."""
        checks: dict[str, Any] = {"model": self.model is not None,
                                  "model_error": self.model_error}
        if self.model is not None:
            checks["model_version"] = self.model.model_version
            checks["onnx_max_abs_diff"] = self.model.onnx_max_abs_diff
        res, reason = (None, "model not loaded") if self.model is None else \
            self.lookup(["0"])  # any id: proves the store and its current version answer
        store_ok = res is not None
        if res is not None and res is not _NOT_FOUND:
            err = self._layouts[res.version][1]
            store_ok, reason = err is None, err
            checks["store_version"] = res.version
        # The store's own account (SQLite: its file deleted, or replaced and reopened;
        # checked afresh, even while the breaker is open) and why it could not be opened.
        health = getattr(self.store, "health", None)
        if callable(health):
            checks["store_health"] = h = health()
            if not h.get("available", True):
                store_ok, reason = False, h.get("reason") or reason
        elif self.store is None and self.store_error:
            reason = self.store_error  # e.g. "StoreError: no store at PATH"
        checks.update(store=store_ok, store_reason=reason, breaker=self.breaker.state)
        ready = bool(self.model is not None and store_ok)
        self.metrics.ready.set(1 if ready else 0)
        return ready, checks


class _NotFound:
    """Sentinel Lookup: no user found (an id the store's id kind cannot hold)."""

    found = np.zeros(0, dtype=bool)


_NOT_FOUND = _NotFound()


# --------------------------------------------------------------------------------------
# the FastAPI app
# --------------------------------------------------------------------------------------


def create_app(config: ServiceConfig | None = None, *, store=None,
               clock: Callable[[], float] = time.monotonic):
    """The FastAPI app of the decision service (see the module docstring).

    ``config`` None: ``load_config()`` (HMUM_* variables, $HMUM_CONFIG_FILE).
    ``store``: an open UpliftStore to use instead of ``config.store_url`` (tests).
    ``clock``: time of the breaker and the rate limit (tests).
    The service object is ``app.state.service``.

    Raises ModelCheckError when the model fails its start-up checks, unless
    ``config.keep_serving_on_error`` (then decisions and /readyz answer 503).
    """
    from fastapi import FastAPI
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.middleware.authentication import AuthenticationMiddleware

    from hmum.serving.config import load_config

    config = config or load_config()
    svc = DecisionService(config, store=store, clock=clock)
    if svc.model is None and not config.keep_serving_on_error:
        if store is None and svc.store is not None:
            svc.store.close()
        raise ModelCheckError(
            f"value-weight model {config.value_weight_model} failed its start-up checks: "
            f"{svc.model_error} (--keep-serving-on-error / keep_serving_on_error keeps the "
            "process up, answering 503 with this reason)")
    app = FastAPI(title="hmum decision service", version="1",
                  description=__doc__.split("\n\n")[0])
    app.state.service = svc

    handlers = app.state.handlers = _Handlers(svc)
    # The hot endpoints are answered by a pure ASGI middleware, before Starlette's
    # routing and Request/Response objects (~20 % of a small request's CPU); the
    # FastAPI routes below run the same handlers and document the bodies in OpenAPI.
    app.add_middleware(_FastPath, handlers=handlers)
    # Added after the fast path, so they wrap it (Starlette: the last added is outermost).
    token = config.token.get_secret_value() if config.token is not None else None
    if token is not None:
        app.add_middleware(AuthenticationMiddleware, backend=_BearerAuth(token),
                           on_error=_auth_error(svc.metrics))
    if config.rate_limit_rps is not None:
        app.add_middleware(_RateLimit, rate=config.rate_limit_rps,
                           burst=config.rate_limit_burst, metrics=svc.metrics, clock=clock)

    async def via_route(request: Request, batch: bool) -> Response:
        limit = handlers.batch_limit if batch else handlers.limit
        declared = request.headers.get("content-length")
        pre = handlers.precheck(
            request.headers.get("content-type", "").encode("latin-1") or None,
            int(declared) if declared is not None and declared.isdigit() else None, limit)
        if pre is not None:
            status, out = pre
        else:
            body = await request.body()
            if len(body) > limit:
                status, out = handlers.too_large(limit)
            else:
                status, out = await handlers.batch(body) if batch else handlers.decide(body)
        return Response(out, status_code=status, media_type=JSON,
                        headers=handlers.extra_headers(status))

    @app.post("/v1/decide", openapi_extra=_openapi_body(DecideRequest))
    async def decide(request: Request) -> Response:
        return await via_route(request, batch=False)

    @app.post("/v1/decide/batch", openapi_extra=_openapi_body(BatchRequest))
    async def decide_batch(request: Request) -> Response:
        return await via_route(request, batch=True)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        ready, checks = svc.readiness()
        body = {"ready": ready, **checks}
        auth = request.scope.get("auth")
        if token is not None and (auth is None or "authenticated" not in auth.scopes):
            # probes need no token; the reasons name files and versions: token holders only
            body = {"ready": ready, "detail": "send the bearer token for the checks"}
        return Response(_dumps(body), status_code=200 if ready else 503, media_type=JSON)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _json_media_type(value: bytes | None) -> bool:
    """Is a Content-Type header ``application/json`` (parameters such as charset allowed)?"""
    return value is not None and value.split(b";", 1)[0].strip().lower() == b"application/json"


class _Handlers:
    """The decide endpoints without a web framework: body bytes -> (status, JSON bytes).

    A single request is parsed and validated by pydantic's JSON parser in one pass
    (no json.loads first); a batch one request at a time (see ``batch``). Errors
    come back in our 422 format.
    """

    def __init__(self, svc: DecisionService) -> None:
        self.svc, c, m = svc, svc.config, svc.model
        self.lat_one = svc.metrics.latency.labels("decide")
        self.lat_batch = svc.metrics.latency.labels("batch")
        # Bodies larger than the largest valid request are refused before parsing:
        # ~12 bytes per item code (digits, comma, space) plus names and the user id.
        fc, fr = (len(m.cand_fields), len(m.recent_fields)) if m is not None else (0, 0)
        self.limit = 2048 + 12 * (fc * c.max_candidates + fr * c.max_recent)
        # a batch: max_batch requests, and at most max_batch_items items in all
        self.batch_limit = 64 + min(self.limit * c.max_batch,
                                    2048 * c.max_batch + 12 * max(fc, fr) * c.max_batch_items)
        self.in_flight = 0  # large batch calls being processed
        self._limiter = None  # anyio.CapacityLimiter of the model threads (made in the loop)

    # --- refusals ----------------------------------------------------------------------
    def precheck(self, content_type: bytes | None, declared: int | None,
                 limit: int) -> tuple[int, bytes] | None:
        """The refusal owed before reading the body (503, 415, 413), else None."""
        if self.svc.model is None:
            return self.not_ready()
        if not _json_media_type(content_type):
            return self.unsupported(content_type)
        if declared is not None and declared > limit:
            return self.too_large(limit)
        return None

    def invalid(self, errors: list[dict]) -> tuple[int, bytes]:
        self.svc.metrics.invalid.inc()
        return 422, _error_body(errors)

    def too_large(self, limit: int) -> tuple[int, bytes]:
        self.svc.metrics.invalid.inc()
        self.svc.metrics.rejected.labels("too_large").inc()
        return 413, _dumps({"message": f"body: larger than {limit} bytes, the most a valid "
                                       "request can take with these limits"})

    def unsupported(self, content_type: bytes | None) -> tuple[int, bytes]:
        self.svc.metrics.rejected.labels("content_type").inc()
        got = "none" if content_type is None else repr(_clip(content_type.decode("latin-1"), 80))
        return 415, _dumps({"message": f"content-type: expected application/json, got {got}"})

    def not_ready(self) -> tuple[int, bytes]:
        self.svc.metrics.rejected.labels("model_not_loaded").inc()
        return 503, _dumps({"message": f"model not loaded: {self.svc.model_error}"})

    def busy(self) -> tuple[int, bytes]:
        self.svc.metrics.rejected.labels("busy").inc()
        n = self.svc.config.max_batches_in_flight
        return 503, _dumps({"message": f"busy: {n} large batches are being processed "
                                       "(max_batches_in_flight); retry shortly"})

    def extra_headers(self, status: int) -> dict[str, str] | None:
        # a 503 while the model is loaded means busy: worth a retry (a missing model is not)
        return {"retry-after": "1"} if status == 503 and self.svc.model is not None else None

    # --- one request ---------------------------------------------------------------------
    def decide(self, body: bytes | bytearray) -> tuple[int, bytes]:
        svc = self.svc
        if svc.model is None:
            return self.not_ready()
        t0 = time.perf_counter()
        try:
            item = svc.prepare(DecideRequest.model_validate_json(body))
        except ValidationError as e:
            return self.invalid(e.errors(include_url=False))
        except RequestError as e:
            return self.invalid([{"loc": e.loc, "msg": e.msg, "type": "value_error"}])
        out = _dumps(svc.decide([item])[0])
        self.lat_one.observe(time.perf_counter() - t0)
        return 200, out

    # --- a batch -------------------------------------------------------------------------
    async def batch(self, body: bytes | bytearray) -> tuple[int, bytes]:
        """A batch call. Bodies larger than the largest single request count against
        ``max_batches_in_flight`` (they are the ones that take long)."""
        if self.svc.model is None:
            return self.not_ready()
        if len(body) <= self.limit:
            return await self._batch(body)
        if self.in_flight >= self.svc.config.max_batches_in_flight:
            return self.busy()
        self.in_flight += 1
        try:
            return await self._batch(body)
        finally:
            self.in_flight -= 1

    async def _batch(self, body: bytes | bytearray) -> tuple[int, bytes]:
        """Decode the requests one at a time (yielding to the event loop after every
        ~1 ms of work), run the model on a worker thread when the call holds more
        than ``offload_items`` items, then read the store and decide on the loop."""
        svc, c = self.svc, self.svc.config
        t0 = time.perf_counter()
        pause = _Pauser()
        spans: list[tuple[int, int]] | None = []
        try:
            for span in _request_spans(body):
                spans.append(span)
                await pause()
        except _Unscannable:
            spans = None
        if not spans:  # another shape, or no request: the whole-body parser says what is wrong
            return self._batch_whole(body, t0)
        if len(spans) > c.max_batch:
            return self._too_many(len(spans))
        items, total = [], 0
        for i, (a, b) in enumerate(spans):
            try:
                item = svc.prepare(DecideRequest.model_validate_json(body[a:b]))
            except ValidationError as e:
                errors = e.errors(include_url=False)
                if any(x["type"] == "json_invalid" for x in errors):
                    return self._batch_whole(body, t0)  # its position in the whole body
                return self.invalid([{**x, "loc": ("requests", i, *x["loc"])} for x in errors])
            except RequestError as e:
                return self.invalid([{"loc": ("requests", i, *e.loc), "msg": e.msg,
                                      "type": "value_error"}])
            total += item[1].shape[1] + item[2].shape[1]
            if total > c.max_batch_items:
                return self._too_many_items(i)
            items.append(item)
            await pause()
        if total > c.offload_items:
            import anyio

            if self._limiter is None:
                self._limiter = anyio.CapacityLimiter(c.model_threads)
            w = await anyio.to_thread.run_sync(_in_background, svc.weights, items,
                                               limiter=self._limiter)
        else:
            w = svc.weights(items)
        decisions = []
        for d in svc.decisions(items, w):
            decisions.append(d)
            await pause()
        out = _dumps({"decisions": decisions})
        self.lat_batch.observe(time.perf_counter() - t0)
        return 200, out

    def _batch_whole(self, body: bytes | bytearray, t0: float) -> tuple[int, bytes]:
        """A batch parsed whole by pydantic: bodies that are not plainly
        ``{"requests": [{...}, ...]}`` (nearly always invalid; the parser names why)."""
        svc, c = self.svc, self.svc.config
        try:
            batch = BatchRequest.model_validate_json(body)
            if len(batch.requests) > c.max_batch:
                return self._too_many(len(batch.requests))
            items, total = [], 0
            for i, r in enumerate(batch.requests):
                try:
                    items.append(svc.prepare(r))
                except RequestError as e:
                    raise RequestError(("requests", i, *e.loc), e.msg) from None
                total += items[-1][1].shape[1] + items[-1][2].shape[1]
                if total > c.max_batch_items:
                    return self._too_many_items(i)
        except ValidationError as e:
            return self.invalid(e.errors(include_url=False))
        except RequestError as e:
            return self.invalid([{"loc": e.loc, "msg": e.msg, "type": "value_error"}])
        out = _dumps({"decisions": svc.decide(items)})
        self.lat_batch.observe(time.perf_counter() - t0)
        return 200, out

    def _too_many(self, n: int) -> tuple[int, bytes]:
        m = self.svc.config.max_batch
        return self.invalid([{"loc": ("requests",), "type": "value_error",
                              "msg": f"at most {m} requests per batch (max_batch), got {n}"}])

    def _too_many_items(self, i: int) -> tuple[int, bytes]:
        m = self.svc.config.max_batch_items
        return self.invalid([{"loc": ("requests", i), "type": "value_error",
                              "msg": f"the batch holds more than {m} candidate and recent items "
                                     "in all (max_batch_items) up to this request; send fewer "
                                     "or shorter requests per batch"}])


_WORKER = threading.local()


def _in_background(fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` on this worker thread at a lower CPU priority (Linux: the thread's
    nice value + 10, set once per thread), so that on busy cores the event loop
    thread, answering small requests, wins the CPU over a large batch's model run."""
    if not getattr(_WORKER, "background", False):
        _WORKER.background = True
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid)
                                                     + 10))
        except (AttributeError, OSError):  # not Linux, or not allowed: normal priority
            pass
    return fn(*args)


class _Pauser:
    """``await pause()``: yields to the event loop once ~1 ms of work has passed since
    the last yield, so requests that arrive meanwhile are answered between slices."""

    __slots__ = ("t",)
    EVERY_S = 0.001

    def __init__(self) -> None:
        self.t = time.perf_counter()

    async def __call__(self) -> None:
        if time.perf_counter() - self.t >= self.EVERY_S:
            import anyio

            await anyio.sleep(0)
            self.t = time.perf_counter()


class _Unscannable(Exception):
    """The body is not plainly ``{"requests": [{...}, ...]}``: parse it whole."""


_STRUCT = re.compile(rb'[{}\[\]"]')
_WS = b" \t\n\r"  # JSON whitespace (bytes.strip() alone would also take \x0b, \x0c)
_OPEN, _CLOSE = {0x7B: 0x7D, 0x5B: 0x5D}, (0x7D, 0x5D)


def _string_end(body: bytes | bytearray, i: int) -> int:
    """Index just past the JSON string opening at ``body[i]`` (a quote); _Unscannable if
    it never closes."""
    j = body.find(b'"', i + 1)
    while j != -1:
        k = j - 1
        while body[k] == 0x5C:  # backslashes before the quote: odd -> it is escaped
            k -= 1
        if (j - 1 - k) % 2 == 0:
            return j + 1
        j = body.find(b'"', j + 1)
    raise _Unscannable


def _request_spans(body: bytes | bytearray):
    """Yield (start, end) of each request object of a batch body
    ``{"requests": [{...}, {...}, ...]}``, found from its structure alone: brackets,
    braces and strings (item-code lists are skipped at C speed). Each span is then
    validated on its own (``DecideRequest``), so a large body is decoded in slices.

    Raises _Unscannable when the body has any other shape (another key, a non-object
    item, unbalanced or mismatched brackets, trailing data): the whole-body parser
    then gives the error. Spans of a scannable body may still be invalid JSON inside
    (``[1,,2]``): their validation says so.
    """
    search, find = _STRUCT.search, body.find
    stack: list[int] = []  # expected closers
    pos = 0
    # outer key's end, requests array's start and end, current item's start, last item's end
    key_end = arr_start = arr_end = start = prev_end = -1
    done = False
    while True:
        m = search(body, pos)
        if m is None:
            break
        i = m.start()
        ch = body[i]
        depth = len(stack)
        if done:
            raise _Unscannable  # anything after the outer object
        if ch == 0x22:  # a string
            end = _string_end(body, i)
            if depth == 1:  # the outer object's one key, "requests"
                if key_end != -1 or body[pos:i].strip(_WS):
                    raise _Unscannable
                try:
                    if json.loads(body[i:end]) != "requests":
                        raise _Unscannable
                except ValueError:
                    raise _Unscannable from None
                key_end = end
            elif depth < 3:
                raise _Unscannable
            pos = end
            continue
        if ch in _OPEN:
            if depth == 0:
                if ch != 0x7B or body[:i].strip(_WS):
                    raise _Unscannable
            elif depth == 1:
                if ch != 0x5B or key_end == -1 or body[key_end:i].strip(_WS) != b":":
                    raise _Unscannable
                arr_start = i + 1
            elif depth == 2:
                gap = body[arr_start if prev_end == -1 else prev_end:i].strip(_WS)
                if ch != 0x7B or gap != (b"" if prev_end == -1 else b","):
                    raise _Unscannable
                start = i
            elif ch == 0x5B:  # a list inside a request: item codes, skipped in one find
                j = find(b"]", i + 1)
                if j != -1 and find(b'"', i + 1, j) == -1 and find(b"[", i + 1, j) == -1 \
                        and find(b"{", i + 1, j) == -1 and find(b"}", i + 1, j) == -1:
                    pos = j + 1
                    continue
            stack.append(_OPEN[ch])
            pos = i + 1
            continue
        # a closer
        if not stack or stack.pop() != ch:
            raise _Unscannable
        if depth == 3:  # a request object ends
            prev_end = i + 1
            yield start, prev_end
        elif depth == 2:  # the requests array ends: no trailing comma
            if prev_end != -1 and body[prev_end:i].strip(_WS):
                raise _Unscannable
            if prev_end == -1 and body[arr_start:i].strip(_WS):
                raise _Unscannable
            key_end = -2  # no second key may follow
            arr_end = i + 1
        elif depth == 1:
            if arr_start == -1 or body[arr_end:i].strip(_WS):
                raise _Unscannable
            if body[i + 1:].strip(_WS):
                raise _Unscannable
            done = True
        pos = i + 1
    if not done:
        raise _Unscannable


class _FastPath:
    """Pure ASGI middleware: POSTs to the two decide endpoints are answered directly
    by ``handlers``; everything else goes on to the FastAPI app."""

    ROUTES = {"/v1/decide": False, "/v1/decide/batch": True}  # path -> is a batch

    def __init__(self, app, handlers: _Handlers) -> None:
        self.app, self.handlers = app, handlers

    async def __call__(self, scope, receive, send) -> None:
        batch = self.ROUTES.get(scope.get("path")) if scope["type"] == "http" else None
        if batch is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        status, out = await self._answer(scope, receive, batch)
        if status == 0:  # the client went away: nobody to answer
            return
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(out)).encode())]
        extra = self.handlers.extra_headers(status)
        if extra:
            headers += [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    async def _answer(self, scope, receive, batch: bool) -> tuple[int, bytes]:
        h = self.handlers
        limit = h.batch_limit if batch else h.limit
        content_type = declared = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length" and value.isdigit():
                declared = int(value)
        refusal = h.precheck(content_type, declared, limit)
        if refusal is not None:
            return refusal
        body: bytes | bytearray = b""
        while True:  # bounded by ``limit``: a longer body is refused as it arrives
            message = await receive()
            if message["type"] == "http.disconnect":
                return 0, b""
            chunk = message.get("body", b"")
            if len(body) + len(chunk) > limit:
                return h.too_large(limit)
            if not body:
                body = chunk  # the common case: one chunk, no copy
            else:
                # grown chunk by chunk: one b"".join of a 13 MB body stalled the loop
                # ~12 ms (fresh pages); extending spreads that over the chunks
                if isinstance(body, bytes):
                    body = bytearray(body)
                body += chunk
            if not message.get("more_body", False):
                break
        return await h.batch(body) if batch else h.decide(body)


# --------------------------------------------------------------------------------------
# access: bearer token (Starlette's AuthenticationMiddleware) and a per-client rate limit
# --------------------------------------------------------------------------------------


class _BearerAuth(AuthenticationBackend):
    """``Authorization: Bearer <token>`` required on every endpoint but the probes
    (``PROBES``: there a valid token only unlocks /readyz's details). Compared in
    constant time."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def authenticate(self, conn):
        value = None
        for name, v in conn.scope["headers"]:
            if name == b"authorization":
                value = v
                break
        if value is not None:
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(),
                                                                   self._token):
                return AuthCredentials(["authenticated"]), SimpleUser("bearer")
        if conn.scope["path"] in PROBES:
            return None
        raise AuthenticationError("missing bearer token" if value is None
                                  else "wrong bearer token")


def _auth_error(metrics: Metrics):
    """on_error of the AuthenticationMiddleware: 401 JSON naming the header to send."""

    def on_error(conn, exc) -> Response:
        metrics.rejected.labels("unauthorized").inc()
        return Response(_dumps({"message": f"authorization: {exc}; send 'Authorization: "
                                           "Bearer <token>'"}),
                        status_code=401, media_type=JSON,
                        headers={"www-authenticate": 'Bearer realm="hmum"'})

    return on_error


class _RateLimit:
    """Pure ASGI middleware: a token bucket per client address, ``rate`` tokens per
    second up to ``burst``; a request finding its bucket empty gets 429 with
    Retry-After (whole seconds, at least 1) and the exact wait in its message. The
    probes (``PROBES``) are not limited. Behind a proxy every client is the proxy.

    Hand-rolled (~30 lines) rather than the ``limits`` package (slowapi's engine):
    it has no token bucket (rate + burst), and its in-memory storage rescans every
    key on a timer thread each 10 ms under the GIL (measured: ~0.25 s of CPU per
    second with 1 000 clients, 0.6 s with 10 000 for its moving window, whose key
    table never shrinks) -- the very stalls this service must not have.
    ``token-bucket`` has the algorithm but never forgets a client. Here clients
    idle long enough to be full again are forgotten once ``MAX_CLIENTS`` is reached.
    """

    MAX_CLIENTS = 65_536

    def __init__(self, app, *, rate: float, burst: int, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app, self.rate, self.burst, self.clock = app, float(rate), int(burst), clock
        self.buckets: dict[str, list[float]] = {}  # client -> [tokens, last refill time]
        self._limited = metrics.rejected.labels("rate_limit")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        key = client[0] if client else "unknown"
        wait = self.take(key)
        if wait is None:
            await self.app(scope, receive, send)
            return
        self._limited.inc()
        out = _dumps({"message": f"rate limit: more than {self.rate:g} requests/s (burst "
                                 f"{self.burst}) from {key}; retry in {wait:.3g} s"})
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(out)).encode()),
            (b"retry-after", str(max(1, math.ceil(wait))).encode())]})
        await send({"type": "http.response.body", "body": out})

    def take(self, key: str) -> float | None:
        """Take one token from ``key``'s bucket: None, or the seconds until one is there."""
        now = self.clock()
        b = self.buckets.get(key)
        if b is None:
            if len(self.buckets) >= self.MAX_CLIENTS:
                self._forget(now)
            b = self.buckets[key] = [float(self.burst), now]
        else:
            b[0] = min(float(self.burst), b[0] + (now - b[1]) * self.rate)
            b[1] = now
        if b[0] >= 1.0:
            b[0] -= 1.0
            return None
        return (1.0 - b[0]) / self.rate

    def _forget(self, now: float) -> None:
        """Drop the buckets that are full again (forgetting them changes nothing); if
        every client is that active, the older half."""
        refill = self.burst / self.rate
        self.buckets = {k: b for k, b in self.buckets.items() if now - b[1] < refill}
        if len(self.buckets) >= self.MAX_CLIENTS:
            keep = sorted(self.buckets.items(), key=lambda kv: kv[1][1])[len(self.buckets) // 2:]
            self.buckets = dict(keep)


def app_from_env():
    """``uvicorn --factory hmum.serving.service:app_from_env``: config from HMUM_* and
    $HMUM_CONFIG_FILE (what ``hmum serve`` runs in each worker). A bad setting or a
    model failing its checks: one line on stderr and exit status 3 (no traceback)."""
    try:
        return create_app()
    except (ConfigError, ModelCheckError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None


def _openapi_body(model: type[BaseModel]) -> dict:
    """OpenAPI request body of a handler that parses the raw body itself."""
    return {"requestBody": {"required": True, "content": {
        JSON: {"schema": model.model_json_schema()}}}}
