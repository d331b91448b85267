"""The online decision service (paper §6.2, DDM online): ``create_app(config)``.

Per request: the value-weight model (ONNX Runtime) turns the request's candidate
and recent items into value weights w (R,); the user's relative uplifts delta
(K, R) come from the uplift store (``hmum.serving.store``); phi = delta @ w (K,)
and treatment k is enabled when phi_k > sigma (eqs. 10, 11).

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
no sum of its own. A service failing a check keeps running (``/healthz``), but
``/readyz`` answers 503 with the reason and decisions answer 503.

The two decide endpoints are answered by a pure ASGI middleware (``_FastPath``)
before FastAPI's routing; the FastAPI routes run the same handlers (``_Handlers``)
and document the bodies. The store is read synchronously on the event loop: a read
is bounded by its deadline (a few ms) and usually takes ~0.1 ms; a thread-pool
hand-off would cost about as much as the read itself.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hmum.serving.config import ServiceConfig
from hmum.serving.store import Lookup, StoreTimeout

try:  # orjson: several times faster serialization on the hot path
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
except ImportError:  # pragma: no cover - orjson is a dependency of the service extra
    import json

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, allow_nan=False).encode()


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
JSON = "application/json"

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


def _error_body(errors: list[dict]) -> bytes:
    """422 payload: {"message": first error naming its field, "detail": [...]}."""
    detail = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in errors]
    first = errors[0]
    return _dumps({"message": f"{_loc_str(first['loc'])}: {first['msg']}", "detail": detail})


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
    from hmum.serving.scoring import model_version_of
    from hmum.training.artifacts import ArtifactError
    from hmum.training.value_weight import OnnxValueWeights, ValueWeightEstimator

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
        self.store_version: str | None = None
        self._check_max_code = config.max_item_code < 2**31 - 1  # else pydantic checked it
        self._decision_children: dict[str, Any] = {}
        self._unknown = self.metrics.unknown
        try:
            self.model = load_model(config)
        except Exception as e:  # any failure: never ready, the reason on /readyz
            self.model_error = f"{type(e).__name__}: {e}"
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
            got = self._layouts[version] = (list(info.arms[1:]), err)
        return got

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

    def decide(self, items: list[tuple[Any, np.ndarray, np.ndarray]]) -> list[dict]:
        """Decisions for n prepared requests [(user id, cand (Fc, L), recent (Fr, Lr))].

        w (n, R) from ONNX, delta (n, K, R) from one store read for all users,
        phi (n, K) = einsum("nkr,nr->nk"), enabled = phi > sigma. Returns n decision
        dicts (see the module docstring).
        """
        m = self.model
        n = len(items)
        w = self.weights(items)
        res, reason = self.lookup([it[0] for it in items])
        treatments: list[str] = []
        phi = enabled = None
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
                enabled = (phi > self.config.sigma).tolist()  # NaN rows (unknown): False
                phi = phi.tolist()
        if store_version != self.store_version and store_version is not None:
            self.store_version = store_version
            self.metrics.set_versions(m.model_version, store_version)
        out = []
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
                on = [t for t, e in zip(treatments, enabled[i], strict=True) if e]
                d["enabled"] = on
                for t in on or ("none",):
                    count(t)
            out.append(d)
        return out

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
    The service object is ``app.state.service``.
    """
    from fastapi import FastAPI
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from hmum.serving.config import load_config

    config = config or load_config()
    svc = DecisionService(config, store=store, clock=clock)
    app = FastAPI(title="hmum decision service", version="1",
                  description=__doc__.split("\n\n")[0])
    app.state.service = svc

    handlers = _Handlers(svc)
    # The hot endpoints are answered by a pure ASGI middleware, before Starlette's
    # routing and Request/Response objects (~20 % of a small request's CPU); the
    # FastAPI routes below run the same handlers and document the bodies in OpenAPI.
    app.add_middleware(_FastPath, routes={"/v1/decide": (handlers.decide, handlers.limit),
                                          "/v1/decide/batch": (handlers.batch,
                                                               handlers.batch_limit)})

    async def via_route(request: Request, handler, limit: int) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            status, out = handlers.too_large(limit)
        else:
            body = await request.body()
            status, out = handlers.too_large(limit) if len(body) > limit else handler(body)
        return Response(out, status_code=status, media_type=JSON)

    @app.post("/v1/decide", openapi_extra=_openapi_body(DecideRequest))
    async def decide(request: Request) -> Response:
        return await via_route(request, handlers.decide, handlers.limit)

    @app.post("/v1/decide/batch", openapi_extra=_openapi_body(BatchRequest))
    async def decide_batch(request: Request) -> Response:
        return await via_route(request, handlers.batch, handlers.batch_limit)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    @app.get("/readyz")
    async def readyz() -> Response:
        ready, checks = svc.readiness()
        return Response(_dumps({"ready": ready, **checks}), status_code=200 if ready else 503,
                        media_type=JSON)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


class _Handlers:
    """The decide endpoints without a web framework: body bytes -> (status, JSON bytes).

    Bodies are parsed and validated by pydantic's JSON parser in one pass (no
    json.loads first), and errors come back in our 422 format.
    """

    def __init__(self, svc: DecisionService) -> None:
        self.svc, c, m = svc, svc.config, svc.model
        self.lat_one = svc.metrics.latency.labels("decide")
        self.lat_batch = svc.metrics.latency.labels("batch")
        # Bodies larger than the largest valid request are refused before parsing:
        # ~12 bytes per item code (digits, comma, space) plus names and the user id.
        self.limit = 2048 + 12 * (
            (len(m.cand_fields) * c.max_candidates + len(m.recent_fields) * c.max_recent)
            if m is not None else 0)
        self.batch_limit = 64 + self.limit * c.max_batch

    def invalid(self, errors: list[dict]) -> tuple[int, bytes]:
        self.svc.metrics.invalid.inc()
        return 422, _error_body(errors)

    def too_large(self, limit: int) -> tuple[int, bytes]:
        self.svc.metrics.invalid.inc()
        return 413, _dumps({"message": f"body: larger than {limit} bytes, the most a valid "
                                       "request can take with these limits"})

    def not_ready(self) -> tuple[int, bytes]:
        return 503, _dumps({"message": f"model not loaded: {self.svc.model_error}"})

    def decide(self, body: bytes) -> tuple[int, bytes]:
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

    def batch(self, body: bytes) -> tuple[int, bytes]:
        svc, max_batch = self.svc, self.svc.config.max_batch
        if svc.model is None:
            return self.not_ready()
        t0 = time.perf_counter()
        try:
            batch = BatchRequest.model_validate_json(body)
            if len(batch.requests) > max_batch:
                raise RequestError(("requests",), f"at most {max_batch} requests per batch, "
                                   f"got {len(batch.requests)}")
            items = []
            for i, r in enumerate(batch.requests):
                try:
                    items.append(svc.prepare(r))
                except RequestError as e:
                    raise RequestError(("requests", i, *e.loc), e.msg) from None
        except ValidationError as e:
            return self.invalid(e.errors(include_url=False))
        except RequestError as e:
            return self.invalid([{"loc": e.loc, "msg": e.msg, "type": "value_error"}])
        out = _dumps({"decisions": svc.decide(items)})
        self.lat_batch.observe(time.perf_counter() - t0)
        return 200, out


class _FastPath:
    """Pure ASGI middleware: POSTs to ``routes`` (path -> (handler, body limit)) are
    answered directly; everything else goes on to the FastAPI app."""

    def __init__(self, app, routes: dict) -> None:
        self.app, self.routes = app, routes

    async def __call__(self, scope, receive, send) -> None:
        route = self.routes.get(scope.get("path")) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        handler, limit = route
        status, out = await self._answer(scope, receive, handler, limit)
        if status == 0:  # the client went away: nobody to answer
            return
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    @staticmethod
    async def _answer(scope, receive, handler, limit: int) -> tuple[int, bytes]:
        too_large = handler.__self__.too_large
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return too_large(limit)
        chunks, size = [], 0
        while True:  # bounded by ``limit``: a longer body is refused as it arrives
            message = await receive()
            if message["type"] == "http.disconnect":
                return 0, b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return handler(chunks[0] if len(chunks) == 1 else b"".join(chunks))


def app_from_env():
    """``uvicorn --factory hmum.serving.service:app_from_env``: config from HMUM_* and
    $HMUM_CONFIG_FILE (what ``hmum serve`` runs in each worker)."""
    return create_app()


def _openapi_body(model: type[BaseModel]) -> dict:
    """OpenAPI request body of a handler that parses the raw body itself."""
    return {"requestBody": {"required": True, "content": {
        JSON: {"schema": model.model_json_schema()}}}}
