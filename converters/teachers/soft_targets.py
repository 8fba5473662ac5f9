"""The teacher's soft targets, computed once per (teacher, data) and cached on disk.

A teacher edgerec did not train scores the *next* item from a history (SASRec,
GRU4Rec, or a BERT4Rec asked at a trailing ``[MASK]``). For every position ``i >= 1``
of every training sequence it is asked once, on the true history ``s[:i]``; what the
distillation loss needs from its answer is kept:

* the top-``K`` logits and their item indices (where the soft targets have their mass;
  the sampled loss's ``teacher_top_k`` candidates come from them), and
* the log-partition ``log Z`` over the data's catalog, from which the mass of the
  items outside the top ``K`` follows; it is spread evenly over them
  (:meth:`SoftTargets.tail_logits`), so the full-catalog KL sees a proper distribution.

Position 0 (no history) has no teacher answer; its target is the training popularity
(``log`` of add-one counts), one shared row.

The cache file is keyed by sha256 of the teacher's fingerprint, its contract, the
data (vocabulary and training sequences) and ``K``, so re-runs with other student
settings (size, length, epochs, alpha, temperature, seed) skip the teacher entirely,
and a remote teacher is asked once, not once per epoch.

:class:`CachedTeacher` hands the cache to the distil pass through the interface it
already uses for edgerec's Keras teacher (``max_len``, ``encode``, ``score_hidden``):
``encode`` finds, for each ``[MASK]`` of a Cloze window, which training position it
hides (the window is consecutive items of one user's sequence: its visible items pin
it down), and ``score_hidden`` turns those positions into the cached dense logits. The
teacher's target for a masked position is thus its prediction of that item from the
user's true history — what a causal teacher was trained to predict there.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.errors import InputError

from .base import ContractScorer

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 128
CACHE_VERSION = b"edgerec-soft-targets/1"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/edgerec/soft-targets`` (``~/.cache`` when unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "edgerec" / "soft-targets"


def data_fingerprint(split: LeaveOneOutSplit) -> str:
    """sha256 of the data's vocabulary and training sequences."""
    digest = hashlib.sha256(split.vocab.sha256().encode())
    for seq in split.train:
        digest.update(np.asarray(seq, np.int32).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def cache_key(teacher_fingerprint: str, contract: bytes, data: str, top_k: int) -> str:
    digest = hashlib.sha256(CACHE_VERSION)
    for part in (teacher_fingerprint.encode(), contract, data.encode(), str(top_k).encode()):
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class SoftTargets:
    """Top-K soft targets per training position (row ``num_rows - 1`` is the prior)."""

    top_values: np.ndarray  # float32 [R, K] teacher logits
    top_items: np.ndarray  # int32 [R, K] data item indices 1..n
    log_z: np.ndarray  # float32 [R] log-partition over the data's catalog
    row_of: np.ndarray  # int64 [P] row of each position of the concatenated sequences
    num_items: int

    @property
    def prior_row(self) -> int:
        return len(self.log_z) - 1

    def tail_logits(self) -> np.ndarray:
        """``[R]`` logit of each item outside a row's top K: the remaining mass, spread evenly."""
        k = self.top_values.shape[1]
        rest = max(self.num_items - k, 1)
        top_lse = _logsumexp(self.top_values.astype(np.float64), axis=1)
        share = np.clip(np.exp(top_lse - self.log_z), 0.0, 1.0 - 1e-6)
        return (self.log_z + np.log1p(-share) - np.log(rest)).astype(np.float32)

    def dense(self, rows: np.ndarray) -> np.ndarray:
        """``[len(rows), n]`` logits over items ``1..n`` (numpy; tests and checks)."""
        out = np.repeat(self.tail_logits()[rows][:, None], self.num_items, axis=1)
        np.put_along_axis(out, self.top_items[rows].astype(np.int64) - 1, self.top_values[rows], 1)
        return out

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".soft-targets.", suffix=".npz", dir=path.parent)
        os.close(fd)
        try:
            np.savez(
                tmp,
                top_values=self.top_values,
                top_items=self.top_items,
                log_z=self.log_z,
                row_of=self.row_of,
                num_items=np.int64(self.num_items),
            )
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> SoftTargets:
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(
                    z["top_values"], z["top_items"], z["log_z"], z["row_of"], int(z["num_items"])
                )
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{path}: corrupt soft-target cache ({exc}); delete it") from None


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    return (m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))).squeeze(axis)


def _prefix_rows(
    split: LeaveOneOutSplit, length: int
) -> tuple[list[tuple[int, int]], np.ndarray, int]:
    """``(user, i)`` of every position with a history, the position -> row map, prior row."""
    positions: list[tuple[int, int]] = []
    total = sum(len(s) for s in split.train)
    row_of = np.empty(total, np.int64)
    g = 0
    first_rows: list[int] = []
    for u, seq in enumerate(split.train):
        for i in range(len(seq)):
            if i == 0:
                first_rows.append(g)
            else:
                row_of[g] = len(positions)
                positions.append((u, i))
            g += 1
    prior = len(positions)
    row_of[first_rows] = prior
    return positions, row_of, prior


def compute(
    scorer: ContractScorer,
    split: LeaveOneOutSplit,
    top_k: int = DEFAULT_TOP_K,
    chunk: int = 2048,
    progress: bool = True,
) -> SoftTargets:
    """Ask the teacher once per training position (see the module docstring)."""
    n = split.vocab.num_items
    k = min(top_k, n)
    length = scorer.contract.input.history_len
    positions, row_of, prior = _prefix_rows(split, length)
    rows = len(positions) + 1
    top_values = np.empty((rows, k), np.float32)
    top_items = np.empty((rows, k), np.int32)
    log_z = np.empty(rows, np.float32)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(positions), desc="teacher soft targets", unit="row")
    for start in range(0, len(positions), chunk):
        part = positions[start : start + chunk]
        batch = np.zeros((len(part), length), np.int32)
        for j, (u, i) in enumerate(part):
            hist = split.train[u][max(0, i - length) : i]
            batch[j, length - len(hist) :] = hist
        scores = scorer.score(batch)[:, 1:].astype(np.float64)
        idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(scores, idx, 1)
        order = np.argsort(-vals, axis=1, kind="stable")
        sl = slice(start, start + len(part))
        top_items[sl] = np.take_along_axis(idx, order, 1) + 1
        top_values[sl] = np.take_along_axis(vals, order, 1)
        log_z[sl] = _logsumexp(scores, axis=1)
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.close()
    counts = np.ones(n, np.float64)
    for seq in split.train:
        np.add.at(counts, np.asarray(seq, np.int64) - 1, 1.0)
    prior_logits = np.log(counts / counts.sum())
    idx = np.argsort(-prior_logits, kind="stable")[:k]
    top_items[prior] = idx + 1
    top_values[prior] = prior_logits[idx]
    log_z[prior] = 0.0
    return SoftTargets(top_values, top_items, log_z, row_of, n)


class ScoreTable:
    """The teacher's scores of given histories, found again by the history's items.

    The same history gives the same scores, so a table keyed by the history's bytes
    answers the teacher gate and the quality pass on a re-run without the teacher.
    """

    def __init__(self, histories: list[np.ndarray], scores: np.ndarray) -> None:
        self.scores = np.asarray(scores, np.float32)
        self.index = {_history_key(h): i for i, h in enumerate(histories)}

    def lookup(self, histories: list[np.ndarray]) -> np.ndarray | None:
        rows = [self.index.get(_history_key(h)) for h in histories]
        if any(r is None for r in rows):
            return None
        return self.scores[np.asarray(rows, np.int64)]


def _history_key(history: np.ndarray) -> bytes:
    return np.asarray(history, np.int32).tobytes()


def cached_soft_targets(
    scorer: ContractScorer,
    split: LeaveOneOutSplit,
    cache_dir: Path | None,
    top_k: int = DEFAULT_TOP_K,
    progress: bool = True,
) -> tuple[SoftTargets, dict[str, Any]]:
    """The soft targets from the cache, or computed and stored; plus what happened."""
    key = cache_key(
        scorer.fingerprint(), scorer.contract.canonical(), data_fingerprint(split), top_k
    )
    info: dict[str, Any] = {"key": key, "top_k": top_k}
    path = None if cache_dir is None else Path(cache_dir) / f"{key}.npz"
    if path is not None and path.is_file():
        log.info("soft targets from cache %s (teacher not queried)", path)
        info.update(hit=True, path=str(path))
        return SoftTargets.load(path), info
    targets = compute(scorer, split, top_k, progress=progress)
    if path is not None:
        targets.save(path)
        log.info("soft targets cached at %s", path)
    info.update(hit=False, path=str(path) if path else None)
    return targets, info


class WindowLocator:
    """Which training position each ``[MASK]`` of a Cloze window hides.

    A window holds consecutive items of one user's training sequence, left-padded,
    and starts at the sequence's first item when it is padded. Its first visible item
    narrows the candidates to that item's occurrences; the other visible items decide.
    A window whose items are all masked, or one that matches nothing, gets the prior.
    """

    def __init__(self, split: LeaveOneOutSplit, targets: SoftTargets, mask_id: int) -> None:
        lengths = np.array([len(s) for s in split.train], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.ends = self.starts + lengths
        self.flat = (
            np.concatenate([np.asarray(s, np.int64) for s in split.train])
            if lengths.sum()
            else np.zeros(0, np.int64)
        )
        self.user_of = np.repeat(np.arange(len(lengths)), lengths)
        order = np.argsort(self.flat, kind="stable")
        items = self.flat[order]
        bounds = np.searchsorted(items, np.arange(targets.num_items + 2))
        self.occurrences = [order[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]
        self.by_length = np.argsort(-lengths, kind="stable")
        self.lengths = lengths
        self.targets = targets
        self.mask_id = mask_id

    def _start(self, w: np.ndarray, pads: int, visible: np.ndarray) -> int | None:
        m = len(w) - pads
        if not len(visible):
            u = int(self.by_length[0])
            return int(self.starts[u]) if self.lengths[u] >= m else None
        anchor = int(visible[0])
        item = int(w[anchor])
        if not 0 <= item < len(self.occurrences):
            return None
        occ = self.occurrences[item]
        g = occ - (anchor - pads)
        users = self.user_of[occ]
        ok = (g >= self.starts[users]) & (g + m <= self.ends[users])
        if pads:
            ok &= g == self.starts[users]
        g = g[ok]
        if not len(g):
            return None
        offsets = visible - pads
        match = (self.flat[g[:, None] + offsets[None, :]] == w[visible][None, :]).all(axis=1)
        hits = g[match]
        return int(hits[0]) if len(hits) else None

    def rows(self, windows: np.ndarray) -> np.ndarray:
        """``float32 [B, L]``: the soft-target row of each position (prior where unmasked)."""
        windows = np.asarray(windows)
        out = np.full(windows.shape, self.targets.prior_row, np.float32)
        length = windows.shape[1]
        for b, w in enumerate(windows):
            masked = np.flatnonzero(w == self.mask_id)
            if not len(masked):
                continue
            real = np.flatnonzero(w != 0)
            pads = int(real[0]) if len(real) else length
            visible = real[w[real] != self.mask_id]
            g = self._start(w, pads, visible)
            if g is not None:
                out[b, masked] = self.targets.row_of[g + masked - pads]
        return out


class CachedTeacher:
    """The distil pass's teacher interface (``max_len``, ``cloze_hidden``,
    ``score_hidden``) served from :class:`SoftTargets` (no model runs during
    distillation)."""

    def __init__(self, split: LeaveOneOutSplit, targets: SoftTargets, max_len: int) -> None:
        import tensorflow as tf

        self.max_len = int(max_len)
        self.num_items = targets.num_items
        self.locator = WindowLocator(split, targets, mask_id=split.vocab.mask_id)
        self._tf = tf
        self._values = tf.constant(targets.top_values)
        self._items = tf.constant(targets.top_items.astype(np.int32) - 1)
        self._tail = tf.constant(targets.tail_logits())

    def cloze_hidden(self, inputs: Any, training: bool = False) -> Any:
        """``[B, L, 1]``: each position's row in the soft-target table (its "hidden state")."""
        tf = self._tf
        rows = tf.py_function(lambda x: self.locator.rows(x.numpy()), [inputs], tf.float32)
        shape = tf.shape(inputs)
        return tf.reshape(rows, [shape[0], shape[1], 1])

    def score_hidden(self, hidden: Any) -> Any:
        """``[R, 1]`` soft-target rows -> ``[R, n]`` dense teacher logits."""
        tf = self._tf
        rows = tf.cast(hidden[:, 0], tf.int32)
        values = tf.gather(self._values, rows)
        items = tf.gather(self._items, rows)
        tail = tf.gather(self._tail, rows)
        r = tf.shape(rows)[0]
        base = tf.tile(tail[:, None], [1, self.num_items])
        k = tf.shape(items)[1]
        row_ids = tf.tile(tf.range(r)[:, None], [1, k])
        index = tf.stack([row_ids, items], axis=-1)
        return tf.tensor_scatter_nd_update(base, index, values)
