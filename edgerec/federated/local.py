"""On-device training of the additive item-bias head (numpy only).

The deployed model scores the catalog for a history; the trainable head adds two bias
vectors to those scores (``docs/federated-protocol.md``)::

    scores' = s(history) + global_bias + local_bias          # all [n], item i at i - 1

From a device's history ``h_1 .. h_T`` (item indices ``1..n``, oldest first) the
trainer builds next-item examples ``(h_1..h_{i-1}) -> h_i`` for the last
``max_examples`` positions, scores every prefix **once** with the model (``score_fn``,
the runtime backend; cached per history), then runs mini-batch SGD on the full-softmax
cross-entropy of the next item with respect to one bias vector:

* :meth:`LocalTrainer.train_global` — the federated update ``delta`` of ``global_bias``
  (``local_bias`` is not used unless given, and then held fixed); clip/noise/encode it
  with :func:`edgerec.federated.dp.privatize` before it leaves the device.
* :meth:`LocalTrainer.train_local` — the private ``local_bias`` (``global_bias`` held
  fixed), with an L2 pull towards 0 (i.e. towards the shared model). It never leaves
  the device.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgerec.errors import InputError
from edgerec.features import FeatureSpec

__all__ = ["Examples", "LocalTrainer", "build_examples"]

ScoreFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Examples:
    """A device's next-item examples with the model's (cached) base scores.

    Attributes:
        scores: ``[E, n]`` float32 model scores of each example's prefix.
        targets: ``[E]`` int64 column of the next item (``item - 1``).
    """

    scores: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return int(self.targets.shape[0])


def build_examples(
    spec: FeatureSpec, history: np.ndarray, max_examples: int
) -> tuple[np.ndarray, np.ndarray]:
    """Input rows and next-item targets for the last ``max_examples`` positions.

    Row ``j`` is exactly ``spec.encode(history[:i])`` for target ``history[i]``
    (``i >= 1``): the last ``history_len`` items of the prefix, left-padded, ``[MASK]``
    last.

    Returns:
        ``(rows [E, max_len] int32, targets [E] int64 item indices)``.
    """
    h = np.asarray(history, dtype=np.int64).ravel()
    if h.size and (h.min() < 1 or h.max() > spec.num_items):
        raise InputError(f"history holds item indices outside 1..{spec.num_items}")
    positions = np.arange(max(1, h.size - max_examples), h.size)
    if positions.size == 0:
        return np.zeros((0, spec.max_len), np.int32), np.zeros(0, np.int64)
    hl = spec.history_len
    padded = np.concatenate([np.full(hl, spec.pad_id, np.int64), h])
    windows = np.lib.stride_tricks.sliding_window_view(padded, hl)[positions]
    rows = np.empty((positions.size, spec.max_len), np.int32)
    rows[:, :hl] = windows
    rows[:, hl] = spec.mask_id
    return rows, h[positions]


class LocalTrainer:
    """Trains the additive biases on one device's history (see module docstring).

    Args:
        spec: the bundle's feature spec (``num_items`` = bias length).
        score_fn: ``rows [B, max_len] int32 -> scores [B, n]`` (e.g. ``backend.run``).
        lr: SGD learning rate.
        epochs: passes over the device's examples per call.
        batch_size: examples per SGD step.
        l2: weight decay on ``global_bias`` (the trained vector, not the delta).
        local_l2: weight decay on ``local_bias`` (pull towards the shared model).
        max_examples: use only the last this many positions of the history.
        seed: seed of the example shuffling (same inputs + seed -> same outputs).
        cache_size: how many devices' base scores to keep (LRU keyed by history).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        score_fn: ScoreFn,
        *,
        lr: float = 0.5,
        epochs: int = 3,
        batch_size: int = 64,
        l2: float = 0.0,
        local_l2: float = 1e-3,
        max_examples: int = 200,
        seed: int = 0,
        cache_size: int = 4,
    ) -> None:
        if lr <= 0 or epochs < 1 or batch_size < 1 or max_examples < 1 or l2 < 0 or local_l2 < 0:
            raise InputError(
                "LocalTrainer: lr > 0, epochs >= 1, batch_size >= 1, max_examples >= 1 and "
                "l2, local_l2 >= 0 are required"
            )
        self.spec = spec
        self.num_items = spec.num_items
        self.score_fn = score_fn
        self.lr = float(lr)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.l2 = float(l2)
        self.local_l2 = float(local_l2)
        self.max_examples = int(max_examples)
        self.seed = int(seed)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[bytes, Examples] = OrderedDict()

    # ------------------------------------------------------------------ data
    def prepare(self, history: np.ndarray | Examples) -> Examples:
        """Examples with base scores for ``history`` (scored once, then cached)."""
        if isinstance(history, Examples):
            return history
        h = np.asarray(history, dtype=np.int64).ravel()
        key = hashlib.sha256(h.tobytes()).digest()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        rows, items = build_examples(self.spec, h, self.max_examples)
        if len(rows):
            scores = np.asarray(self.score_fn(rows), dtype=np.float32)
            if scores.shape != (len(rows), self.num_items):
                raise InputError(
                    f"score_fn returned shape {scores.shape}, expected "
                    f"({len(rows)}, {self.num_items})"
                )
        else:
            scores = np.zeros((0, self.num_items), np.float32)
        ex = Examples(scores, items - 1)
        if self.cache_size > 0:
            self._cache[key] = ex
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return ex

    def clear_cache(self) -> None:
        """Forget cached base scores (e.g. after a model update)."""
        self._cache.clear()

    # ------------------------------------------------------------------ loss
    def loss(self, history: np.ndarray | Examples, *biases: np.ndarray | None) -> float:
        """Mean next-item cross-entropy of ``scores + sum(biases)`` on the examples."""
        ex = self.prepare(history)
        if not len(ex):
            return 0.0
        z = ex.scores + self._offset(*biases)
        zmax = z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z - zmax).sum(axis=1)) + zmax[:, 0]
        return float(np.mean(lse - z[np.arange(len(ex)), ex.targets]))

    # ------------------------------------------------------------------ training
    def train_global(
        self,
        history: np.ndarray | Examples,
        global_bias: np.ndarray,
        local_bias: np.ndarray | None = None,
    ) -> np.ndarray:
        """The federated update: ``global_bias_after - global_bias`` (float32 ``[n]``).

        ``global_bias`` is not modified; ``local_bias``, if given, is added to the scores
        and held fixed. Returns zeros for a history with fewer than 2 items.
        """
        ex = self.prepare(history)
        g = self._vec(global_bias, "global_bias")
        fixed = self._offset(local_bias)
        w = self._fit(ex, fixed, g, self.l2)
        return (w - g).astype(np.float32)

    def train_local(
        self,
        history: np.ndarray | Examples,
        global_bias: np.ndarray,
        local_bias: np.ndarray | None = None,
    ) -> np.ndarray:
        """New private ``local_bias`` (float32 ``[n]``), ``global_bias`` held fixed.

        Starts from ``local_bias`` (zeros if None); neither input is modified.
        """
        ex = self.prepare(history)
        fixed = self._offset(global_bias)
        start = (
            np.zeros(self.num_items, np.float32)
            if local_bias is None
            else self._vec(local_bias, "local_bias")
        )
        return self._fit(ex, fixed, start, self.local_l2)

    # ------------------------------------------------------------------ internals
    def _vec(self, v: np.ndarray, name: str) -> np.ndarray:
        arr = np.asarray(v, dtype=np.float32)
        if arr.shape != (self.num_items,):
            raise InputError(f"{name} must have shape ({self.num_items},), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{name} holds NaN or infinite values")
        return arr

    def _offset(self, *biases: np.ndarray | None) -> np.ndarray:
        out = np.zeros(self.num_items, np.float32)
        for b in biases:
            if b is not None:
                out += self._vec(b, "bias")
        return out

    def _fit(self, ex: Examples, fixed: np.ndarray, start: np.ndarray, l2: float) -> np.ndarray:
        w = start.astype(np.float32, copy=True)
        m = len(ex)
        if m == 0:
            return w
        rng = np.random.default_rng(self.seed)
        bs = min(self.batch_size, m)
        z = np.empty((bs, self.num_items), np.float32)
        for _ in range(self.epochs):
            perm = rng.permutation(m)
            for start_i in range(0, m, bs):
                idx = perm[start_i : start_i + bs]
                zb = z[: len(idx)]
                np.add(ex.scores[idx], fixed + w, out=zb)
                zb -= zb.max(axis=1, keepdims=True)
                np.exp(zb, out=zb)
                zb /= zb.sum(axis=1, keepdims=True)
                grad = zb.sum(axis=0)
                grad -= np.bincount(ex.targets[idx], minlength=self.num_items)
                grad /= len(idx)
                if l2:
                    grad += l2 * w
                w -= self.lr * grad
        return w
