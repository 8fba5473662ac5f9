"""Top-k retrieval over a model's score vector, like TFRS ``TopK``.

:class:`TopK` is indexed once with a candidate set (``index(candidates)``; the
whole catalog by default) and then answers ``query(scores, k, exclude,
include)``. Scores follow the model output convention of
:mod:`edgerec.vocab`: column ``j`` of a ``(n,)`` or ``(B, n)`` score array is
item index ``j + 1``; results are item indices ``1..n``.

Guarantees:

* Order: score descending; equal scores by item index ascending — also at the
  cut-off, so which of several tied items make the top ``k`` is deterministic.
* Every candidate score must be finite, else :class:`NonFiniteScoresError`:
  ranking never guesses an order for NaN or inf.
* ``k`` larger than the number of eligible candidates returns all of them.

Speed: no full sort. For catalogs of 1,024 items and more, the ``k``-th best
score of a strided sample (stride about ``sqrt(n / k)``) is a lower bound of the
true ``k``-th best, so only the items at or above it are ranked — exact, not an
approximation; below that, ``np.argpartition``. Excluded items are set to
``-inf`` in a copy of the scores (never in the caller's array) and cut from the
tail of the result. Index lists are validated with vectorised range checks;
exclusion lists are not sorted or de-duplicated (repeats are harmless).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from edgerec.errors import InputError
from edgerec.vocab import PAD_ID, Vocab

from .errors import NonFiniteScoresError

__all__ = ["Recommendation", "TopK", "TopKResult", "to_recommendations"]

# Prefilter tuning: only for vectors this long, with a sample of every _STRIDE-th score.
_PREFILTER_MIN = 1024
_STRIDE = 16
# Candidate sets up to this size are sorted outright, larger ones partitioned first.
_SORT_MAX = 256

IndexArray = np.ndarray | Sequence[int] | Iterable[int]


class Recommendation(NamedTuple):
    """One recommended item: its raw id and its score."""

    item_id: str
    score: float


class TopKResult(NamedTuple):
    """What :meth:`TopK.query` returns; unpacks as ``indices, scores``.

    ``indices`` are int64 item indices ``1..n``, ``scores`` their scores in the
    input dtype, best first. Shapes ``(k',)`` for one score vector, ``(B, k')``
    for a batch, where ``k' = min(k, eligible candidates)``; in a batch, rows
    with fewer eligible candidates than ``k'`` are padded with index ``0``
    (``PAD_ID``) and score ``-inf``.
    """

    indices: np.ndarray
    scores: np.ndarray


def _item_columns(values: Any, num_items: int, what: str) -> np.ndarray:
    """Validate item indices ``1..n`` -> 0-based int64 columns (order and repeats kept)."""
    if isinstance(values, np.ndarray):
        arr = values
    else:
        if isinstance(values, set | frozenset):
            values = sorted(values)
        try:
            arr = np.asarray(values)
        except (ValueError, TypeError) as exc:  # ragged nesting and the like
            raise InputError(f"{what} must be a 1-D list of item indices ({exc})") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InputError(f"{what} must be a 1-D list of item indices (got shape {arr.shape})")
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.dtype.kind not in "iu":  # bool is kind "b", floats "f"
        raise InputError(f"{what} must hold integer item indices (got dtype {arr.dtype})")
    lo, hi = arr.min(), arr.max()
    if lo < 1 or hi > num_items:
        bad = lo if lo < 1 else hi
        raise InputError(f"{what}: {int(bad)} is not an item index (valid: 1..{num_items})")
    return arr.astype(np.int64) - 1


def _positions(values: Any, num_items: int, what: str) -> np.ndarray:
    """Validate item indices ``1..n`` -> sorted unique 0-based columns (int64)."""
    cols = np.sort(_item_columns(values, num_items, what))
    if cols.shape[0] > 1:  # np.unique is slower and imports numpy.ma on first use
        cols = cols[np.concatenate(([True], cols[1:] != cols[:-1]))]
    return cols


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise InputError(f"k must be an integer >= 0 (got {type(k).__name__} {k!r})")
    if k < 0:
        raise InputError(f"k must be an integer >= 0 (got {k})")
    return int(k)


def _top_exact(v: np.ndarray, k: int) -> np.ndarray:
    """Positions (unordered) of the ``k < len(v)`` best of ``v``; ties: lower position."""
    n = v.shape[0]
    part = np.argpartition(v, n - k)[n - k :]
    vals = v[part]
    cut = vals.min()
    tied_in = np.count_nonzero(vals == cut)
    tied_all = np.flatnonzero(v == cut)  # ascending positions
    if tied_all.shape[0] > tied_in:  # argpartition picked an arbitrary subset of the ties
        part = np.concatenate([part[vals > cut], tied_all[:tied_in]])
    return part


def _top(v: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best of ``v`` (no NaN), sorted: score desc, position asc."""
    n = v.shape[0]
    if k == 0:
        return np.zeros(0, np.intp)
    if k >= n:
        pos = np.arange(n)
    elif n >= _PREFILTER_MIN and k * _STRIDE * 4 <= n:
        # The k-th best of a strided sample is a lower bound of the k-th best of v
        # (the sample's k best are in v), so every top-k item is >= it: only those
        # candidates (about k * stride) are ranked. stride ~ sqrt(n / k) balances
        # the sample's partition against the candidates' sort.
        stride = max(_STRIDE, math.isqrt(n // k))
        sample = v[::stride]
        m = sample.shape[0]
        estimate = np.partition(sample, m - k)[m - k]
        pos = np.flatnonzero(v >= estimate)  # ascending: keeps the tie order
        if pos.shape[0] > _SORT_MAX:
            pos = pos[_top_exact(v[pos], k)]
    else:
        pos = _top_exact(v, k)
    return pos[np.lexsort((pos, -v[pos]))[:k]]


class TopK:
    """Top-k over score vectors, restricted to an indexed candidate set.

    Args:
        num_items: catalog size ``n`` (score vectors have ``n`` columns).

    Example::

        topk = TopK(vocab.num_items).index(None)        # whole catalog
        idx, sc = topk.query(scores, k=10, exclude=stats.seen)
        recs = to_recommendations(vocab, idx, sc)

    ``query`` is thread-safe; ``index`` swaps the candidate set atomically.
    """

    def __init__(self, num_items: int) -> None:
        if isinstance(num_items, bool) or not isinstance(num_items, numbers.Integral):
            raise InputError(f"num_items must be an integer (got {type(num_items).__name__})")
        if num_items < 1:
            raise InputError(f"num_items must be at least 1 (got {num_items})")
        self._n = int(num_items)
        self._cols: np.ndarray | None = None

    @property
    def num_items(self) -> int:
        """Catalog size ``n``."""
        return self._n

    @property
    def candidates(self) -> np.ndarray | None:
        """Indexed candidate item indices (sorted, unique), or ``None`` for all."""
        return None if self._cols is None else self._cols + 1

    def index(self, candidates: IndexArray | None = None) -> TopK:
        """Restrict every query to ``candidates`` (item indices ``1..n``); ``None``: all.

        Duplicates are ignored. Returns ``self``.
        """
        if candidates is None:
            self._cols = None
        else:
            cols = _positions(candidates, self._n, "candidates")
            cols.flags.writeable = False
            self._cols = cols
        return self

    def query(
        self,
        scores: np.ndarray,
        k: int,
        exclude: IndexArray | Sequence[IndexArray] | None = None,
        include: IndexArray | Sequence[IndexArray] | None = None,
    ) -> TopKResult:
        """The ``k`` best candidates of one ``(n,)`` or a batch of ``(B, n)`` score vectors.

        Args:
            scores: model scores; column ``j`` is item index ``j + 1``.
            k: how many to return (``>= 0``); more than the eligible candidates
                returns all of them.
            exclude: item indices never to return (e.g. ``ExtractStats.seen``).
                For a batch, either one list for every row or a sequence of ``B``
                lists, one per row.
            include: allow-list of item indices; the eligible set is
                ``candidates ∩ include − exclude``. Batch form as for ``exclude``.

        Raises:
            InputError: bad ``k``, shape, dtype or item index.
            NonFiniteScoresError: a NaN or inf score among the candidates (after
                ``include``, before ``exclude``).
        """
        k = _check_k(k)
        s = np.asarray(scores)
        if s.ndim not in (1, 2) or s.shape[-1] != self._n:
            raise InputError(
                f"scores must have shape ({self._n},) or (B, {self._n}) (got {s.shape})"
            )
        if not np.issubdtype(s.dtype, np.floating):
            if s.dtype == bool or not np.issubdtype(s.dtype, np.integer):
                raise InputError(f"scores must be numbers (got dtype {s.dtype})")
            s = s.astype(np.float64)
        if s.ndim == 1:
            (excl,) = self._rows(exclude, 1, "exclude")
            (incl,) = self._rows(include, 1, "include")
            return TopKResult(*self._query_row(s, k, excl, incl, None))
        b = s.shape[0]
        excls = self._rows(exclude, b, "exclude")
        incls = self._rows(include, b, "include")
        rows = [self._query_row(s[r], k, excls[r], incls[r], r) for r in range(b)]
        width = max((len(i) for i, _ in rows), default=0)
        indices = np.full((b, width), PAD_ID, np.int64)
        out = np.full((b, width), -np.inf, s.dtype)
        for r, (i, v) in enumerate(rows):
            indices[r, : len(i)] = i
            out[r, : len(v)] = v
        return TopKResult(indices, out)

    def _rows(self, spec: Any, b: int, what: str) -> list[np.ndarray | None]:
        """Per-row validated 0-based columns from a shared or per-row index list.

        ``include`` lists become sorted and unique (they are intersected and
        searched); ``exclude`` lists keep their order and repeats (they are masked).
        """
        if spec is None:
            return [None] * b
        columns = _positions if what == "include" else _item_columns
        if isinstance(spec, np.ndarray):
            per_row = spec.ndim == 2
        else:
            per_row = (
                isinstance(spec, list | tuple)
                and len(spec) > 0
                and all(not isinstance(x, numbers.Integral) for x in spec)
            )
        if not per_row:
            shared = columns(spec, self._n, what)
            return [shared] * b
        if len(spec) != b:
            raise InputError(f"{what}: got {len(spec)} index lists for a batch of {b} rows")
        return [columns(x, self._n, f"{what}[{r}]") for r, x in enumerate(spec)]

    def _query_row(
        self,
        s: np.ndarray,
        k: int,
        exclude: np.ndarray | None,
        include: np.ndarray | None,
        row: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        cols = self._cols
        if include is not None:
            cols = include if cols is None else np.intersect1d(cols, include, assume_unique=True)
        v = s if cols is None else s[cols]
        if not np.isfinite(v).all():
            bad = np.flatnonzero(~np.isfinite(v))
            items = (bad if cols is None else cols[bad])[:5] + 1
            where = "" if row is None else f" in row {row}"
            raise NonFiniteScoresError(
                f"{bad.shape[0]} candidate score(s){where} are NaN or inf (item indices "
                f"{items.tolist()}{'...' if bad.shape[0] > 5 else ''}); the model output is "
                "broken — check the artifact's parity report"
            )
        ex = None
        if exclude is not None and exclude.shape[0]:
            if cols is None:
                ex = exclude
            else:  # positions in v of the excluded items that are candidates at all
                at = np.searchsorted(cols, exclude)
                inside = at < cols.shape[0]
                at = at[inside]
                ex = at[cols[at] == exclude[inside]]
        if ex is not None:  # excluded items drop to -inf: below every finite score
            v = v.copy() if v is s else v  # (s[cols] is already a copy)
            v[ex] = -np.inf
        pos = _top(v, min(k, v.shape[0]))
        if ex is not None:  # fewer eligible items than k: cut the -inf tail
            pos = pos[: np.count_nonzero(v[pos] != -np.inf)]
        idx = pos if cols is None else cols[pos]
        return idx.astype(np.int64, copy=False) + 1, s[idx]

    def __repr__(self) -> str:
        c = "all" if self._cols is None else str(self._cols.shape[0])
        return f"TopK(num_items={self._n}, candidates={c})"


def to_recommendations(
    vocab: Vocab, indices: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float]
) -> list[Recommendation]:
    """Decode one row of :meth:`TopK.query` output into raw item ids.

    Padding entries (index ``0``, from batch queries) are skipped.
    """
    idx = np.asarray(indices).ravel()
    sc = np.asarray(scores).ravel()
    if idx.shape != sc.shape:
        raise InputError(f"indices and scores differ in length ({idx.shape[0]} vs {sc.shape[0]})")
    if idx.dtype.kind in "iu":  # the usual case: plain Python work on k items
        items = idx.tolist()
        values = sc.astype(np.float64, copy=False).tolist()  # Python floats
        if PAD_ID in items:
            pairs = [(i, v) for i, v in zip(items, values, strict=True) if i != PAD_ID]
            items, values = [i for i, _ in pairs], [v for _, v in pairs]
        if items and (min(items) < 1 or max(items) > vocab.num_items):
            vocab.decode(items)  # raises, naming the bad index
        ids = vocab.item_ids
        return [Recommendation(ids[i - 1], v) for i, v in zip(items, values, strict=True)]
    keep = idx != PAD_ID
    ids = vocab.decode(idx[keep].tolist())
    return [Recommendation(i, float(v)) for i, v in zip(ids, sc[keep].tolist(), strict=True)]
