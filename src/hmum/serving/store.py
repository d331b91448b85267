"""The uplift store: per-user relative uplifts delta (K, R), versioned, for online reads.

Paper §6.2: HUM scores every user daily and the results go to a key-value store;
on each request DDM reads the user's delta and weighs it with the value weights.
This module is that store: one interface (``UpliftStore``), two backends:

* ``SQLiteStore`` -- the embedded default: one file, WAL journal, one table per
  version with the user id as primary key, values as compact blobs.
* ``RedisStore`` -- production: redis-py (hiredis parser), a connection pool,
  pipelined writes, small hash buckets for memory, per-call read deadlines.

``open_store(url)`` picks the backend: ``redis://host:port/db`` -> Redis;
``sqlite:///path.db`` or a plain path -> SQLite.

Values
------
One user's value is delta (K, R) as ``K * R`` little-endian float32 (4 bytes
each), row-major: the float at index ``k * R + r`` is delta for treatment
``k + 1`` (arm ``arms[k + 1]``) and response ``responses[r]``. K, R, the arm
and response names are kept in the version's metadata (``VersionInfo``).

A version scored for a decision rule with a lower bound of phi (``VersionInfo.members``
= M, the model's members) appends the members' packed spread to every value: S =
``hmum.decision.bounds.spread_width(K, R)`` more float32 (the members' mean delta,
then the upper triangle of their covariance per treatment; ``pack_spread``), so
the service can bound phi for each request's weights. ``Lookup.spread`` (n, S).

Versions and the current pointer
--------------------------------
Every scoring run loads into its own *version* (a namespace of its own), first
with status ``loading``; once its row count and sample reads are checked it is
marked ``ready``; ``switch(v)`` then makes it current in one atomic step and
keeps the old current as ``previous``, so ``rollback()`` is one step back.
``cleanup()`` deletes every version that is neither current nor previous
(``loading`` ones only when asked: a job may be filling one right now).
Reads without an explicit version go to the current one.

Redis key schema (``{ns}`` the namespace, ``{v}`` the version)
----------------------------------------------------------------
==================================  ======  ==============================================
key                                 type    content
==================================  ======  ==============================================
``hmum:{ns}:current``               string  name of the current version
``hmum:{ns}:previous``              string  the version current before the last switch
``hmum:{ns}:versions``              hash    version -> VersionInfo as JSON
``hmum:{ns}:v:{v}:shards``          hash    shard index -> rows loaded (resumable loads)
``hmum:{ns}:v:{v}:b:{bucket}``      hash    user id -> value (K*R float32 LE, see above)
==================================  ======  ==============================================

``bucket`` is ``user_id mod n_buckets`` (floor modulo, in [0, n_buckets)) for
integer ids and ``crc32(utf-8 of the id) mod n_buckets`` for string ids; the
hash field is the id in decimal (integers) or the id itself (strings).
``n_buckets`` is fixed per version (``VersionInfo.n_buckets``), sized for about
64 users per bucket so each bucket stays a compact listpack (Redis' defaults:
``hash-max-listpack-entries 128``, ``hash-max-listpack-value 64`` bytes, i.e.
K*R <= 16, or K*R + S <= 16 with the members' spread (K = R = 2: 4 + 10); larger
values still work, with the bigger hashtable encoding).
Small hashes cost a few bytes per user instead of ~100 for one key per user.

SQLite layout
-------------
``hmum_versions(namespace, version, info JSON)``, ``hmum_pointers(namespace,
name in {current, previous}, version)``, ``hmum_shards(namespace, version,
shard, rows)`` and one data table per version ``"hmum_delta__{ns}__{v}"``
``(user_id INTEGER PRIMARY KEY, delta BLOB)`` (``TEXT`` ids: ``WITHOUT ROWID``).
A shard's rows and its shard marker are written in one transaction.

Reads
-----
``get(user_ids, version=None, timeout=None) -> Lookup``: ``Lookup.delta``
(n, K, R) float32 (NaN where the user is unknown), ``Lookup.found`` (n,) bool,
``Lookup.version``. ``timeout`` (seconds) bounds the whole call and raises
``StoreTimeout``; SQLite interrupts its query, Redis drops the connection.

User ids are matched exactly, in the id kind the version recorded
(``VersionInfo.id_kind``), never converted from the other kind: on an integer
version only integers (Python or NumPy, not bool) are looked up, so a string
such as ``"7"``, ``"007"``, ``" 7"``, ``"+7"`` or ``"٣"`` is an unknown user
(``found`` False), never user 7 or 3; on a string version only strings are,
so the integer 7 is an unknown user, not ``"7"``. Floats are never integer
ids (a large float cannot name one user exactly). ``put`` refuses ids of the
other kind with a ValueError.

Opening, and a file that changes under a reader
-----------------------------------------------
``open_store(url)`` only opens what exists (``create=False``): a missing SQLite
file, a folder or a file that is not an hmum store is a StoreError ("no store
at PATH"); the scoring job opens with ``create=True``. A long-lived SQLite
reader (the service) compares, at most every ``check_interval`` seconds, the
identity (st_dev, st_ino) of the file at its path with the one it opened: a
replaced file is reopened, a deleted one makes every call raise StoreError
until a file is back, each logged as a warning naming the path; ``health()``
reports it (``available``, ``reason``, ``reopens``, ``last_event``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hmum.decision.bounds import spread_width
from hmum.exceptions import StoreError, StoreTimeout

#: Names of namespaces and versions: they become parts of Redis keys, SQLite
#: table names and Parquet partition folders, so no ':', '/', '=', quotes or spaces.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: Users per Redis hash bucket, aimed well below hash-max-listpack-entries (128)
#: so that even a random-id bucket (binomial spread) stays a listpack.
USERS_PER_BUCKET = 64

#: Users a Redis version is sized for when ``create_version`` gets no expected_rows.
DEFAULT_EXPECTED_ROWS = 1024 * USERS_PER_BUCKET

IdKind = Literal["int", "str"]
Status = Literal["loading", "ready", "failed", "deleting"]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

log = logging.getLogger(__name__)






def check_name(value: str, what: str) -> str:
    """``value`` if it is a valid namespace/version name, else ValueError naming ``what``."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValueError(
            f"{what} must match {NAME_RE.pattern} (letters, digits, '_', '.', '-'; at most 64), "
            f"got {value!r}"
        )
    return value


@dataclass(frozen=True)
class VersionInfo:
    """Metadata of one stored version.

    Attributes:
        version: its name.
        K, R: treatments and responses; a value is K*R float32.
        arms: the K+1 arm names (arms[0] is control).
        responses: the R response names.
        id_kind: "int" (int64 user ids) or "str".
        status: "loading" until checked, then "ready"; "failed" when its scoring run
            stopped with an error (``extra["error"]``; a rerun resumes it, ``cleanup``
            deletes it); "deleting" while being removed (a cleanup cut short is
            finished by the next; never switchable).
        rows: users stored (set when ready).
        created: UTC time of creation, ISO 8601.
        model_version, date: what produced it (informational).
        n_buckets: Redis only, hash buckets of this version.
        members: M >= 2 when every value also holds the members' spread (S floats
            after delta, module docstring); None: delta only.
    """

    version: str
    K: int  # noqa: N815 - the paper's symbol
    R: int  # noqa: N815
    arms: list[str]
    responses: list[str]
    id_kind: IdKind = "int"
    status: Status = "loading"
    rows: int | None = None
    created: str = ""
    model_version: str | None = None
    date: str | None = None
    n_buckets: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    members: int | None = None

    def __post_init__(self) -> None:
        check_name(self.version, "version")
        if self.K < 1 or self.R < 1:
            raise ValueError(f"K and R must be >= 1, got K={self.K}, R={self.R}")
        if len(self.arms) != self.K + 1:
            raise ValueError(f"arms must hold K+1 = {self.K + 1} names, got {self.arms}")
        if len(self.responses) != self.R:
            raise ValueError(f"responses must hold R = {self.R} names, got {self.responses}")
        if self.id_kind not in ("int", "str"):
            raise ValueError(f"id_kind must be 'int' or 'str', got {self.id_kind!r}")
        if self.members is not None and (isinstance(self.members, bool)
                                         or not isinstance(self.members, int)
                                         or self.members < 2):
            raise ValueError(f"members must be None or an integer >= 2, got {self.members!r}")

    @property
    def spread_width(self) -> int:
        """S: floats of the members' spread in each value (0 without members)."""
        return 0 if self.members is None else spread_width(self.K, self.R)

    @property
    def value_bytes(self) -> int:
        """Bytes of one user's value: (K * R + S) * 4."""
        return (self.K * self.R + self.spread_width) * 4

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> VersionInfo:
        return cls(**json.loads(raw))

    def same_layout(self, other: VersionInfo) -> bool:
        return (self.K, self.R, list(self.arms), list(self.responses), self.id_kind,
                self.members) == (other.K, other.R, list(other.arms), list(other.responses),
                                  other.id_kind, other.members)


@dataclass
class Lookup:
    """Result of a batch read.

    Attributes:
        delta: (n, K, R) float32; NaN for users not found.
        found: (n,) bool.
        version: the version that was read.
        spread: (n, S) float32 members' spread (NaN where not found) when the version
            holds one (``VersionInfo.members``), else None.
        members: the version's M, or None.
    """

    delta: np.ndarray
    found: np.ndarray
    version: str
    spread: np.ndarray | None = None
    members: int | None = None


# --------------------------------------------------------------------------------------
# Value encoding
# --------------------------------------------------------------------------------------


def encode_values(delta: np.ndarray, spread: np.ndarray | None = None) -> list[bytes]:
    """delta (n, K, R) [+ spread (n, S)] -> n values of K*R [+ S] little-endian float32
    bytes (row-major)."""
    a = np.ascontiguousarray(delta, dtype="<f4").reshape(delta.shape[0], -1)
    if spread is not None:
        a = np.ascontiguousarray(np.concatenate([a, np.asarray(spread, dtype="<f4")], axis=1))
    # One buffer, viewed as n fixed-width records: tolist() gives n bytes objects
    # without a Python-level loop over floats.
    return a.view(np.dtype((np.void, a.shape[1] * 4))).ravel().tolist()


def _checked(a, name: str, letters: str, shape: tuple, version: str) -> np.ndarray:
    """``a`` as an array when it has ``shape`` and only finite values, else ValueError."""
    arr = np.asarray(a)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {letters} = ({', '.join(map(str, shape))}) "
                         f"for version {version!r}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf; refusing to store it")
    return arr


def decode_values(values: Sequence[bytes], info: VersionInfo
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """n values of ``info``'s layout -> (delta (n, K, R) float32, spread (n, S) float32 or
    None). Raises StoreError on a value of the wrong size."""
    raw = b"".join(values)
    width = info.value_bytes
    if len(raw) != width * len(values):
        bad = next(len(v) for v in values if len(v) != width)
        raise StoreError(f"stored value of {bad} bytes where version {info.version!r} holds "
                         f"{width} ((K*R + S)*4)")
    a = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(len(values), -1)
    kr = info.K * info.R
    delta = a[:, :kr].reshape(len(values), info.K, info.R)
    return delta, (a[:, kr:] if info.members is not None else None)


def id_array(user_ids: Any, what: str = "user_ids") -> np.ndarray:
    """``user_ids`` as a one-dimensional (n,) array that keeps each id's kind.

    A list mixing integers and strings becomes an object array (``np.asarray``
    would turn ``[7, "a"]`` into the strings ``["7", "a"]`` and lose which was
    which); a list of integers an int64 array; a scalar an array of one.
    """
    if isinstance(user_ids, np.ndarray):
        a = user_ids
    elif isinstance(user_ids, list | tuple):
        a = None
        if all(type(u) is int for u in user_ids):  # the service's common case
            try:
                a = np.array(user_ids, dtype=np.int64)
            except OverflowError:  # beyond int64: kept as objects, never held
                a = None
        if a is None:
            a = np.empty(len(user_ids), dtype=object)
            a[:] = user_ids
    else:
        a = np.asarray(user_ids)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional (n,), got shape {a.shape}")
    return a


def _is_int_id(u: Any) -> bool:
    return (isinstance(u, int | np.integer) and not isinstance(u, bool | np.bool_)
            and INT64_MIN <= u <= INT64_MAX)


def hold_ids(user_ids: Any, id_kind: IdKind) -> tuple[np.ndarray, np.ndarray | None]:
    """The ids that a version of ``id_kind`` can hold, matched exactly (see Reads).

    Returns (held (m,) int64 or object str, positions (m,) of those ids in
    ``user_ids``, or None when all n are held). An id of the other kind is not
    held: the caller reports it as unknown, never converts it.
    """
    a = id_array(user_ids)
    n, k = len(a), a.dtype.kind
    if id_kind == "int":
        if k == "i":
            return a.astype(np.int64, copy=False), None
        if k == "u":
            ok = a <= INT64_MAX
        elif k == "O":
            ok = np.fromiter((_is_int_id(u) for u in a.tolist()), dtype=bool, count=n)
        else:  # strings, bytes, floats, bools: never an integer id
            ok = np.zeros(n, dtype=bool)
        keep = np.flatnonzero(ok)
        held = np.array([int(u) for u in a[keep].tolist()], dtype=np.int64)
    else:
        if k == "U":
            return a.astype(object), None
        if k == "O":
            ok = np.fromiter((isinstance(u, str) for u in a.tolist()), dtype=bool, count=n)
        else:  # integers, floats, bytes: never a string id
            ok = np.zeros(n, dtype=bool)
        keep = np.flatnonzero(ok)
        held = np.asarray([str(u) for u in a[keep].tolist()], dtype=object)
    return held, (None if len(keep) == n else keep)


def as_user_ids(user_ids: Any, id_kind: IdKind, what: str = "user_ids") -> np.ndarray:
    """``user_ids`` as an (n,) int64 array (id_kind "int") or object array of str.

    ValueError naming ``what`` when an id is of the other kind (a string or
    float for integer ids, an integer for string ids): ids are never converted.
    """
    held, keep = hold_ids(user_ids, id_kind)
    if keep is not None:
        a = id_array(user_ids, what)
        bad = np.setdiff1d(np.arange(len(a)), keep)[:3]
        want = "integer" if id_kind == "int" else "string"
        raise ValueError(f"{what}: this version stores {want} user ids, got "
                         f"{a[bad].tolist()!r} ({a.dtype} values; ids are "
                         "matched exactly, never converted)")
    return held


# --------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------


class UpliftStore(ABC):
    """Versioned per-user delta (K, R) store (see the module docstring).

    Subclasses implement the storage primitives; this class owns validation,
    the version life cycle (create -> load -> ready -> switch / rollback /
    cleanup) and the read API.
    """

    backend: str = ""
    #: default per-call read timeout in seconds (None: no limit)
    read_timeout: float | None = None

    def __init__(self, namespace: str = "default") -> None:
        self.namespace = check_name(namespace, "namespace")
        # K, R, id kind and buckets of a version never change: cached for reads.
        self._info_cache: dict[str, VersionInfo] = {}

    # --- primitives (backends) ---------------------------------------------
    @abstractmethod
    def _read_info(self, version: str) -> VersionInfo | None: ...

    @abstractmethod
    def _list_infos(self) -> list[VersionInfo]: ...

    @abstractmethod
    def _create(self, info: VersionInfo, expected_rows: int | None) -> None: ...

    @abstractmethod
    def _write_info(self, info: VersionInfo) -> None: ...

    @abstractmethod
    def _put(self, info: VersionInfo, ids: np.ndarray, values: list[bytes],
             shard: int | None) -> None: ...

    @abstractmethod
    def _get(self, info: VersionInfo | None, ids: np.ndarray,
             deadline: float | None) -> tuple[VersionInfo, list[bytes | None]]: ...

    @abstractmethod
    def _update_pointers(
        self, fn: Callable[[str | None, str | None], tuple[str | None, str | None]]
    ) -> tuple[str | None, str | None]: ...

    @abstractmethod
    def _delete(self, info: VersionInfo) -> None: ...

    @abstractmethod
    def pointers(self) -> tuple[str | None, str | None]:
        """(current, previous) version names (None when unset)."""

    @abstractmethod
    def count(self, version: str) -> int:
        """Users stored in ``version``."""

    @abstractmethod
    def loaded_shards(self, version: str) -> dict[int, int]:
        """{shard index: rows} of the shards whose load into ``version`` finished."""

    @abstractmethod
    def items(self, version: str, *, chunk: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every (user_ids (m,), delta (m, K, R)) of ``version``, in chunks (any order);
        a version's members' spread, where held, is read with ``get``."""

    @abstractmethod
    def close(self) -> None: ...

    # --- context manager --------------------------------------------------
    def __enter__(self) -> UpliftStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- versions ---------------------------------------------------------
    def info(self, version: str) -> VersionInfo:
        """VersionInfo of ``version``; StoreError when it does not exist."""
        got = self._read_info(check_name(version, "version"))
        if got is None:
            known = [i.version for i in self._list_infos()]
            raise StoreError(
                f"version {version!r} not found in namespace {self.namespace!r}; known: {known}"
            )
        return got

    def versions(self) -> list[VersionInfo]:
        """All versions of the namespace, oldest first."""
        return sorted(self._list_infos(), key=lambda i: (i.created, i.version))

    def current(self) -> str | None:
        return self.pointers()[0]

    def create_version(self, info: VersionInfo, *, expected_rows: int | None = None
                       ) -> VersionInfo:
        """Create ``info.version`` (status loading), or return it if it exists with the
        same layout (a resumed load). StoreError if it exists with another layout.

        ``expected_rows`` sizes backend structures (Redis hash buckets)."""
        old = self._read_info(info.version)
        if old is not None:
            if not old.same_layout(info):
                raise StoreError(
                    f"version {info.version!r} already exists with another layout "
                    f"(K={old.K}, R={old.R}, arms={old.arms}, responses={old.responses}, "
                    f"ids {old.id_kind}); delete it or use another version name"
                )
            if old.status == "failed":  # a rerun resumes the failed run's load
                extra = {k: v for k, v in old.extra.items() if k != "error"}
                old = replace(old, status="loading", extra=extra)
                self._write_info(old)
            return old
        if not info.created:
            now = datetime.datetime.now(datetime.UTC)
            info = replace(info, created=now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        info = replace(info, status="loading", rows=None)
        self._create(info, expected_rows)
        return self.info(info.version)

    def put(self, version: str, user_ids, delta: np.ndarray, *, spread: np.ndarray | None = None,
            shard: int | None = None) -> None:
        """Upsert users: user_ids (n,), delta (n, K, R), and spread (n, S) exactly when the
        version holds the members' spread (``VersionInfo.members``). Idempotent.

        With ``shard``, the shard is recorded as loaded once its rows are in (a
        resumed job skips it; see ``loaded_shards``).
        """
        info = self.info(version)
        ids = as_user_ids(user_ids, info.id_kind)
        if (spread is None) != (info.members is None):
            raise ValueError(
                f"spread: version {version!r} "
                + ("holds the spread of its members: pass spread (n, S)" if spread is None
                   else "holds delta only (no members): pass no spread"))
        d = _checked(delta, "delta", "(n, K, R)", (len(ids), info.K, info.R), version)
        if spread is not None:
            spread = _checked(spread, "spread", "(n, S)", (len(ids), info.spread_width),
                              version)
        self._put(info, ids, encode_values(d, spread), shard)

    def mark_ready(self, version: str, rows: int) -> VersionInfo:
        """Mark a checked version ready to be switched to."""
        info = replace(self.info(version), status="ready", rows=int(rows))
        self._write_info(info)
        return info

    def mark_failed(self, version: str, error: str) -> VersionInfo:
        """Mark a version whose load stopped with ``error`` as failed (never switchable;
        a rerun of its job resumes it, ``cleanup`` deletes it)."""
        info = self.info(version)
        info = replace(info, status="failed", extra={**info.extra, "error": str(error)[:500]})
        self._write_info(info)
        return info

    def check_reachable(self) -> None:
        """Raise StoreError (one line naming the store) unless the store answers now."""
        self.pointers()

    def health(self) -> dict[str, Any]:
        """{backend, available, reason, ...}: what the store knows of its own state
        without a read (SQLite: whether the file at its path is still the one open)."""
        return {"backend": self.backend, "available": True, "reason": None}

    def verify(self, version: str, *, rows: int, sample_ids=None, sample_delta=None,
               sample_spread=None) -> None:
        """Check that ``version`` holds ``rows`` users and that the samples read back
        exactly (sample_ids (m,), sample_delta (m, K, R), sample_spread (m, S) when the
        version holds spreads). StoreError otherwise."""
        n = self.count(version)
        if n != rows:
            raise StoreError(
                f"version {version!r} holds {n} users but {rows} rows were scored"
                + ("; are some user ids duplicated in the input?" if n < rows else "")
            )
        if sample_ids is not None and len(sample_ids):
            got = self.get(sample_ids, version=version, timeout=None)
            if not got.found.all():
                miss = np.asarray(sample_ids)[~got.found][:5].tolist()
                raise StoreError(f"version {version!r}: sample users {miss} not found")
            want = np.asarray(sample_delta, dtype=np.float32).reshape(len(sample_ids), -1)
            have = got.delta.reshape(len(want), -1)
            if got.spread is not None:
                if sample_spread is None:
                    raise StoreError(f"version {version!r} holds spreads; verify needs "
                                     "sample_spread")
                want = np.concatenate([want, np.asarray(sample_spread, np.float32)], axis=1)
                have = np.concatenate([have, got.spread], axis=1)
            if have.shape != want.shape or not np.array_equal(have, want):
                bad = np.flatnonzero((have != want).any(1))[:5] if have.shape == want.shape \
                    else np.arange(min(5, len(want)))
                raise StoreError(
                    f"version {version!r}: sample reads differ from the scored values "
                    f"(users {np.asarray(sample_ids)[bad].tolist()})"
                )

    def switch(self, version: str) -> tuple[str | None, str | None]:
        """Make ``version`` (status ready) current in one atomic step; the old current
        becomes previous. Switching to the current version changes nothing.
        Returns the new (current, previous)."""
        info = self.info(version)
        if info.status != "ready":
            raise StoreError(
                f"version {version!r} has status {info.status!r}; only a checked (ready) "
                "version can be made current"
            )

        def fn(cur, prev):
            return (cur, prev) if cur == version else (version, cur)

        return self._update_pointers(fn)

    def rollback(self) -> tuple[str | None, str | None]:
        """Make the previous version current again (one step). The rolled-back version
        stays (switchable) until ``cleanup``. Returns the new (current, previous)."""
        cur, prev = self.pointers()
        if prev is None:
            raise StoreError(
                f"namespace {self.namespace!r}: no previous version to roll back to "
                f"(current: {cur!r})"
            )
        if self._read_info(prev) is None:
            raise StoreError(f"previous version {prev!r} no longer exists; cannot roll back")

        def fn(c, p):
            if (c, p) != (cur, prev):
                raise StoreError("the pointers changed during rollback; run it again")
            return p, None

        return self._update_pointers(fn)

    def cleanup(self, *, include_loading: bool = False) -> list[str]:
        """Delete every version that is neither current nor previous (failed ones
        included); ``loading`` versions only with ``include_loading`` (a job may be
        filling them). Returns the deleted names."""
        cur, prev = self.pointers()
        gone = []
        for info in self.versions():
            if info.version in (cur, prev):
                continue
            if info.status == "loading" and not include_loading:
                continue
            self._remove(info)
            gone.append(info.version)
        return gone

    def delete_version(self, version: str) -> None:
        """Delete one version; refused for the current or previous one."""
        info = self.info(version)
        if version in self.pointers():
            raise StoreError(f"version {version!r} is current or previous; switch away first")
        self._remove(info)

    def _remove(self, info: VersionInfo) -> None:
        # Marked first: a version half deleted by a killed cleanup can never be
        # switched to, and the next cleanup finishes it.
        self._write_info(replace(info, status="deleting"))
        self._delete(info)

    def status(self) -> dict[str, Any]:
        """{backend, namespace, current, previous, versions: [VersionInfo as dict]}."""
        cur, prev = self.pointers()
        return {
            "backend": self.backend,
            "namespace": self.namespace,
            "current": cur,
            "previous": prev,
            "versions": [asdict(i) for i in self.versions()],
        }

    # --- reads --------------------------------------------------------------
    def get(self, user_ids, *, version: str | None = None,
            timeout: float | None | Literal["default"] = "default") -> Lookup:
        """Batch read: user_ids (n,) -> Lookup(delta (n, K, R), found (n,), version).

        ``version`` None reads the current version. ``timeout`` in seconds bounds
        the whole call (None: no limit; "default": the store's read timeout).
        Raises StoreTimeout, or StoreError when there is no current version.
        """
        t = self.read_timeout if timeout == "default" else timeout
        deadline = None if t is None else time.monotonic() + float(t)
        info = None if version is None else self._cached_info(version)
        # The backend matches them in the kind its version recorded (``hold_ids``).
        ids = id_array(user_ids)
        info, values = self._get(info, ids, deadline)
        found = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
        delta = np.full((len(values), info.K, info.R), np.nan, dtype=np.float32)
        spread = None if info.members is None else \
            np.full((len(values), info.spread_width), np.nan, dtype=np.float32)
        if found.any():
            d, sp = decode_values([v for v in values if v is not None], info)
            delta[found] = d
            if spread is not None:
                spread[found] = sp
        return Lookup(delta=delta, found=found, version=info.version, spread=spread,
                      members=info.members)

    @staticmethod
    def _scatter(values: list, keep: np.ndarray | None, n: int) -> list:
        """Values of the held ids back at their positions among n (None elsewhere)."""
        if keep is None:
            return values
        out: list = [None] * n
        for i, v in zip(keep.tolist(), values, strict=True):
            out[i] = v
        return out

    def _cached_info(self, version: str) -> VersionInfo:
        info = self._info_cache.get(version)
        if info is None:
            info = self._info_cache[version] = self.info(version)
        return info

    def dump(self, version: str) -> tuple[np.ndarray, np.ndarray]:
        """All of ``version`` sorted by user id: (user_ids (n,), delta (n, K, R)).
        For checks and small stores; memory grows with n."""
        info = self.info(version)
        parts = list(self.items(version))
        if not parts:
            empty = np.empty(0, np.int64 if info.id_kind == "int" else object)
            return empty, np.empty((0, info.K, info.R), np.float32)
        ids = np.concatenate([p[0] for p in parts])
        delta = np.concatenate([p[1] for p in parts])
        order = np.argsort(ids, kind="stable")
        return ids[order], delta[order]


# --------------------------------------------------------------------------------------
# SQLite
# --------------------------------------------------------------------------------------


class SQLiteStore(UpliftStore):
    """Embedded backend: one SQLite file (WAL), one table per version.

    Args:
        path: database file.
        namespace: store namespace (several may share one file).
        read_timeout: default per-call read timeout in seconds (None: no limit).
        busy_timeout: seconds a writer waits for another writer's lock.
        create: create the file (and its folder) when missing. False: StoreError
            "no store at PATH" when missing, and when the path is a folder or a
            file that is not an hmum store (readers never create one).
        check_interval: seconds between checks that the file at ``path`` is still
            the one opened (st_dev, st_ino); 0: before every call. A replaced file
            is reopened, a deleted one is unavailable until a file is back (see
            ``health``).

    Thread-safe: every thread gets its own connection (WAL lets readers run
    while one writer loads).
    """

    backend = "sqlite"
    _TABLES = ("hmum_versions", "hmum_pointers", "hmum_shards")

    def __init__(self, path: str | Path, namespace: str = "default", *,
                 read_timeout: float | None = None, busy_timeout: float = 10.0,
                 create: bool = True, check_interval: float = 1.0) -> None:
        super().__init__(namespace)
        self.path = Path(path)
        self.read_timeout = read_timeout
        self.busy_timeout = busy_timeout
        if not check_interval >= 0:
            raise ValueError(f"check_interval: expected seconds >= 0, got {check_interval!r}")
        self.check_interval = float(check_interval)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Identity of the opened file and of its -wal (see _check_file); _gen counts
        # reopens: a thread's connection of an older generation is replaced.
        self._gen = 0
        self._identity: tuple[int, int] | None = None
        self._wal_identity: tuple[int, int] | None = None
        self._checked_at = -math.inf
        self._unavailable: str | None = None
        self._reopens = 0
        self._last_event: dict[str, Any] | None = None
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder; expected an SQLite store file")
        if not self.path.exists():
            if not create:
                raise StoreError(f"no store at {self.path}")
            self._refuse_orphan_wal()
            self.path.parent.mkdir(parents=True, exist_ok=True)
        c = self._conn(create=create)
        if create:
            with self._tx(c):
                c.execute("CREATE TABLE IF NOT EXISTS hmum_versions (namespace TEXT NOT NULL, "
                          "version TEXT NOT NULL, info TEXT NOT NULL, "
                          "PRIMARY KEY (namespace, version))")
                c.execute("CREATE TABLE IF NOT EXISTS hmum_pointers (namespace TEXT NOT NULL, "
                          "name TEXT NOT NULL, version TEXT, PRIMARY KEY (namespace, name))")
                c.execute("CREATE TABLE IF NOT EXISTS hmum_shards (namespace TEXT NOT NULL, "
                          "version TEXT NOT NULL, shard INTEGER NOT NULL, rows INTEGER NOT NULL, "
                          "PRIMARY KEY (namespace, version, shard))")

    def _wal(self) -> Path:
        return self.path.with_name(self.path.name + "-wal")

    def _refuse_orphan_wal(self) -> None:
        # A -wal without its database belongs to a deleted store that a process may
        # still hold open: SQLite would pair it with the new file (I/O errors, or
        # pages of the old store read as the new one's).
        left = [q.name for q in (self._wal(), self.path.with_name(self.path.name + "-shm"))
                if q.exists()]
        if left:
            raise StoreError(
                f"{self.path} does not exist but {', '.join(left)} beside it do: left by a "
                "deleted store (a running service may still hold it open); delete them "
                "together with the store file, then run again")

    @staticmethod
    def _stat_id(path: Path) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    # --- connections ----------------------------------------------------------
    def _conn(self, create: bool = False) -> sqlite3.Connection:
        if time.monotonic() - self._checked_at >= self.check_interval:
            self._check_file()
        if self._unavailable is not None:
            raise StoreError(self._unavailable)
        c = getattr(self._local, "conn", None)
        if c is not None and self._local.gen == self._gen:
            return c
        if c is not None:  # opened on a file that is no longer the one at the path
            with self._lock:
                if c in self._conns:
                    self._conns.remove(c)
            c.close()
            self._local.conn = None
        gen = self._gen
        c = self._connect(create=create)
        self._local.conn, self._local.gen = c, gen
        with self._lock:
            self._conns.append(c)
        return c

    def _connect(self, create: bool) -> sqlite3.Connection:
        """A new connection; only ``create`` makes a missing file (mode=rwc)."""
        uri = f"{self.path.absolute().as_uri()}?mode={'rwc' if create else 'rw'}"
        first = self._identity is None
        try:
            # isolation_level=None: transactions are explicit (BEGIN / COMMIT below).
            c = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                                timeout=self.busy_timeout)
        except sqlite3.OperationalError as e:
            if not self.path.exists():
                raise StoreError(f"no store at {self.path}") from None
            raise StoreError(f"{self.path}: cannot open the store ({e})") from None
        try:
            if not create:
                # Checked before any PRAGMA that writes: another program's database
                # must not be switched to WAL by a reading command.
                have = {r[0] for r in c.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'").fetchall()}
                if not set(self._TABLES) <= have:
                    raise StoreError(f"{self.path}: an SQLite database but not an hmum "
                                     "uplift store (no hmum_versions table)")
            c.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a crash can lose the last commits, never corrupt.
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache
        except sqlite3.DatabaseError as e:
            c.close()
            if "not a database" in str(e):
                raise StoreError(f"{self.path}: not an SQLite database ({e})") from None
            raise StoreError(f"{self.path}: cannot open the store ({e})") from None
        except BaseException:
            c.close()
            raise
        if first:
            with self._lock:
                if self._identity is None:
                    self._identity = self._stat_id(self.path)
                    self._wal_identity = self._stat_id(self._wal())
                    self._checked_at = time.monotonic()
        return c

    def _check_file(self) -> None:
        """Compare the file at the path with the one opened; reopen, or mark it unavailable.

        Cheap (one or two stat calls); done at most every ``check_interval``. While
        unavailable, the old connections stay open: the old file's inodes cannot be
        reused by a new file meanwhile, so the identities compared stay unambiguous.
        """
        with self._lock:
            self._checked_at = time.monotonic()
            if self._identity is None:
                return  # nothing opened yet
            now = self._stat_id(self.path)
            if now == self._identity and self._unavailable is None:
                return
            if now is None:
                msg = (f"no store at {self.path}: the store file was deleted while open; "
                       "waiting for a new file at that path")
                if self._unavailable != msg:
                    self._unavailable = msg
                    self._event("deleted", msg)
                return
            wal = self._stat_id(self._wal())
            if now != self._identity and wal is not None and wal == self._wal_identity:
                msg = (f"{self.path} was replaced but {self._wal().name} beside it still "
                       "belongs to the old file; refusing to pair them (delete the old -wal "
                       "and -shm files)")
                if self._unavailable != msg:
                    self._unavailable = msg
                    self._event("mismatched_wal", msg)
                return
            what = "replaced" if now != self._identity else "back"
            self._identity, self._wal_identity = now, None
            self._unavailable = None
            self._gen += 1
            self._reopens += 1
            self._info_cache.clear()  # a new file may hold other versions
            self._event(what, f"the store file {self.path} was {what}; reopened it")
        # The first connection of the new generation records the new file's -wal.
        self._record_wal()

    def _record_wal(self) -> None:
        try:
            self._conn()  # opens the new file (WAL mode creates its -wal)
        except StoreError:
            return
        with self._lock:
            if self._wal_identity is None:
                self._wal_identity = self._stat_id(self._wal())

    def _event(self, kind: str, message: str) -> None:
        self._last_event = {"event": kind, "message": message,
                            "at": datetime.datetime.now(datetime.UTC).isoformat()}
        log.warning("uplift store: %s", message)

    def health(self) -> dict[str, Any]:
        """{backend, path, available, reason, reopens, last_event}: a fresh check of
        the file (``reason`` says why it is unavailable: deleted, mismatched -wal)."""
        self._check_file()
        return {"backend": self.backend, "path": str(self.path),
                "available": self._unavailable is None, "reason": self._unavailable,
                "reopens": self._reopens, "last_event": self._last_event}

    @contextlib.contextmanager
    def _tx(self, c: sqlite3.Connection, mode: str = "IMMEDIATE"):
        c.execute(f"BEGIN {mode}")
        try:
            yield c
        except BaseException:
            if c.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for c in self._conns:
                c.close()
            self._conns.clear()
        self._local = threading.local()

    def _table(self, version: str) -> str:
        return f'"hmum_delta__{self.namespace}__{version}"'

    # --- primitives -----------------------------------------------------------
    def _read_info(self, version):
        row = self._conn().execute(
            "SELECT info FROM hmum_versions WHERE namespace=? AND version=?",
            (self.namespace, version)).fetchone()
        return None if row is None else VersionInfo.from_json(row[0])

    def _list_infos(self):
        rows = self._conn().execute(
            "SELECT info FROM hmum_versions WHERE namespace=?", (self.namespace,)).fetchall()
        return [VersionInfo.from_json(r[0]) for r in rows]

    def _create(self, info, expected_rows):
        c = self._conn()
        ddl = (f"CREATE TABLE IF NOT EXISTS {self._table(info.version)} "
               "(user_id INTEGER PRIMARY KEY, delta BLOB NOT NULL)" if info.id_kind == "int" else
               f"CREATE TABLE IF NOT EXISTS {self._table(info.version)} "
               "(user_id TEXT PRIMARY KEY, delta BLOB NOT NULL) WITHOUT ROWID")
        with self._tx(c):
            c.execute(ddl)
            c.execute("INSERT OR REPLACE INTO hmum_versions VALUES (?, ?, ?)",
                      (self.namespace, info.version, info.to_json()))

    def _write_info(self, info):
        c = self._conn()
        with self._tx(c):
            c.execute("UPDATE hmum_versions SET info=? WHERE namespace=? AND version=?",
                      (info.to_json(), self.namespace, info.version))

    def _put(self, info, ids, values, shard):
        c = self._conn()
        order = np.argsort(ids, kind="stable")  # B-tree appends in key order are cheapest
        id_list = ids[order].tolist()
        vals = [values[i] for i in order.tolist()]
        with self._tx(c):
            c.executemany(f"INSERT OR REPLACE INTO {self._table(info.version)} VALUES (?, ?)",
                          zip(id_list, vals, strict=True))
            if shard is not None:
                c.execute("INSERT OR REPLACE INTO hmum_shards VALUES (?, ?, ?, ?)",
                          (self.namespace, info.version, int(shard), len(id_list)))

    def _get(self, info, ids, deadline):
        c = self._conn()
        if deadline is not None:
            def stop() -> int:  # called every 1000 VM steps; nonzero interrupts the query
                return int(time.monotonic() > deadline)
            c.set_progress_handler(stop, 1000)
        try:
            c.execute("BEGIN DEFERRED")  # pointer and rows from one snapshot
            return self._select(c, info, ids)
        except sqlite3.OperationalError as e:
            if "interrupt" in str(e):
                raise StoreTimeout(f"SQLite read did not finish within its timeout ({e})") from e
            if "no such table" in str(e):
                self._info_cache.clear()
                raise StoreError(f"the version read was deleted meanwhile ({e}); read again") from e
            raise
        finally:
            # Handler off first, or the deadline would interrupt the COMMIT too.
            c.set_progress_handler(None, 0)
            if c.in_transaction:
                c.execute("COMMIT")

    def _select(self, c: sqlite3.Connection, info: VersionInfo | None, ids: np.ndarray):
        if info is None:
            cur = c.execute("SELECT version FROM hmum_pointers WHERE namespace=? AND "
                            "name='current'", (self.namespace,)).fetchone()
            if cur is None or cur[0] is None:
                raise StoreError(f"namespace {self.namespace!r} has no current version yet; "
                                 "load and switch one first")
            info = self._cached_info(cur[0])
        # Exact kind: SQLite's column affinity would turn '007' into 7 on an INTEGER key.
        held, keep = hold_ids(ids, info.id_kind)
        id_list = held.tolist()
        table = self._table(info.version)
        if not id_list:
            return info, [None] * len(ids)
        if len(id_list) == 1:
            row = c.execute(f"SELECT delta FROM {table} WHERE user_id=?", id_list).fetchone()
            return info, self._scatter([None if row is None else row[0]], keep, len(ids))
        found: dict = {}
        step = 500  # below SQLITE_MAX_VARIABLE_NUMBER on every build
        for s in range(0, len(id_list), step):
            part = id_list[s:s + step]
            q = f"SELECT user_id, delta FROM {table} WHERE user_id IN ({','.join('?' * len(part))})"
            found.update(c.execute(q, part).fetchall())
        return info, self._scatter([found.get(u) for u in id_list], keep, len(ids))

    def pointers(self):
        rows = dict(self._conn().execute(
            "SELECT name, version FROM hmum_pointers WHERE namespace=?",
            (self.namespace,)).fetchall())
        return rows.get("current"), rows.get("previous")

    def _update_pointers(self, fn):
        c = self._conn()
        with self._tx(c):  # IMMEDIATE: read-modify-write under the write lock
            rows = dict(c.execute("SELECT name, version FROM hmum_pointers WHERE namespace=?",
                                  (self.namespace,)).fetchall())
            new = fn(rows.get("current"), rows.get("previous"))
            c.executemany("INSERT OR REPLACE INTO hmum_pointers VALUES (?, ?, ?)",
                          [(self.namespace, "current", new[0]),
                           (self.namespace, "previous", new[1])])
        return new

    def _delete(self, info):
        c = self._conn()
        with self._tx(c):
            c.execute(f"DROP TABLE IF EXISTS {self._table(info.version)}")
            c.execute("DELETE FROM hmum_shards WHERE namespace=? AND version=?",
                      (self.namespace, info.version))
            c.execute("DELETE FROM hmum_versions WHERE namespace=? AND version=?",
                      (self.namespace, info.version))
        self._info_cache.pop(info.version, None)

    def count(self, version):
        self.info(version)
        return self._conn().execute(f"SELECT COUNT(*) FROM {self._table(version)}").fetchone()[0]

    def loaded_shards(self, version):
        rows = self._conn().execute(
            "SELECT shard, rows FROM hmum_shards WHERE namespace=? AND version=?",
            (self.namespace, version)).fetchall()
        return {int(s): int(r) for s, r in rows}

    def items(self, version, *, chunk=65536):
        info = self.info(version)
        cur = self._conn().execute(
            f"SELECT user_id, delta FROM {self._table(version)} ORDER BY user_id")
        while True:
            rows = cur.fetchmany(chunk)
            if not rows:
                return
            ids = as_user_ids([r[0] for r in rows], info.id_kind)
            yield ids, decode_values([r[1] for r in rows], info)[0]


# --------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------


class RedisStore(UpliftStore):
    """Production backend: Redis via redis-py (hiredis parser when installed).

    Args:
        url: ``redis://host:port/db``.
        namespace: key prefix part (see the key schema in the module docstring).
        read_timeout: default deadline of one ``get`` call, seconds (a few ms).
        write_timeout: socket timeout of writes and admin commands, seconds.
        connect_timeout: seconds to open a connection (a read that needs a new
            connection may take this long on top of its own timeout).
        max_connections: size of the connection pool.
        pointer_ttl: seconds a read may reuse the current pointer it fetched
            (0: fetch it on every call, one more round trip). A switch is seen by
            every reader within this time; the previous version is kept until the
            next switch, so a reader never hits a deleted version.
        users_per_bucket: target users per hash bucket of a new version.
        pipeline_commands: commands per pipelined write batch.
    """

    backend = "redis"

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", namespace: str = "default", *,
                 read_timeout: float | None = 0.005, write_timeout: float = 10.0,
                 connect_timeout: float = 0.1, max_connections: int = 32,
                 pointer_ttl: float = 1.0, users_per_bucket: int = USERS_PER_BUCKET,
                 pipeline_commands: int = 2000) -> None:
        super().__init__(namespace)
        try:
            import redis
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise StoreError("the Redis backend needs redis-py: pip install 'redis>=5' hiredis"
                             ) from e
        self._redis = redis
        self.url = url
        self.read_timeout = read_timeout
        self.pointer_ttl = pointer_ttl
        self.users_per_bucket = int(users_per_bucket)
        self.pipeline_commands = int(pipeline_commands)
        self.write_timeout = write_timeout
        # RESP2 (hiredis-parsed) on both pools: no HELLO handshake. Reads get their own
        # pool with short socket timeouts and no CLIENT SETINFO handshake either, so
        # opening a read connection costs no round trip that a busy server could
        # stall past the read's deadline.
        self.pool = redis.ConnectionPool.from_url(
            url, max_connections=max_connections, socket_timeout=write_timeout,
            socket_connect_timeout=connect_timeout, health_check_interval=0, protocol=2)
        self.read_pool = redis.ConnectionPool.from_url(
            url, max_connections=max_connections,
            socket_timeout=read_timeout if read_timeout is not None else write_timeout,
            socket_connect_timeout=connect_timeout, health_check_interval=0, protocol=2,
            **_no_setinfo(redis))
        self.client = redis.Redis(connection_pool=self.pool)
        self._pointer: tuple[float, str | None] = (-1.0, None)
        self._prefix = f"hmum:{self.namespace}:"

    # --- keys (the documented schema) --------------------------------------------
    def key_current(self) -> str:
        return self._prefix + "current"

    def key_previous(self) -> str:
        return self._prefix + "previous"

    def key_versions(self) -> str:
        return self._prefix + "versions"

    def key_shards(self, version: str) -> str:
        return f"{self._prefix}v:{version}:shards"

    def key_bucket(self, version: str, bucket: int) -> str:
        return f"{self._prefix}v:{version}:b:{bucket}"

    @staticmethod
    def buckets_of(ids: np.ndarray, n_buckets: int, id_kind: IdKind) -> np.ndarray:
        """Bucket (n,) int64 of each user id (see the key schema)."""
        if id_kind == "int":
            return np.mod(ids.astype(np.int64), n_buckets)
        return np.fromiter((zlib.crc32(str(u).encode()) % n_buckets for u in ids),
                           dtype=np.int64, count=len(ids))

    @staticmethod
    def fields_of(ids: np.ndarray, id_kind: IdKind) -> list[bytes]:
        if id_kind == "int":
            return ids.astype("S20").tolist()  # decimal ASCII, vectorized
        return [str(u).encode() for u in ids]

    def close(self) -> None:
        self.pool.disconnect()
        self.read_pool.disconnect()

    # --- primitives -----------------------------------------------------------
    def _read_info(self, version):
        raw = self.client.hget(self.key_versions(), version)
        return None if raw is None else VersionInfo.from_json(raw)

    def _list_infos(self):
        return [VersionInfo.from_json(v) for v in self.client.hvals(self.key_versions())]

    def _create(self, info, expected_rows):
        if info.n_buckets is None:
            # Without a row count, 1024 buckets: listpack-sized up to ~65k users;
            # beyond that buckets still work, as bigger (hashtable) hashes.
            rows = DEFAULT_EXPECTED_ROWS if expected_rows is None else int(expected_rows)
            info = replace(info, n_buckets=max(1, -(-rows // self.users_per_bucket)))
        self._write_info(info)

    def _write_info(self, info):
        self.client.hset(self.key_versions(), info.version, info.to_json())

    def _put(self, info, ids, values, shard):
        nb = int(info.n_buckets or 1)
        buckets = self.buckets_of(ids, nb, info.id_kind)
        order = np.argsort(buckets, kind="stable")
        b_sorted = buckets[order]
        # Interleave field, value, field, value... once; each bucket is then one slice.
        fields = self.fields_of(ids, info.id_kind)
        flat: list[bytes] = [b""] * (2 * len(ids))
        idx = order.tolist()
        flat[0::2] = [fields[i] for i in idx]
        flat[1::2] = [values[i] for i in idx]
        cuts = np.flatnonzero(np.diff(b_sorted)) + 1
        starts = np.concatenate([[0], cuts]).tolist()
        ends = np.concatenate([cuts, [len(ids)]]).tolist()
        pipe = self.client.pipeline(transaction=False)
        pending = 0
        for s, e in zip(starts, ends, strict=True):
            pipe.execute_command("HSET", self.key_bucket(info.version, int(b_sorted[s])),
                                 *flat[2 * s:2 * e])
            pending += 1
            if pending >= self.pipeline_commands:
                pipe.execute()
                pending = 0
        if pending:
            pipe.execute()
        if shard is not None:
            # Written after every row: a load killed halfway is redone (HSET is an upsert).
            self.client.hset(self.key_shards(info.version), str(int(shard)), len(ids))

    def _roundtrip(self, conn, commands: list[tuple], deadline: float | None) -> list:
        """Send ``commands`` in one write, read every reply before ``deadline``."""
        redis = self._redis
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            out = []
            for _ in commands:
                if deadline is None:
                    out.append(conn.read_response(timeout=self.write_timeout))
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise redis.TimeoutError("deadline passed")
                out.append(conn.read_response(timeout=left))
            return out
        except redis.TimeoutError as e:
            conn.disconnect()  # replies may still be in flight: never reuse this connection
            raise StoreTimeout(f"Redis read did not finish within its timeout ({e})") from e
        except BaseException:
            conn.disconnect()
            raise

    def _get(self, info, ids, deadline):
        conn = self.read_pool.get_connection()
        try:
            if info is None:
                ts, name = self._pointer
                if name is None or time.monotonic() - ts > self.pointer_ttl:
                    raw = self._roundtrip(conn, [("GET", self.key_current())], deadline)[0]
                    name = None if raw is None else raw.decode()
                    self._pointer = (time.monotonic(), name)
                if name is None:
                    raise StoreError(f"namespace {self.namespace!r} has no current version "
                                     "yet; load and switch one first")
                info = self._cached_info(name)
            n_all = len(ids)
            ids, keep = hold_ids(ids, info.id_kind)  # exact kind, never converted
            n = len(ids)
            if n == 0:
                return info, [None] * n_all
            buckets = self.buckets_of(ids, int(info.n_buckets or 1), info.id_kind)
            fields = self.fields_of(ids, info.id_kind)
            if n == 1:
                reply = self._roundtrip(
                    conn, [("HGET", self.key_bucket(info.version, int(buckets[0])), fields[0])],
                    deadline)
                return info, self._scatter(reply, keep, n_all)
            # One HMGET per bucket touched, all in one round trip.
            order = np.argsort(buckets, kind="stable")
            b_sorted = buckets[order]
            cuts = (np.flatnonzero(np.diff(b_sorted)) + 1).tolist()
            groups = np.split(order, cuts)
            commands = [("HMGET", self.key_bucket(info.version, int(buckets[g[0]])),
                         *[fields[i] for i in g.tolist()]) for g in groups]
            replies = self._roundtrip(conn, commands, deadline)
            values: list[bytes | None] = [None] * n
            for g, rep in zip(groups, replies, strict=True):
                for i, v in zip(g.tolist(), rep, strict=True):
                    values[i] = v
            return info, self._scatter(values, keep, n_all)
        finally:
            self.read_pool.release(conn)

    def pointers(self):
        cur, prev = self.client.mget(self.key_current(), self.key_previous())
        return (None if cur is None else cur.decode(), None if prev is None else prev.decode())

    def _update_pointers(self, fn):
        redis = self._redis
        keys = (self.key_current(), self.key_previous())
        for _ in range(50):  # bounded optimistic retries (WATCH / MULTI / EXEC)
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*keys)
                    cur, prev = pipe.mget(*keys)
                    new = fn(None if cur is None else cur.decode(),
                             None if prev is None else prev.decode())
                    pipe.multi()
                    for k, v in zip(keys, new, strict=True):
                        if v is None:
                            pipe.delete(k)
                        else:
                            pipe.set(k, v)
                    pipe.execute()
                    self._pointer = (-1.0, None)
                    return new
                except redis.WatchError:
                    continue
        raise StoreError("could not update the version pointers: too many concurrent changes")

    def _delete(self, info):
        nb = int(info.n_buckets or 1)
        pipe = self.client.pipeline(transaction=False)
        step = 1000
        for s in range(0, nb, step):
            pipe.unlink(*[self.key_bucket(info.version, b) for b in range(s, min(nb, s + step))])
            if (s // step) % 20 == 19:
                pipe.execute()
        pipe.unlink(self.key_shards(info.version))
        pipe.execute()
        # The registry entry goes last: a cleanup killed halfway is finished by the next.
        self.client.hdel(self.key_versions(), info.version)
        self._info_cache.pop(info.version, None)

    def _bucket_pipeline(self, info: VersionInfo, command: str, step: int = 1000):
        nb = int(info.n_buckets or 1)
        for s in range(0, nb, step):
            pipe = self.client.pipeline(transaction=False)
            for b in range(s, min(nb, s + step)):
                pipe.execute_command(command, self.key_bucket(info.version, b))
            yield pipe.execute()

    def count(self, version):
        info = self.info(version)
        return int(sum(sum(part) for part in self._bucket_pipeline(info, "HLEN")))

    def loaded_shards(self, version):
        raw = self.client.hgetall(self.key_shards(version))
        return {int(k): int(v) for k, v in raw.items()}

    def items(self, version, *, chunk=65536):
        info = self.info(version)
        step = max(1, chunk // max(1, self.users_per_bucket))
        for part in self._bucket_pipeline(info, "HGETALL", step=step):
            pairs = [kv for h in part for kv in h.items()]
            if not pairs:
                continue
            if info.id_kind == "int":
                ids = np.array([int(k) for k, _ in pairs], dtype=np.int64)
            else:
                ids = np.array([k.decode() for k, _ in pairs], dtype=object)
            yield ids, decode_values([v for _, v in pairs], info)[0]

    def check_reachable(self) -> None:
        try:
            self.client.ping()
        except self._redis.RedisError as e:
            raise StoreError(f"store {redact_url(self.url)}: Redis does not answer ({e})") from None

    def memory_used(self) -> int:
        """The server's used_memory in bytes (INFO memory)."""
        return int(self.client.info("memory")["used_memory"])


def _no_setinfo(redis) -> dict[str, Any]:
    """Connection kwargs that turn off the CLIENT SETINFO handshake (redis-py 5 to 8+)."""
    import inspect

    import redis.connection

    base = getattr(redis.connection, "AbstractConnection", redis.Connection)
    if "driver_info" in inspect.signature(base.__init__).parameters:
        return {"driver_info": None}
    return {"lib_name": None, "lib_version": None}


# --------------------------------------------------------------------------------------
# Opening a store
# --------------------------------------------------------------------------------------


def open_store(url: str | Path, namespace: str = "default", *, create: bool = False,
               **kwargs) -> UpliftStore:
    """A store from a URL: ``redis://...`` -> RedisStore; ``sqlite:///path`` or a
    plain path -> SQLiteStore. Keyword arguments go to the backend.

    ``create`` False (reading: ``hmum store``, the service): a missing SQLite file
    is StoreError "no store at PATH", never a new empty store; True (writing: the
    scoring job) creates it. Redis has nothing to create (``create`` is ignored).
    """
    s = str(url)
    if s.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(s, namespace, **kwargs)
    if s.startswith("sqlite:///"):
        s = s[len("sqlite:///"):]
        # sqlite:////abs/path keeps its leading slash; sqlite:///rel/path is relative
    elif "://" in s:
        raise ValueError(f"store URL {s!r}: expected redis://host:port/db, sqlite:///path "
                         "or a file path")
    return SQLiteStore(s, namespace, create=create, **kwargs)


def store_errors() -> tuple[type[BaseException], ...]:
    """Exception types a store call may raise for an expected failure (a store
    down, a file that is not a store): StoreError, sqlite3.Error, redis-py's
    RedisError when installed. For error boundaries (the CLI)."""
    out: list[type[BaseException]] = [StoreError, sqlite3.Error]
    try:
        import redis
    except ImportError:  # pragma: no cover - depends on the environment
        return tuple(out)
    return (*out, redis.RedisError)


def redact_url(url: str) -> str:
    """``url`` without a password (``redis://user:secret@host`` -> ``redis://user:***@host``)."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", str(url))


# --------------------------------------------------------------------------------------
# A throwaway local redis-server (tests, benchmarks, development)
# --------------------------------------------------------------------------------------


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Terminate a child process, killing it if it does not exit within ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def local_redis_server(binary: str = "redis-server", *, start_timeout: float = 10.0
                       ) -> Iterator[str]:
    """Start ``redis-server`` on 127.0.0.1 at a free port, without persistence; yield
    its URL; stop it on exit. FileNotFoundError when the binary is missing (Debian:
    ``apt-get install redis-server``)."""
    exe = shutil.which(binary)
    if exe is None:
        raise FileNotFoundError(
            f"{binary} not found on PATH; install it (Debian/Ubuntu: apt-get install "
            "redis-server)")
    workdir = tempfile.mkdtemp(prefix="hmum-redis-")
    proc = None
    try:
        for _ in range(5):  # bounded: the free port may be taken before the server binds
            port = free_loopback_port()
            proc = subprocess.Popen(
                [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                 "--appendonly", "no", "--dir", workdir, "--protected-mode", "yes"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t_end = time.monotonic() + start_timeout
            up = False
            while time.monotonic() < t_end and proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                        s.sendall(b"PING\r\n")
                        up = s.recv(16).startswith(b"+PONG")
                except OSError:
                    up = False
                if up:
                    break
                time.sleep(0.05)
            if up:
                break
            proc.kill()
            proc.wait()
            proc = None
        if proc is None:
            raise RuntimeError("could not start redis-server on a free loopback port")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)
