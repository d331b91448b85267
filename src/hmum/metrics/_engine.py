"""The fast engine behind the ranking metrics (private).

Everything here works on *blocks*: runs of rows with tied scores, in descending
score order, each summarised by cumulative sums at its last row (as scikit-uplift
does with its "threshold indices"). Curves and areas are then O(B) in the number
of blocks B <= N.

Sorting is the whole cost. ``np.argsort`` of 14 M floats takes about 2.5 s on a
small machine, but sorting 14 M ``uint64`` *values* about 1 s, and a value sort
splits across threads in place. So the score is mapped to an order-preserving
``uint64`` key and what the blocks need is packed into the key's low bits:

* ``bits``: binary labels (as codes ``2 t + y``) whose key range leaves two spare
  bits: the key carries the code itself; nothing is gathered after the sort.
* ``index``: any labels: the key carries ``(row << 1) | t`` below the score key;
  if the score range leaves too few bits the score part is coarsened, and the few
  runs where that merged distinct scores are re-sorted exactly. Labels are then
  gathered by row, a chunk at a time.
* ``argsort``: a plain stable argsort of the exact key; used for small inputs.

All three give the same blocks (tested against each other and a slow reference).
The perfect ranking of continuous labels, ``p = y' (2 t - 1)`` with signed zeros
(the arm lives in the sign bit), is one more value sort of a key of p.

After the sort, rows are read back in chunks (:class:`SortedRows`) and areas are
accumulated as they go (:class:`AreaAccumulator`), so no N-sized curve is built.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

_SIGN = 1 << 63
_U64_MAX = (1 << 64) - 1
# Below this many rows the plain argsort path is fast enough and simplest.
_SMALL = 1 << 16
# Below this many rows splitting a sort across threads costs more than it saves.
_PARALLEL_MIN = 1 << 18
# Rows decoded at a time after the sort (small temporaries; see SortedRows).
CHUNK = 1 << 17


def num_threads() -> int:
    """Threads the metric sorts may use: $HMUM_NUM_THREADS, else the usable CPUs (max 8)."""
    env = os.environ.get("HMUM_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError as exc:
            raise ValueError(f"HMUM_NUM_THREADS must be a positive integer, got {env!r}") from exc
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


@dataclass(frozen=True, slots=True)
class Blocks:
    """Cumulative sums at the end of each block of tied scores, best score first.

    Attributes (all shape (B,)):
        n: rows up to and including the block (int64, strictly increasing).
        nt: treated rows among them (float64, as scikit-uplift keeps them).
        yt: sum of the treated rows' labels (float64).
        yc: sum of the control rows' labels (float64).
    """

    n: np.ndarray
    nt: np.ndarray
    yt: np.ndarray
    yc: np.ndarray


_FIELDS = ("n", "nt", "yt", "yc")


# --------------------------------------------------------------------------- curves


def qini_values(b: Blocks) -> np.ndarray:
    """Qini curve at each block end: ``yt - yc * nt / nc`` (``yt`` while nc == 0). (B,)"""
    nc = b.n - b.nt
    # the ratio is written into nc; where nc == 0 it keeps nc's 0, as scikit-uplift's
    # np.divide(..., out=zeros, where=nc != 0) does
    ratio = np.divide(b.nt, nc, out=nc, where=nc != 0)
    np.multiply(b.yc, ratio, out=ratio)
    return np.subtract(b.yt, ratio, out=ratio)


def uplift_values(b: Blocks) -> np.ndarray:
    """Uplift curve at each block end: ``(yt / nt - yc / nc) * n``, a mean taken as 0
    for an empty arm. (B,)"""
    nc = b.n - b.nt
    np.divide(b.yc, nc, out=nc, where=nc != 0)  # nc == 0 keeps its 0
    rate_t = np.divide(b.yt, b.nt, out=np.zeros_like(nc), where=b.nt != 0)
    np.subtract(rate_t, nc, out=rate_t)
    return np.multiply(rate_t, b.n, out=rate_t)


def area_above_chord(x: np.ndarray, v: np.ndarray) -> float:
    """Trapezoid area between a curve and its chord.

    The curve runs from (0, 0) through the points (x[i], v[i]); the chord is the
    straight line from (0, 0) to (x[-1], v[-1]) -- the "random" line. Rearranging the
    trapezoid sum gives ``0.5 * sum_i v[i] * (x[i+1] - x[i-1])`` with ``x[-1] = 0`` and
    a last weight of ``-x[-2]``. Computing the difference directly, rather than two
    large areas that nearly cancel, also makes an all-tied score exactly 0.

    Args:
        x: (B,) increasing positions (rows targeted).
        v: (B,) curve values.
    """
    m = x.shape[0]
    w = np.empty(m, dtype=np.float64)
    if m > 1:
        w[:-1] = x[1:]
        w[1:-1] -= x[:-2]
        w[-1] = -x[-2]
    else:
        w[0] = 0.0
    return 0.5 * float(np.dot(v, w))


# ----------------------------------------------------------------- order-preserving keys


def desc_key(score: np.ndarray) -> np.ndarray:
    """A new uint64 array whose ascending order is the score's descending order.

    Equal scores (including -0.0 and 0.0) get equal keys and distinct scores distinct
    keys, so ties are exactly the ties of the score. Built chunk by chunk so that the
    only large allocation is the result. (N,) -> (N,)
    """
    n = score.shape[0]
    key = np.empty(n, dtype=np.uint64)
    kind = score.dtype.kind
    for a in range(0, n, CHUNK):
        s = score[a : a + CHUNK]
        out = key[a : a + CHUNK]
        if kind == "f":
            # + 0.0 turns -0.0 into +0.0 (they compare equal, so they must tie) and
            # widens float16/32 exactly
            bits = out.view(np.int64)
            np.add(s, 0.0, out=bits.view(np.float64))
            m = np.right_shift(bits, 63)  # -1 where negative, 0 elsewhere
            np.invert(m, out=m)
            mu = m.view(np.uint64)
            np.right_shift(mu, np.uint64(1), out=mu)  # 0x7FF..F where x >= 0, else 0
            # x >= 0 -> ~bits without the sign bit (larger x, smaller key, all < 2**63);
            # x < 0  -> bits as they are (sign bit set; larger |x|, larger key)
            np.bitwise_xor(out, mu, out=out)
        elif kind == "u":
            np.invert(s, out=out, dtype=np.uint64, casting="unsafe")
        else:
            # signed ints and bools: flip the sign bit for unsigned order, then invert
            out[...] = s.astype(np.int64).view(np.uint64)
            np.bitwise_xor(out, np.uint64(_SIGN - 1), out=out)
    return key


def compress_key(key: np.ndarray) -> int:
    """Shift keys in place so the smallest is 0; return the largest.

    When scores have both signs the keys fall in two clusters separated by the huge
    unused range of tiny magnitudes around 0; that gap is removed (a monotone map), so
    that e.g. scores in [-1, 1] fit in about 58 bits.
    """
    kmin, kmax = int(key.min()), int(key.max())
    if kmin < _SIGN <= kmax and kmax - kmin >= 1 << 56:
        neg = key >= np.uint64(_SIGN)  # the negative scores
        lo_max = int(np.max(key, where=~neg, initial=0))
        hi_min = int(np.min(key, where=neg, initial=_U64_MAX))
        gap = hi_min - lo_max - 1
        if gap > 0:
            np.subtract(key, np.uint64(gap), out=key, where=neg)
            kmax -= gap
    key -= np.uint64(kmin)
    return kmax - kmin


# ---------------------------------------------------------------------------- sorting


def sort_values(a: np.ndarray, threads: int) -> np.ndarray:
    """Sort a 1-D array of values ascending, in place, over ``threads`` threads.

    ``a.partition`` first splits the values in place around ``threads - 1`` order
    statistics (O(N), no extra memory); the parts are then sorted concurrently
    (numpy releases the GIL while sorting). The result is exactly what one sort gives.
    Returns ``a``.
    """
    n = a.shape[0]
    if threads <= 1 or n < _PARALLEL_MIN:
        a.sort()
        return a
    cuts = [n * j // threads for j in range(1, threads)]
    a.partition(cuts)
    bounds = [0, *cuts, n]
    parts = [a[bounds[j] : bounds[j + 1]] for j in range(threads)]
    workers = [threading.Thread(target=part.sort) for part in parts[1:]]
    for w in workers:
        w.start()
    parts[0].sort()
    for w in workers:
        w.join()
    return a


# ------------------------------------------------------------------------- labels


class ContinuousLabels(NamedTuple):
    """Continuous labels, normalized on the fly as ``y' = (y - lo) / span``.

    Attributes: y (N,) the raw labels; t (N,) bool treatment; lo = min y; span =
    max y - min y > 0.
    """

    y: np.ndarray
    t: np.ndarray
    lo: float
    span: float

    def normalized(self, y: np.ndarray) -> np.ndarray:
        """``(y - lo) / span`` of some of the raw labels, as float64 >= +0.0."""
        out = np.subtract(y, self.lo, dtype=np.float64)
        np.divide(out, self.span, out=out)
        # a label -0.0 gives -0.0 - 0.0 = -0.0, whose sign bit would read as control
        return np.add(out, 0.0, out=out)


#: Labels as the engine takes them: binary codes (see :func:`codes`) or continuous.
Labels = np.ndarray | ContinuousLabels


def codes(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Binary labels as ``2 t + y``: 0 control non-responder, 1 control responder,
    2 treated non-responder, 3 treated responder. (N,) uint8"""
    g = np.left_shift(t.view(np.uint8), 1)
    for a in range(0, g.shape[0], CHUNK):
        g[a : a + CHUNK] |= y[a : a + CHUNK] != 0
    return g


def _decode_codes(g: np.ndarray):
    return g >= 2, g == 3, g == 1


def _decode_labels(labels: Labels, rows: np.ndarray, treated: np.ndarray | None = None):
    """(treated, treated label, control label) of some rows, for :meth:`SortedRows._chunk`."""
    if not isinstance(labels, ContinuousLabels):
        return _decode_codes(np.take(labels, rows))
    if treated is None:
        treated = np.take(labels.t, rows)
    yn = labels.normalized(np.take(labels.y, rows))
    return treated, np.where(treated, yn, 0.0), np.where(treated, 0.0, yn)


def _decode_payload(ps: np.ndarray):
    """Decode ``p = y' (2 t - 1)`` with signed zeros (the arm in the sign bit)."""
    treated = np.signbit(ps)
    np.invert(treated, out=treated)
    y_c = np.minimum(ps, 0.0)
    np.negative(y_c, out=y_c)
    return treated, np.maximum(ps, 0.0), y_c


# ------------------------------------------------------------------------- blocks


class SortedRows:
    """Rows in descending score order, read back chunk by chunk as blocks.

    Decoding streams over fixed chunks of ``CHUNK`` rows, so its temporaries stay
    small (fresh memory is slow to touch) and every path -- any sort method, and the
    perfect curves -- cuts the same rows into the same chunks. The same blocks
    therefore give bit-identical areas, which is what makes the perfect ranking
    score exactly 1.

    Subclasses implement ``_chunk(a, b)`` returning, for rows a..b-1: ``change``
    (True where the row ends a block), ``treated`` (bool), ``y_t`` and ``y_c``
    (label increments of the treated / control rows).
    """

    n: int

    def _chunk(self, a: int, b: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def chunks(self):
        """Yield :class:`Blocks` (cumulative over all rows so far) chunk by chunk."""
        nt0 = 0
        yt0 = 0.0
        yc0 = 0.0
        for a in range(0, self.n, CHUNK):
            b = min(a + CHUNK, self.n)
            change, treated, y_t, y_c = self._chunk(a, b)
            c_nt = np.cumsum(treated, dtype=np.int64)
            c_yt = np.cumsum(y_t, dtype=np.float64)
            c_yc = np.cumsum(y_c, dtype=np.float64)
            if change.all():  # distinct scores: every row ends a block, no gathers
                ends = slice(None)
                x = np.arange(a + 1, b + 1, dtype=np.int64)
            else:
                ends = np.flatnonzero(change)
                x = ends + (a + 1)
            if x.size:
                yield Blocks(
                    n=x,
                    nt=(c_nt[ends] + nt0).astype(np.float64),
                    yt=c_yt[ends] + yt0,
                    yc=c_yc[ends] + yc0,
                )
            nt0 += int(c_nt[-1])
            yt0 += c_yt[-1]
            yc0 += c_yc[-1]

    def buffer(self) -> np.ndarray | None:
        """A uint64 array of N that is free for reuse once the rows have been read."""
        return None

    def blocks(self) -> Blocks:
        """All blocks at once: (B,) arrays."""
        parts = list(self.chunks())
        return Blocks(*(np.concatenate([getattr(b, f) for b in parts]) for f in _FIELDS))

    def areas(self, curves=("qini", "uplift")) -> dict[str, float]:
        """Area between each curve and its random line (see :func:`area_above_chord`)."""
        acc = AreaAccumulator(curves)
        for b in self.chunks():
            acc.add(b)
        return acc.finish()


def _changes(seg: np.ndarray, length: int, last: bool) -> np.ndarray:
    """Block ends of a chunk from its sorted block ids ``seg`` (the chunk's rows plus
    the next chunk's first row, if any)."""
    change = np.empty(length, dtype=bool)
    np.not_equal(seg[1:], seg[:-1], out=change[: seg.shape[0] - 1])
    if last:
        change[-1] = True
    return change


class _BitsRows(SortedRows):
    """Sorted keys ``(score key << 2) | code`` of binary labels: nothing to gather."""

    def __init__(self, key: np.ndarray):
        self.key = key
        self.n = key.shape[0]

    def _chunk(self, a, b):
        high = self.key[a : min(b + 1, self.n)] >> np.uint64(2)
        change = _changes(high, b - a, b == self.n)
        return (change, *_decode_codes((self.key[a:b] & np.uint64(3)).astype(np.uint8)))


class _OrderRows(SortedRows):
    """A row order (from argsort) with its block ends; labels gathered per chunk."""

    def __init__(self, order: np.ndarray, change: np.ndarray, labels: Labels):
        self.order = order
        self.change = change
        self.labels = labels
        self.n = order.shape[0]

    def _chunk(self, a, b):
        return (self.change[a:b], *_decode_labels(self.labels, self.order[a:b]))


class _PackedRows(SortedRows):
    """Sorted keys ``(row << 1) | t`` (score part masked off) with their block ends;
    the labels of each chunk are gathered by row."""

    def __init__(self, packed: np.ndarray, change: np.ndarray, labels: Labels):
        self.packed = packed
        self.change = change
        self.labels = labels
        self.n = packed.shape[0]

    def buffer(self):
        return self.packed

    def _chunk(self, a, b):
        packed = self.packed[a:b]
        treated = (packed & np.uint64(1)).astype(bool)
        rows = (packed >> np.uint64(1)).view(np.int64)
        return (self.change[a:b], *_decode_labels(self.labels, rows, treated))


class _ValueRows(SortedRows):
    """A payload ranked by itself (the continuous perfect ranking), held as sorted
    :func:`signed_desc_key` keys; blocks are runs of equal payload values."""

    def __init__(self, key: np.ndarray):
        self.key = key
        self.n = key.shape[0]

    def _chunk(self, a, b):
        ps = signed_desc_key(self.key[a : min(b + 1, self.n)]).view(np.float64)
        change = _changes(ps, b - a, b == self.n)  # +0.0 == -0.0: one block
        return (change, *_decode_payload(ps[: b - a]))


class GroupRows(SortedRows):
    """Rows given by a few blocks (the binary perfect curves): yields the same chunks
    as sorted rows with these blocks would."""

    def __init__(self, blocks: Blocks):
        self._blocks = blocks
        self.n = int(blocks.n[-1])

    def chunks(self):
        chunk_of = (self._blocks.n - 1) // CHUNK
        for c in np.unique(chunk_of):
            m = chunk_of == c
            yield Blocks(*(getattr(self._blocks, f)[m] for f in _FIELDS))


class AreaAccumulator:
    """:func:`area_above_chord` of the Qini and/or uplift curve, fed chunk by chunk.

    The term of a block end needs the next end's x, so the last end of each chunk is
    held back until the next chunk (or :meth:`finish`) supplies it.
    """

    def __init__(self, curves=("qini", "uplift")):
        unknown = set(curves) - {"qini", "uplift"}
        if unknown:
            raise ValueError(f"unknown curves {sorted(unknown)}")
        self.curves = tuple(curves)
        self.sums = dict.fromkeys(self.curves, 0.0)
        self.held_v = dict.fromkeys(self.curves, 0.0)  # the origin: v = 0 weighs nothing
        self.x_held = 0.0
        self.x_before = 0.0

    def add(self, b: Blocks) -> None:
        xs = np.empty(b.n.shape[0] + 2, dtype=np.float64)
        xs[0] = self.x_before
        xs[1] = self.x_held
        xs[2:] = b.n
        width = xs[2:] - xs[:-2]  # x[i+1] - x[i-1] for the held end and all but the last
        for curve in self.curves:
            v = qini_values(b) if curve == "qini" else uplift_values(b)
            terms = np.empty_like(width)
            terms[0] = self.held_v[curve] * width[0]
            np.multiply(v[:-1], width[1:], out=terms[1:])
            self.sums[curve] += float(np.sum(terms))
            self.held_v[curve] = float(v[-1])
        self.x_before = float(xs[-2])
        self.x_held = float(xs[-1])

    def finish(self) -> dict[str, float]:
        return {c: 0.5 * (self.sums[c] - self.held_v[c] * self.x_before) for c in self.curves}


def score_rows(
    score: np.ndarray,
    labels: Labels,
    *,
    threads: int | None = None,
    method: str = "auto",
) -> SortedRows:
    """Rows sorted by descending ``score``, carrying their labels.

    Args:
        score: (N,) finite scores.
        labels: binary codes (N,) uint8 from :func:`codes`, or :class:`ContinuousLabels`.
        threads: threads for the sort (default :func:`num_threads`).
        method: 'auto', 'bits' (binary codes only), 'index' or 'argsort'; the choice
            changes the speed, never the result.
    """
    if threads is None:
        threads = num_threads()
    n = score.shape[0]
    binary = not isinstance(labels, ContinuousLabels)
    if method == "auto":
        method = "argsort" if n < _SMALL else ("bits" if binary else "index")
    if method not in ("bits", "index", "argsort"):
        raise ValueError(f"unknown method {method!r}")
    if method == "bits" and not binary:
        raise ValueError("the 'bits' method needs binary label codes")
    key = desc_key(score)
    if method == "argsort":
        order = np.argsort(key, kind="stable")
        return _OrderRows(order, _changes(key[order], n, True), labels)
    span = compress_key(key)
    if method == "bits" and span < 1 << 62:
        np.left_shift(key, np.uint64(2), out=key)
        np.bitwise_or(key, labels, out=key)
        return _BitsRows(sort_values(key, threads))
    # any labels, or a score range that leaves no two spare bits: carry the row index
    t = _treated(labels)
    return _index_rows(key, span, score, t, labels, threads)


def _treated(labels: Labels) -> np.ndarray:
    return labels.t if isinstance(labels, ContinuousLabels) else labels >= 2


def perfect_rows(
    labels: ContinuousLabels, threads: int, out: np.ndarray | None = None
) -> SortedRows:
    """Rows ranked by ``p = y' (2 t - 1)``: one sort of keys of p, built in ``out`` (a
    uint64 array of N) when given.

    The zero responses of both arms (+0.0 and -0.0) form one block. They are sorted
    as integer keys because numpy's SIMD float sort may turn a -0.0 into a +0.0
    (its min/max steps pick one of two equal values), which would move a control
    row into the treated arm.
    """
    n = labels.y.shape[0]
    key = np.empty(n, dtype=np.uint64) if out is None else out
    for a in range(0, n, CHUNK):
        bits = labels.normalized(labels.y[a : a + CHUNK]).view(np.uint64)
        control = np.logical_not(labels.t[a : a + CHUNK]).view(np.uint8).astype(np.uint64)
        # y' >= +0.0, so the sign bit set on control rows makes p exactly
        np.left_shift(control, np.uint64(63), out=control)
        np.bitwise_or(bits, control, out=bits)
        key[a : a + CHUNK] = signed_desc_key(bits)
    return _ValueRows(sort_values(key, threads))


def signed_desc_key(x: np.ndarray) -> np.ndarray:
    """float64 bits -> uint64 key, ascending key = descending value, keeping +0.0
    (key 2**63 - 1) and -0.0 (key 2**63) apart but adjacent. The map is its own
    inverse; it takes float64 values or uint64 bits and returns new uint64. (N,)"""
    bits = x.view(np.uint64)
    out = np.right_shift(bits, np.uint64(63))
    np.subtract(out, np.uint64(1), out=out)  # all ones where x >= +0, else 0
    np.right_shift(out, np.uint64(1), out=out)  # the 63 low bits, or nothing
    return np.bitwise_xor(out, bits, out=out)


def _index_rows(
    key: np.ndarray,
    span: int,
    score: np.ndarray,
    t: np.ndarray,
    labels: Labels,
    threads: int,
) -> SortedRows:
    """The key carries ``(row << 1) | t`` below a (possibly coarsened) score key."""
    n = key.shape[0]
    low_bits = max(1, (n - 1).bit_length()) + 1
    shift = max(0, span.bit_length() - (64 - low_bits))
    for a in range(0, n, CHUNK):
        k = key[a : a + CHUNK]
        if shift:
            np.right_shift(k, np.uint64(shift), out=k)
        np.left_shift(k, np.uint64(low_bits), out=k)
        low = np.arange(a, a + k.shape[0], dtype=np.uint64)
        np.left_shift(low, np.uint64(1), out=low)
        low |= t[a : a + CHUNK]
        k |= low
    key = sort_values(key, threads)
    change = np.empty(n, dtype=bool)
    for a in range(0, n, CHUNK):
        seg = key[a : min(a + CHUNK + 1, n)] >> np.uint64(low_bits)
        change[a : a + CHUNK] = _changes(seg, min(CHUNK, n - a), a + CHUNK >= n)
    np.bitwise_and(key, np.uint64((1 << low_bits) - 1), out=key)
    if shift:
        _refine_coarse_ties(key, change, score)
    return _PackedRows(key, change, labels)


def _refine_coarse_ties(packed: np.ndarray, change: np.ndarray, score: np.ndarray) -> None:
    """Make the order exact where coarsening merged distinct scores.

    Rows whose coarse keys tie are in index order. Where their true scores differ,
    the whole run of equal coarse keys is re-sorted by the exact score, and the block
    flags inside those runs are set from the exact scores. Coarse runs are ordered
    like the scores they contain, so one sort of all affected rows sorts every run.
    Only rows in runs are touched. Updates ``packed`` ((N,) ``(row << 1) | t``) and
    ``change`` (N,) in place.
    """
    same = np.flatnonzero(~change)  # rows i and i+1 share a coarse key
    if same.size == 0:
        return

    def scores_at(pos):
        return score[(packed[pos] >> np.uint64(1)).view(np.int64)]

    s0, s1 = scores_at(same), scores_at(same + 1)
    differ = s0 != s1
    if differ.any():
        # a run is a maximal stretch of consecutive `same` positions, plus one row
        first = np.ones(same.size, dtype=bool)
        first[1:] = same[1:] != same[:-1] + 1
        run_id = np.cumsum(first) - 1
        last = np.ones(same.size, dtype=bool)
        last[:-1] = first[1:]
        bad = np.unique(run_id[differ])
        starts = same[first][bad]
        lengths = same[last][bad] + 2 - starts  # the run's last row is same + 1
        # positions of all rows in the affected runs, ascending
        offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        pos = np.arange(int(lengths.sum()), dtype=np.int64) + offsets
        moved = packed[pos]
        packed[pos] = moved[np.argsort(desc_key(scores_at(pos)), kind="stable")]
        s0, s1 = scores_at(same), scores_at(same + 1)
    change[same] = s0 != s1
