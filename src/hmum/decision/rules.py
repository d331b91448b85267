"""The frozen decision config: the rule a platform deploys, as data.

A ``DecisionRule`` generalizes the paper's "enable k where phi^k > sigma" (eq. 11)
with what a platform operator needs, and nothing the service cannot compute per
request from the stored relative uplift delta and the value weights w:

    phi'^k = sum_r (w_r + lambda_r) delta_r^k          (lambda_r >= 0: guardrail bonus)
    margin^k = phi'^k - sigma_k                        (sigma_k: per-treatment threshold)

* ``independent`` mode: enable k where margin^k > 0 (any subset can be on);
* ``exclusive`` mode: enable the k with the largest margin when it is > 0.

With every lambda_r = 0 and every sigma_k = sigma this is exactly
``policies.decide`` (the paper's rule). A guarded response r gets a positive
lambda_r (its uplift counts more in every user's score) and a capped treatment a
raised sigma_k; ``hmum.decision.guardrails.fit_rule`` chooses them on a
calibration split. With ``bound`` ({"level", "source", "method"}) set, the decision
uses a lower confidence bound of phi'^k (``hmum.decision.bounds``) instead of its point
estimate, from the members' spread of delta stored beside delta (``lower_scores``).

``weights``: "personalized" (the value-weight model's w per request) or
"fixed" (``fixed_weights`` (R,) for everyone).

On disk (``save_rule`` / ``load_rule``): a folder with ``decision.json``
(format ``hmum.decision/1``) and ``manifest.json`` holding its sha256, so a
guardrail change is a new, checksummed artifact deployed like a model. In a store
version (``rule_to_version_extra`` / ``rule_from_version_extra``): the rule and its
sha256 in the version's ``VersionInfo.extra``, so the store's atomic switch and
rollback move the rule together with the uplifts it was fitted on.

Shapes: delta (N, K, R), w (N, R), spread (N, S), phi_lo (N, K), enable (N, K) bool.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hmum.decision.bounds import METHODS as BOUND_METHODS
from hmum.decision.bounds import SOURCES as BOUND_SOURCES
from hmum.decision.bounds import spread_interval
from hmum.exceptions import DecisionConfigError

FORMAT = "hmum.decision/1"
RULE_FILE = "decision.json"
MANIFEST_FILE = "manifest.json"
MODES = ("independent", "exclusive")




@dataclass(frozen=True)
class DecisionRule:
    """The deployable decision rule (module docstring). Lists are per response / treatment.

    responses (R names), treatments (K names), sigma (K,), response_bonus (R,)
    lambda_r >= 0, fixed_weights (R,) when weights == "fixed", bound
    {"level": float, "source": str} or None, guardrails [{"response", "floor"}],
    max_share {treatment: cap}, fit: how it was fitted (JSON-able, informative).
    """

    responses: list[str]
    treatments: list[str]
    mode: str = "independent"
    sigma: list[float] | None = None
    response_bonus: list[float] | None = None
    weights: str = "personalized"
    fixed_weights: list[float] | None = None
    bound: dict[str, Any] | None = None
    guardrails: list[dict[str, Any]] = field(default_factory=list)
    max_share: dict[str, float] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        r, k = len(self.responses), len(self.treatments)
        if r < 1 or k < 1:
            raise DecisionConfigError(f"a decision rule needs >= 1 response and treatment, got "
                                      f"responses {self.responses}, treatments {self.treatments}")
        if self.mode not in MODES:
            raise DecisionConfigError(f"mode: expected one of {MODES}, got {self.mode!r}")
        sigma = [0.0] * k if self.sigma is None else [float(s) for s in self.sigma]
        bonus = [0.0] * r if self.response_bonus is None else [float(b) for b in
                                                                  self.response_bonus]
        if len(sigma) != k or not all(np.isfinite(sigma)):
            raise DecisionConfigError(f"sigma: expected {k} finite thresholds (one per treatment "
                                      f"{self.treatments}), got {self.sigma}")
        if len(bonus) != r or not all(np.isfinite(b) and b >= 0 for b in bonus):
            raise DecisionConfigError(f"response_bonus: expected {r} finite numbers >= 0 (one per "
                                      f"response {self.responses}), got {self.response_bonus}")
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "response_bonus", bonus)
        if self.weights not in ("personalized", "fixed"):
            raise DecisionConfigError(f"weights: expected 'personalized' or 'fixed', got "
                                      f"{self.weights!r}")
        if self.weights == "fixed":
            fw = self.fixed_weights
            if fw is None or len(fw) != r or min(fw) < 0 or sum(fw) <= 0:
                raise DecisionConfigError(f"fixed_weights: expected {r} numbers >= 0 with a "
                                          f"positive sum, got {fw}")
        if self.bound is not None:
            self._check_bound(self.bound)
        unknown = sorted(set(self.max_share) - set(self.treatments))
        if unknown:
            raise DecisionConfigError(f"max_share: unknown treatment(s) {unknown}; expected "
                                      f"some of {self.treatments}")

    # --- the decision ----------------------------------------------------------------
    def value_weights(self, w: np.ndarray | None, n: int) -> np.ndarray:
        """w (N, R) the rule uses: the given personalized w or the fixed weights."""
        if self.weights == "fixed":
            fw = np.asarray(self.fixed_weights, dtype=np.float64)
            return np.broadcast_to(fw / fw.sum(), (n, len(fw)))
        if w is None:
            raise DecisionConfigError("this decision rule uses personalized weights: pass w (N, R)")
        return np.asarray(w, dtype=np.float64)

    def scores(self, delta: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        """phi'^k (N, K) = sum_r (w_r + lambda_r) delta_r^k (no threshold applied)."""
        delta = np.asarray(delta, dtype=np.float64)
        self._check(delta)
        wv = self.value_weights(w, delta.shape[0])
        if wv.shape != (delta.shape[0], delta.shape[2]):
            raise DecisionConfigError(f"w must have shape (N, R) = "
                                      f"{(delta.shape[0], delta.shape[2])}, got {wv.shape}")
        return np.einsum("nkr,nr->nk", delta, wv + np.asarray(self.response_bonus)[None, :])

    @staticmethod
    def _check_bound(bound: Any) -> None:
        if not isinstance(bound, dict):
            raise DecisionConfigError(f"bound: expected {{'level', 'source'[, 'method']}} or "
                                      f"null, got {bound!r}")
        lvl = bound.get("level")
        if isinstance(lvl, bool) or not isinstance(lvl, int | float) or not 0 < lvl < 1:
            raise DecisionConfigError(f"bound.level: expected a number in (0, 1), got {lvl!r}")
        if bound.get("source") not in BOUND_SOURCES:
            raise DecisionConfigError(f"bound.source: expected one of {BOUND_SOURCES}, got "
                                      f"{bound.get('source')!r}")
        if bound.get("method", "t") not in BOUND_METHODS:
            raise DecisionConfigError(f"bound.method: expected one of {BOUND_METHODS}, got "
                                      f"{bound.get('method')!r}")
        unknown = sorted(set(bound) - {"level", "source", "method"})
        if unknown:
            raise DecisionConfigError(f"bound: unknown field(s) {unknown}")

    def lower_scores(self, spread: np.ndarray, members: int,
                     w: np.ndarray | None = None) -> np.ndarray:
        """The lower bound (N, K) of phi'^k at the rule's ``bound`` level, from the
        members' packed spread (N, S) (``hmum.decision.bounds.pack_spread``) of
        ``members`` = M members; its guardrail bonuses count as in ``scores``."""
        if self.bound is None:
            raise DecisionConfigError("this decision rule has no bound; it decides on phi")
        n = np.shape(spread)[0]
        return spread_interval(spread, members, self.value_weights(w, n), k=len(self.treatments),
                               level=float(self.bound["level"]),
                               method=self.bound.get("method", "t"),
                               bonus=np.asarray(self.response_bonus))["lo"]

    def decide(self, delta: np.ndarray, w: np.ndarray | None = None, *,
               score: np.ndarray | None = None, spread: np.ndarray | None = None,
               members: int | None = None) -> np.ndarray:
        """enable (N, K) bool. ``score`` (N, K) replaces phi' (e.g. its lower bound).

        A rule with ``bound`` decides on ``lower_scores(spread, members, w)`` and needs
        the members' spread (N, S) unless ``score`` is given.
        """
        if score is None and self.bound is not None:
            if spread is None or members is None:
                raise DecisionConfigError(
                    "this decision rule switches on a lower bound of phi: it needs the "
                    "members' spread of delta (a HUM with several branches or cross-fit "
                    "members, scored with its members)")
            self._check(np.asarray(delta))
            score = self.lower_scores(spread, members, w)
        s = self.scores(delta, w) if score is None else np.asarray(score, dtype=np.float64)
        return decide_margin(s - np.asarray(self.sigma)[None, :], self.mode)

    def _check(self, delta: np.ndarray) -> None:
        k, r = len(self.treatments), len(self.responses)
        if delta.ndim != 3 or delta.shape[1:] != (k, r):
            raise DecisionConfigError(f"delta must have shape (N, K, R) with K = {k}, R = {r} "
                                      f"(the rule's treatments and responses), got {delta.shape}")

    # --- serialization -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "decision config") -> DecisionRule:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise DecisionConfigError(f"{source}: expected format {FORMAT!r}, got {got!r}")
        body = {k: v for k, v in d.items() if k != "format"}
        allowed = set(cls.__dataclass_fields__)
        extra = sorted(set(body) - allowed)
        if extra:
            raise DecisionConfigError(f"{source}: unknown field(s) {extra}")
        try:
            return cls(**body)
        except TypeError as e:  # a required field missing
            raise DecisionConfigError(f"{source}: {e}") from None
        except DecisionConfigError as e:
            raise DecisionConfigError(f"{source}: {e}") from None


def decide_margin(margin: np.ndarray, mode: str) -> np.ndarray:
    """enable (N, K) from margin (N, K) = score - sigma_k.

    independent: margin > 0; exclusive: one-hot of the largest margin where it is > 0
    (ties go to the lower k). NaN margins (a user the store does not know) enable nothing.
    """
    # NaN margins (users the store does not know) never enable anything
    m = np.nan_to_num(np.asarray(margin, dtype=np.float64), nan=-np.inf)
    if mode == "independent":
        return m > 0
    if mode != "exclusive":
        raise DecisionConfigError(f"mode: expected one of {MODES}, got {mode!r}")
    out = np.zeros(m.shape, dtype=bool)
    if m.shape[0]:
        best = m.argmax(axis=1)
        rows = np.arange(m.shape[0])
        out[rows, best] = m[rows, best] > 0
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_rule(rule: DecisionRule, path: str | Path) -> Path:
    """Write ``path/decision.json`` and ``path/manifest.json`` (its sha256); returns path.

    Files are written to temporaries and renamed, so a reader never sees half a config.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise DecisionConfigError(f"{out}: expected a folder for the decision config, found a "
                                  "file")
    out.mkdir(parents=True, exist_ok=True)
    body = json.dumps(rule.to_dict(), indent=2, sort_keys=True, default=float) + "\n"
    tmp = out / (RULE_FILE + ".tmp")
    tmp.write_text(body)
    digest = hashlib.sha256(body.encode()).hexdigest()
    os.replace(tmp, out / RULE_FILE)
    man = {"format": FORMAT, "files": {RULE_FILE: digest}}
    tmp = out / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(man, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST_FILE)
    return out


def load_rule(path: str | Path) -> DecisionRule:
    """Read a decision config folder written by ``save_rule``, checking its sha256.

    Raises DecisionConfigError naming the file when it is missing, altered or malformed.
    """
    p = Path(path)
    rule_file, man_file = p / RULE_FILE, p / MANIFEST_FILE
    if not p.is_dir():
        raise DecisionConfigError(f"{p}: no decision config folder (expected {RULE_FILE} and "
                                  f"{MANIFEST_FILE}, written by hmum decide --decision-config-out)")
    for f in (rule_file, man_file):
        if not f.is_file():
            raise DecisionConfigError(f"{f}: missing; a decision config holds {RULE_FILE} and "
                                      f"{MANIFEST_FILE}")
    try:
        man = json.loads(man_file.read_text())
        want = man["files"][RULE_FILE]
    except (ValueError, KeyError, TypeError):
        raise DecisionConfigError(f"{man_file}: expected JSON with files.{RULE_FILE} = its "
                                  "sha256") from None
    got = _sha256(rule_file)
    if got != want:
        raise DecisionConfigError(f"{rule_file}: sha256 {got[:12]}... does not match the "
                                  f"manifest's {str(want)[:12]}...; the file was altered")
    try:
        d = json.loads(rule_file.read_text())
    except ValueError as e:
        raise DecisionConfigError(f"{rule_file}: not valid JSON ({e})") from None
    return DecisionRule.from_dict(d, source=str(rule_file))


# --------------------------------------------------------------------------------------
# frozen into a store version (VersionInfo.extra): deployed with the same switch/rollback
# --------------------------------------------------------------------------------------

#: keys of a store version's ``extra`` metadata that hold the frozen rule and its sha256
VERSION_KEY, VERSION_SHA_KEY = "decision", "decision_sha256"


def _canonical(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), default=float)


def rule_to_version_extra(rule: DecisionRule) -> dict[str, Any]:
    """{"decision": the rule as JSON-able dict, "decision_sha256": sha256 of its canonical
    JSON}: merge into a store version's ``VersionInfo.extra`` when the version is created,
    so switching to (or rolling back to) the version switches its decision rule too."""
    d = json.loads(_canonical(rule.to_dict()))
    return {VERSION_KEY: d, VERSION_SHA_KEY: hashlib.sha256(_canonical(d).encode()).hexdigest()}


def rule_from_version_extra(extra: dict[str, Any] | None,
                            source: str = "store version") -> DecisionRule | None:
    """The rule frozen into a store version's ``extra``, or None when it holds none.

    Raises DecisionConfigError when the rule does not match its sha256 or is malformed.
    """
    if not extra or VERSION_KEY not in extra:
        return None
    d = extra[VERSION_KEY]
    want = extra.get(VERSION_SHA_KEY)
    got = hashlib.sha256(_canonical(d).encode()).hexdigest() if isinstance(d, dict) else None
    if got is None or got != want:
        raise DecisionConfigError(f"{source}: the decision config does not match its sha256 "
                                  f"({VERSION_SHA_KEY}); it was altered")
    return DecisionRule.from_dict(d, source=f"{source}: decision config")
