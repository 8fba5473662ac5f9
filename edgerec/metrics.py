"""Full-ranking evaluation for sequential next-item recommendation.

Protocol (the same for every model edgerec reports on):

* **Leave-one-out by time** (see :class:`edgerec.data.dataset.LeaveOneOutSplit`):
  each user contributes one target, the item that followed the given history.
* **Full ranking**: the target is ranked against *all* ``n`` catalog items
  (item indices ``1..n``; score column ``j`` is item ``j + 1``, see
  :mod:`edgerec.vocab`). No sampled negatives.
* **Pessimistic ties**: an item scoring exactly the target's score is ranked
  above the target, so a constant scorer gets no credit.
* **History handling** (``exclude_mode``): ``"none"`` keeps history items in the
  ranking (the default); ``"input"`` removes the items in the model's input
  window; ``"history"`` removes every earlier item of the user. The target is
  never removed, even when it also occurs in the excluded items.

Metrics over 0-based ranks ``r``: ``HR@K = [r < K]``,
``NDCG@K = [r < K] / log2(r + 2)``, ``MRR@K = [r < K] / (r + 1)``, averaged over
users. :func:`paired_bootstrap` gives a paired confidence interval for the
difference (and ratio) of two models' per-user metrics.

Everything here is numpy only (no TensorFlow).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from edgerec.errors import InputError
from edgerec.vocab import PAD_ID

__all__ = [
    "EXCLUDE_MODES",
    "PROTOCOL",
    "PROTOCOL_BY_MODE",
    "BootstrapResult",
    "EvalResult",
    "ExcludeMode",
    "evaluate",
    "format_table",
    "metrics_from_ranks",
    "paired_bootstrap",
    "per_user_metrics",
    "protocol_line",
    "target_ranks",
]

ExcludeMode = Literal["none", "input", "history"]
EXCLUDE_MODES: tuple[str, ...] = ("none", "input", "history")

PROTOCOL = (
    "leave-one-out by time, full ranking over all N items, no sampled negatives, "
    "ties broken against the target (pessimistic)"
)
"""Base protocol text; :func:`protocol_line` adds the history handling."""

PROTOCOL_BY_MODE: dict[str, str] = {
    "none": "history items kept in ranking",
    "input": (
        "items of the model's input window (last W) removed from ranking; target always ranked"
    ),
    "history": "all earlier history items removed from ranking; target always ranked",
}
"""How each ``exclude_mode`` treats history items (appended to :data:`PROTOCOL`)."""

# Elements per chunk when comparing a score block against the target scores, and
# when drawing bootstrap indices: bounds temporary memory to a few tens of MB.
_CHUNK_ELEMENTS = 1 << 23
_BOOTSTRAP_CHUNK_ELEMENTS = 1 << 21


def protocol_line(
    exclude_mode: str = "none", *, num_items: int | None = None, window: int | None = None
) -> str:
    """The one-line protocol description for ``exclude_mode``.

    ``num_items`` replaces ``N`` with the catalog size and ``window`` replaces
    ``W`` with the input-window length, when given.
    """
    _check_mode(exclude_mode)
    text = f"{PROTOCOL}, {PROTOCOL_BY_MODE[exclude_mode]}"
    if num_items is not None:
        text = text.replace("all N items", f"all N={int(num_items)} items")
    if window is not None:
        text = text.replace("(last W)", f"(last W={int(window)})")
    return text


def _check_mode(exclude_mode: str) -> None:
    if exclude_mode not in PROTOCOL_BY_MODE:
        raise InputError(
            f"unknown exclude_mode {exclude_mode!r} (valid: {', '.join(EXCLUDE_MODES)})"
        )


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    out = tuple(int(k) for k in ks)
    if not out:
        raise InputError("ks must name at least one cutoff K")
    bad = [k for k in out if k < 1]
    if bad:
        raise InputError(f"cutoffs K must be >= 1 (got {bad})")
    return out


def target_ranks(
    scores: np.ndarray,
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """0-based rank of each row's target item under full ranking.

    Args:
        scores: ``(B, n)`` real scores, higher is better; column ``j`` is item
            index ``j + 1``.
        targets: ``(B,)`` target item indices in ``1..n``.
        exclude: optional, one array per row of item indices (``1..n``) removed
            from that row's ranking. Duplicates are ignored, as is ``PAD_ID``
            (``0``) so padded input windows can be passed as they are. The
            target itself is never removed: when it occurs in ``exclude[b]`` it
            stays ranked (against the remaining, non-excluded items).

    Returns:
        ``(B,)`` int64 ranks: the number of non-excluded items other than the
        target whose score is ``>=`` the target's score. Ties are thus broken
        against the target (pessimistic), so a constant scorer ranks every
        target last.

    Raises:
        InputError (a ``ValueError``): NaN scores, bad shapes, or item indices
        out of range.

    Cost is ``O(B * n)`` comparisons against the target score (no sort),
    processed in row chunks to bound temporary memory.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise InputError(f"scores must be a (B, n) array (got shape {scores.shape})")
    if not (np.issubdtype(scores.dtype, np.floating) or np.issubdtype(scores.dtype, np.integer)):
        raise InputError(f"scores must be real numbers (got dtype {scores.dtype})")
    num_rows, n = scores.shape
    targets = np.asarray(targets)
    if targets.shape != (num_rows,):
        raise InputError(f"targets must have shape ({num_rows},) (got {targets.shape})")
    if num_rows and not np.issubdtype(targets.dtype, np.integer):
        raise InputError(f"targets must be integer item indices (got dtype {targets.dtype})")
    targets = targets.astype(np.int64, copy=False)
    if num_rows and (targets.min() < 1 or targets.max() > n):
        bad = targets[(targets < 1) | (targets > n)][0]
        raise InputError(f"target {int(bad)} is not an item index (valid: 1..{n})")

    ranks = np.empty(num_rows, dtype=np.int64)
    rows = np.arange(num_rows)
    target_scores = scores[rows, targets - 1]
    is_float = np.issubdtype(scores.dtype, np.floating)
    step = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, num_rows, step):
        block = scores[start : start + step]
        if is_float and np.isnan(block).any():
            bad_row = start + int(np.flatnonzero(np.isnan(block).any(axis=1))[0])
            raise InputError(f"scores contain NaN (row {bad_row})")
        ts = target_scores[start : start + step, None]
        # Items scoring >= the target, minus the target itself.
        ranks[start : start + step] = np.count_nonzero(block >= ts, axis=1) - 1

    if exclude is not None:
        ranks -= _excluded_above(scores, targets, target_scores, exclude)
    return ranks


def _excluded_above(
    scores: np.ndarray,
    targets: np.ndarray,
    target_scores: np.ndarray,
    exclude: Sequence[np.ndarray],
) -> np.ndarray:
    """Per row, how many distinct excluded non-target items score >= the target."""
    num_rows, n = scores.shape
    if len(exclude) != num_rows:
        raise InputError(f"exclude must hold one array per row ({num_rows}), got {len(exclude)}")
    arrays = [np.asarray(e).ravel() for e in exclude]
    lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=num_rows)
    if lengths.sum() == 0:
        return np.zeros(num_rows, dtype=np.int64)
    items = np.concatenate(arrays)
    if not np.issubdtype(items.dtype, np.integer):
        raise InputError(f"exclude must hold integer item indices (got dtype {items.dtype})")
    items = items.astype(np.int64, copy=False)
    row_of = np.repeat(np.arange(num_rows, dtype=np.int64), lengths)
    keep = items != PAD_ID
    items, row_of = items[keep], row_of[keep]
    if items.size and (items.min() < 1 or items.max() > n):
        bad = items[(items < 1) | (items > n)][0]
        raise InputError(f"excluded item {int(bad)} is not an item index (valid: 1..{n})")
    # Distinct (row, item) pairs, never the row's target.
    keys = np.unique(row_of * (n + 1) + items)
    row_of, items = np.divmod(keys, n + 1)
    keep = items != targets[row_of]
    row_of, items = row_of[keep], items[keep]
    above = scores[row_of, items - 1] >= target_scores[row_of]
    return np.bincount(row_of[above], minlength=num_rows).astype(np.int64)


def per_user_metrics(ranks: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-user ``HR@k``, ``NDCG@k`` and ``MRR@k`` (float64 arrays), e.g. for bootstrap."""
    (k,) = _check_ks((k,))
    ranks = _check_ranks(ranks)
    hit = ranks < k
    r = ranks.astype(np.float64)
    return {
        f"HR@{k}": hit.astype(np.float64),
        f"NDCG@{k}": np.where(hit, 1.0 / np.log2(r + 2.0), 0.0),
        f"MRR@{k}": np.where(hit, 1.0 / (r + 1.0), 0.0),
    }


def _check_ranks(ranks: np.ndarray) -> np.ndarray:
    ranks = np.asarray(ranks)
    if ranks.ndim != 1:
        raise InputError(f"ranks must be a 1-D array (got shape {ranks.shape})")
    if ranks.size == 0:
        raise InputError("ranks is empty: no users to average over")
    if not np.issubdtype(ranks.dtype, np.integer):
        raise InputError(f"ranks must be integers (got dtype {ranks.dtype})")
    if ranks.min() < 0:
        raise InputError("ranks must be >= 0 (0-based)")
    return ranks


def metrics_from_ranks(ranks: np.ndarray, ks: Iterable[int] = (10,)) -> dict[str, float]:
    """Mean ``HR@K``, ``NDCG@K`` and ``MRR@K`` over users for each ``K`` in ``ks``.

    Keys are ordered by ``K`` then metric: ``HR@10, NDCG@10, MRR@10, HR@20, ...``.
    """
    out: dict[str, float] = {}
    for k in _check_ks(ks):
        for name, values in per_user_metrics(ranks, k).items():
            out[name] = float(values.mean())
    return out


@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of two per-user metric arrays ``a`` and ``b``.

    Attributes:
        mean_a, mean_b: the observed means.
        diff: ``mean_a - mean_b``.
        low, high: percentile confidence interval of ``diff``.
        relative: ``diff / mean_b`` (``nan`` when ``mean_b == 0``).
        ratio: ``mean_a / mean_b`` (``nan`` when ``mean_b == 0``).
        ratio_low, ratio_high: percentile confidence interval of the ratio of
            means; resamples whose ``b`` mean is 0 are left out (``nan`` when
            every resample is).
        confidence: the interval's coverage, e.g. ``0.95``.
        n_resamples: bootstrap resamples drawn.
        n: paired observations (users).
        seed: the seed of the resampling generator.
    """

    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    relative: float
    ratio: float
    ratio_low: float
    ratio_high: float
    confidence: float
    n_resamples: int
    n: int
    seed: int | None

    @property
    def significant(self) -> bool:
        """Whether the interval of ``diff`` excludes 0."""
        return self.low > 0.0 or self.high < 0.0

    def to_json(self) -> dict:
        """JSON-able form (non-finite floats become ``None``)."""
        out: dict = {}
        for key, value in self.__dict__.items():
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            out[key] = value
        out["significant"] = self.significant
        return out


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> BootstrapResult:
    """Paired bootstrap over users of ``mean(a) - mean(b)`` and ``mean(a) / mean(b)``.

    ``a[i]`` and ``b[i]`` must be the same user's metric under two models (e.g.
    from :func:`per_user_metrics`). Each resample draws ``n`` users with
    replacement and evaluates both models on the same draw; the intervals are
    percentile intervals at ``confidence``. Resample indices are drawn in chunks
    so memory stays bounded; the result is deterministic for a given ``seed``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise InputError(f"a and b must be 1-D arrays of equal length (got {a.shape}, {b.shape})")
    n = a.shape[0]
    if n == 0:
        raise InputError("paired_bootstrap needs at least one user")
    if np.isnan(a).any() or np.isnan(b).any():
        raise InputError("paired_bootstrap: a and b must not contain NaN")
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be in (0, 1) (got {confidence})")
    n_resamples = int(n_resamples)
    if n_resamples < 1:
        raise InputError(f"n_resamples must be >= 1 (got {n_resamples})")

    d = a - b
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_resamples)
    sums_a = np.empty(n_resamples)
    sums_b = np.empty(n_resamples)
    step = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, step):
        count = min(step, n_resamples - start)
        idx = rng.integers(0, n, size=(count, n))
        diffs[start : start + count] = d[idx].mean(axis=1)
        sums_a[start : start + count] = a[idx].sum(axis=1)
        sums_b[start : start + count] = b[idx].sum(axis=1)

    alpha = 1.0 - confidence
    qs = [alpha / 2.0, 1.0 - alpha / 2.0]
    low, high = (float(x) for x in np.quantile(diffs, qs))
    valid = sums_b != 0.0
    if valid.any():
        ratios = sums_a[valid] / sums_b[valid]
        ratio_low, ratio_high = (float(x) for x in np.quantile(ratios, qs))
    else:
        ratio_low = ratio_high = math.nan

    mean_a, mean_b = float(a.mean()), float(b.mean())
    diff = float(d.mean())
    return BootstrapResult(
        mean_a=mean_a,
        mean_b=mean_b,
        diff=diff,
        low=low,
        high=high,
        relative=diff / mean_b if mean_b != 0.0 else math.nan,
        ratio=mean_a / mean_b if mean_b != 0.0 else math.nan,
        ratio_low=ratio_low,
        ratio_high=ratio_high,
        confidence=float(confidence),
        n_resamples=n_resamples,
        n=n,
        seed=seed,
    )


@dataclass
class EvalResult:
    """Outcome of :func:`evaluate`.

    Attributes:
        metrics: mean metrics (``HR@K``, ``NDCG@K``, ``MRR@K`` for each ``K``).
        ranks: ``(U,)`` 0-based target rank per user, in input order.
        protocol: the protocol line (see :func:`protocol_line`).
        exclude_mode: ``"none"``, ``"input"`` or ``"history"``.
        ks: the cutoffs.
        num_items: catalog size ``n`` (score columns).
        window: input-window length used by ``"input"`` exclusion, if given.
        extra: free-form JSON-able notes a caller wants in :meth:`to_json`
            (e.g. model name, checkpoint); empty by default.
    """

    metrics: dict[str, float]
    ranks: np.ndarray
    protocol: str
    exclude_mode: str
    ks: tuple[int, ...]
    num_items: int
    window: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        """Users evaluated."""
        return int(self.ranks.shape[0])

    def per_user(self, k: int) -> dict[str, np.ndarray]:
        """Per-user metrics at cutoff ``k`` (see :func:`per_user_metrics`)."""
        return per_user_metrics(self.ranks, k)

    def to_json(self, include_ranks: bool = False) -> dict:
        """JSON-able form; per-user ranks only when ``include_ranks``."""
        out = {
            "protocol": self.protocol,
            "exclude_mode": self.exclude_mode,
            "window": self.window,
            "ks": list(self.ks),
            "num_users": self.num_users,
            "num_items": self.num_items,
            "metrics": dict(self.metrics),
        }
        if self.extra:
            out["extra"] = dict(self.extra)
        if include_ranks:
            out["ranks"] = self.ranks.tolist()
        return out


def evaluate(
    score_fn: Callable[[list[np.ndarray]], np.ndarray],
    inputs: Sequence[np.ndarray],
    targets: np.ndarray,
    ks: Iterable[int] = (10,),
    exclude_mode: str = "none",
    batch_size: int = 256,
    *,
    window: int | None = None,
    num_items: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """Full-ranking evaluation of ``score_fn`` on ``(inputs[u], targets[u])`` pairs.

    Args:
        score_fn: maps a batch of histories (item indices ``1..n``, oldest
            first) to a ``(B, n)`` score array; it is expected to truncate a
            history to its own input window.
        inputs: one history per user, e.g. ``split.test_inputs()``.
        targets: ``(U,)`` target item indices, e.g. ``split.test_target``.
        ks: cutoffs ``K``.
        exclude_mode: ``"none"`` keeps history items ranked; ``"input"``
            removes the last ``window`` items of each history (the model's input
            window; ``window`` is required); ``"history"`` removes the whole
            history. The target is never removed.
        batch_size: users per ``score_fn`` call.
        window: input-window length for ``"input"`` (e.g.
            ``FeatureSpec.history_len``).
        num_items: when given, score arrays must have this many columns.
        progress: show a ``tqdm`` progress bar.
    """
    _check_mode(exclude_mode)
    ks = _check_ks(ks)
    targets = np.asarray(targets)
    num_users = len(inputs)
    if num_users == 0:
        raise InputError("evaluate: no users (inputs is empty)")
    if targets.shape != (num_users,):
        raise InputError(f"targets must have shape ({num_users},) (got {targets.shape})")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1 (got {batch_size})")
    if exclude_mode == "input":
        if window is None or int(window) < 1:
            raise InputError('exclude_mode="input" needs window >= 1 (the model input length)')
        window = int(window)

    ranks = np.empty(num_users, dtype=np.int64)
    n_cols = num_items
    starts = range(0, num_users, batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="evaluate", unit="batch")
    for start in starts:
        batch = [np.asarray(h) for h in inputs[start : start + batch_size]]
        scores = np.asarray(score_fn(batch))
        if scores.ndim != 2 or scores.shape[0] != len(batch):
            raise InputError(
                f"score_fn returned shape {scores.shape} for a batch of {len(batch)} histories"
            )
        if n_cols is None:
            n_cols = scores.shape[1]
        elif scores.shape[1] != n_cols:
            raise InputError(f"score_fn returned {scores.shape[1]} columns, expected {n_cols}")
        if exclude_mode == "none":
            exclude = None
        elif exclude_mode == "input":
            exclude = [h[-window:] for h in batch]
        else:
            exclude = batch
        ranks[start : start + len(batch)] = target_ranks(
            scores, targets[start : start + len(batch)], exclude
        )

    assert n_cols is not None
    return EvalResult(
        metrics=metrics_from_ranks(ranks, ks),
        ranks=ranks,
        protocol=protocol_line(
            exclude_mode, num_items=n_cols, window=window if exclude_mode == "input" else None
        ),
        exclude_mode=exclude_mode,
        ks=ks,
        num_items=int(n_cols),
        window=window,
    )


def format_table(
    rows: Sequence[tuple[str, Mapping[str, float]]], protocol: str, *, digits: int = 4
) -> str:
    """An aligned text table, one row per model, with ``protocol`` under it.

    Columns are the union of the rows' metric names in first-seen order; a
    metric a row lacks is shown as ``-``.
    """
    columns: list[str] = []
    for _, metrics in rows:
        for key in metrics:
            if key not in columns:
                columns.append(key)

    def cell(value: object) -> str:
        if isinstance(value, (float, np.floating)):
            return f"{float(value):.{digits}f}"
        return str(value)

    header = ["model", *columns]
    body = [[name, *(cell(m[c]) if c in m else "-" for c in columns)] for name, m in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    sep = "-" * len(line(header))
    return "\n".join([line(header), sep, *(line(r) for r in body), sep, f"protocol: {protocol}"])
