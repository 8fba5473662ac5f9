"""Scoring, evaluation and the non-federated rows of the federated simulation.

Everything here scores through the runtime (``Recommender.backend.run``: the bundle's
TFLite or ONNX artifact), never TensorFlow. The head is additive on the scores
(``docs/federated-protocol.md``), so the model scores of every evaluation row and every
training example are computed once and the rows of the table differ only in the bias
vectors added to them — exactly what ``Recommender.recommend`` does with
``set_global_bias`` / ``set_local_bias`` (:meth:`Evaluator.check_runtime` verifies it).

Rows computed here:

* **shipped**: the bundle as released (biases 0).
* **local-only**: each device trains its private ``local_bias`` on its own post-cut-off
  examples (``LocalTrainer.train_local``); nothing is shared.
* **centralized fine-tune**: the same ``global_bias`` head trained by SGD on the union
  of all devices' post-cut-off examples (``LocalTrainer.train_global`` on the pooled
  examples) — the non-private upper bound. Its number of epochs is chosen on a
  validation target (each device's last training example, held out) and the head is
  then retrained on everything.

:class:`Evaluator` judges each device on its held-out last event; :class:`HeldOutEvaluator`
judges devices that never train on all their post-cut-off events (the
``held-out-devices`` protocol of ``simulate-federated``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgerec.features import FeatureSpec
from edgerec.federated.evaluation import event_metrics
from edgerec.federated.local import Examples, LocalTrainer, build_examples
from edgerec.metrics import paired_bootstrap, per_user_metrics, target_ranks
from edgerec.simulation.federated_eval import EventMetrics
from edgerec.simulation.timesplit import DeviceArrays

log = logging.getLogger(__name__)

__all__ = [
    "Evaluator",
    "HeldOutEvaluator",
    "RowResult",
    "central_finetune",
    "device_examples",
    "local_only",
]

ScoreFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class RowResult:
    """One row of the simulation table.

    Attributes:
        name: row label.
        ndcg, hr: per evaluated device NDCG@10 / HR@10 (history kept in the ranking).
        ndcg_excl: NDCG@10 with the device's history excluded from the ranking (what
            ``Recommender.recommend(exclude_seen=True)`` shows the user).
        info: everything else (rounds, bytes, wall time, ε, settings).
    """

    name: str
    ndcg: np.ndarray
    hr: np.ndarray
    ndcg_excl: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self, shipped: RowResult | None, central: RowResult | None, resamples: int):
        """Means, the paired-bootstrap CI vs ``shipped`` and the recovery of ``central``'s gain."""
        out: dict[str, Any] = {
            "name": self.name,
            "NDCG@10": float(self.ndcg.mean()),
            "HR@10": float(self.hr.mean()),
            "NDCG@10_seen_excluded": float(self.ndcg_excl.mean()),
            **self.info,
        }
        if shipped is not None and shipped is not self:
            b = paired_bootstrap(self.ndcg, shipped.ndcg, n_resamples=resamples, seed=0)
            out["vs_shipped"] = {"diff": b.diff, "low": b.low, "high": b.high}
            bh = paired_bootstrap(self.hr, shipped.hr, n_resamples=resamples, seed=0)
            out["vs_shipped_hr"] = {"diff": bh.diff, "low": bh.low, "high": bh.high}
        if shipped is not None and central is not None:
            gain = float(central.ndcg.mean() - shipped.ndcg.mean())
            out["central_gain"] = gain
            out["recovery"] = (
                float((self.ndcg.mean() - shipped.ndcg.mean()) / gain) if gain > 0 else None
            )
            gain_x = float(central.ndcg_excl.mean() - shipped.ndcg_excl.mean())
            out["recovery_seen_excluded"] = (
                float((self.ndcg_excl.mean() - shipped.ndcg_excl.mean()) / gain_x)
                if gain_x > 0
                else None
            )
        return out


def score_rows(score_fn: ScoreFn, rows: np.ndarray, batch: int = 512) -> np.ndarray:
    """Model scores ``[B, n]`` of input rows, in batches."""
    parts = [
        np.asarray(score_fn(rows[i : i + batch]), np.float32) for i in range(0, len(rows), batch)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def device_examples(
    spec: FeatureSpec, score_fn: ScoreFn, device: DeviceArrays, max_examples: int
) -> Examples:
    """The device's training examples (its last ``n_train`` positions, at most
    ``max_examples``), scored by the runtime — what ``SyncClient`` trains on."""
    n = min(device.n_train, max_examples)
    rows, items = build_examples(spec, device.history, n)
    scores = score_rows(score_fn, rows) if len(rows) else np.zeros((0, spec.num_items), np.float32)
    return Examples(scores, items - 1)


class Evaluator:
    """Full-ranking NDCG@10 / HR@10 of each evaluable device's test interaction.

    Args:
        spec: the bundle's feature spec.
        score_fn: runtime scoring ``rows -> scores``.
        devices: encoded devices (only ``evaluable`` ones are scored).
        user_ids: raw user id of each device (for :meth:`check_runtime`).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        score_fn: ScoreFn,
        devices: Sequence[DeviceArrays],
        user_ids: Sequence[str] | None = None,
    ) -> None:
        self.spec = spec
        self.index = np.array([i for i, d in enumerate(devices) if d.evaluable], np.int64)
        self.histories = [devices[i].history for i in self.index]
        self.targets = np.array([devices[i].target for i in self.index], np.int64)
        rows = spec.encode_batch(self.histories)
        self.base = score_rows(score_fn, rows)
        self.user_ids = None if user_ids is None else [user_ids[i] for i in self.index]

    def __len__(self) -> int:
        return int(self.index.size)

    def evaluate(
        self,
        name: str,
        global_bias: np.ndarray | None = None,
        local_biases: dict[int, np.ndarray] | None = None,
        info: dict[str, Any] | None = None,
    ) -> RowResult:
        """Metrics with ``global_bias`` (all devices) and per-device ``local_biases``
        (keyed by device position in the encoded list)."""
        scores = self.scores(global_bias, local_biases)
        ndcg, hr, ndcg_excl = _metrics(scores, self.targets, self.histories)
        return RowResult(name, ndcg, hr, ndcg_excl, dict(info or {}))

    def event_metrics(self, global_bias: np.ndarray | None = None) -> EventMetrics:
        """Per device (one held-out event each): NDCG@10 / HR@10 with ``global_bias``
        — what a device reports in a federated evaluation."""
        ndcg, hr = event_metrics(self.scores(global_bias), self.targets)
        return EventMetrics(ndcg, hr, np.arange(len(self)))

    def scores(
        self,
        global_bias: np.ndarray | None = None,
        local_biases: dict[int, np.ndarray] | None = None,
    ) -> np.ndarray:
        scores = self.base.copy()
        if global_bias is not None:
            scores += np.asarray(global_bias, np.float32)
        for row, dev in enumerate(self.index.tolist()):
            if local_biases and dev in local_biases:
                scores[row] += local_biases[dev]
        return scores

    def check_runtime(self, recommender: Any, global_bias: np.ndarray, users: int = 3) -> float:
        """Top-10 agreement of :meth:`scores` with ``Recommender.recommend`` (the real
        on-device path with ``set_global_bias``) for the first ``users`` devices."""
        vocab = recommender.vocab
        recommender.set_global_bias(global_bias, version="simulation-check")
        agree = []
        try:
            scores = self.scores(global_bias)
            for row in range(min(users, len(self))):
                raw = vocab.decode(self.histories[row])
                got = [r.item_id for r in recommender.recommend(raw, k=10, exclude_seen=False)]
                want = vocab.decode(np.argsort(-scores[row], kind="stable")[:10] + 1)
                agree.append(len(set(got) & set(want)) / 10)
        finally:
            recommender.set_global_bias(None)
        return float(np.mean(agree)) if agree else 1.0


class HeldOutEvaluator:
    """NDCG@10 / HR@10 of devices that never train, over every one of their training
    examples (the ``held-out-devices`` protocol): a device's metric is its mean over its
    post-cut-off events, so a head is judged on many more events than one per device.

    Args:
        spec: the bundle's feature spec.
        devices: the held-out devices' arrays, by device position.
        examples: their scored examples (:func:`device_examples`), by device position.
        max_examples: the ``max_examples`` the examples were built with (to recover each
            example's prefix, whose items the "seen excluded" metric leaves out).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        devices: dict[int, DeviceArrays],
        examples: dict[int, Examples],
        max_examples: int,
    ) -> None:
        self.spec = spec
        self.devices = sorted(d for d in examples if len(examples[d]))
        self.base = np.concatenate([examples[d].scores for d in self.devices])
        self.targets = np.concatenate([examples[d].targets for d in self.devices]) + 1
        self.owner = np.concatenate(
            [np.full(len(examples[d]), j) for j, d in enumerate(self.devices)]
        )
        self._counts = np.bincount(self.owner, minlength=len(self.devices))
        self.seen: list[np.ndarray] = []
        for d in self.devices:
            history = devices[d].history
            n = min(devices[d].n_train, max_examples)
            self.seen.extend(history[:p] for p in range(max(1, history.size - n), history.size))

    def __len__(self) -> int:
        return len(self.devices)

    @property
    def events(self) -> int:
        return int(self.targets.size)

    def evaluate(
        self,
        name: str,
        global_bias: np.ndarray | None = None,
        local_biases: dict[int, np.ndarray] | None = None,
        info: dict[str, Any] | None = None,
    ) -> RowResult:
        """Per-device mean metrics with ``global_bias`` added to every score."""
        if local_biases:
            raise ValueError("held-out devices never train: no local biases to evaluate")
        per_event = _metrics(self._scores(global_bias), self.targets, self.seen)
        ndcg, hr, ndcg_excl = (self._per_device(m) for m in per_event)
        return RowResult(name, ndcg, hr, ndcg_excl, dict(info or {}))

    def event_metrics(self, global_bias: np.ndarray | None = None) -> EventMetrics:
        """Per event, oldest first within a device: NDCG@10 / HR@10 with ``global_bias``
        and the event's device — what devices report in a federated evaluation."""
        ndcg, hr = event_metrics(self._scores(global_bias), self.targets)
        return EventMetrics(ndcg, hr, self.owner)

    def _scores(self, global_bias: np.ndarray | None) -> np.ndarray:
        return self.base if global_bias is None else self.base + global_bias

    def _per_device(self, per_event: np.ndarray) -> np.ndarray:
        return np.bincount(self.owner, per_event, minlength=len(self.devices)) / self._counts


def _metrics(
    scores: np.ndarray, targets: np.ndarray, seen: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: NDCG@10 and HR@10 under full ranking, and NDCG@10 with ``seen`` left out."""
    ndcg, hr = event_metrics(scores, targets)
    excl = per_user_metrics(target_ranks(scores, targets, exclude=seen), 10)
    return ndcg, hr, excl["NDCG@10"]


def local_only(
    spec: FeatureSpec,
    examples: dict[int, Examples],
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    local_l2: float,
    seed: int = 0,
) -> dict[int, np.ndarray]:
    """Each device's private ``local_bias`` trained on its own examples (global = 0)."""
    zeros = np.zeros(spec.num_items, np.float32)
    out = {}
    for dev, ex in examples.items():
        trainer = LocalTrainer(
            spec, _no_scoring, lr=lr, epochs=epochs, batch_size=batch_size,
            local_l2=local_l2, seed=seed + dev, cache_size=0,
        )  # fmt: skip
        out[dev] = trainer.train_local(ex, zeros)
    return out


def central_finetune(
    spec: FeatureSpec,
    examples: dict[int, Examples],
    *,
    lr: float,
    batch_size: int,
    max_epochs: int,
    l2: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The head trained centrally on every device's examples (non-private upper bound).

    Epochs are picked on a validation target: each device's last example is held out,
    the head is trained epoch by epoch on the rest, and the epoch count (0, the shipped
    head, included) with the best mean validation NDCG@10 wins; then the head is
    retrained on all examples that long.
    """
    train_parts, valid_scores, valid_targets = [], [], []
    for ex in examples.values():
        if len(ex) >= 2:
            train_parts.append(Examples(ex.scores[:-1], ex.targets[:-1]))
            valid_scores.append(ex.scores[-1])
            valid_targets.append(ex.targets[-1])
        else:
            train_parts.append(ex)
    pooled_train = _pool(train_parts, spec.num_items)
    vs = np.stack(valid_scores) if valid_scores else np.zeros((0, spec.num_items), np.float32)
    vt = np.asarray(valid_targets, np.int64) + 1

    def trainer(epoch: int) -> LocalTrainer:
        return LocalTrainer(
            spec, _no_scoring, lr=lr, epochs=1, batch_size=batch_size, l2=l2,
            seed=seed + epoch, cache_size=0,
        )  # fmt: skip

    w = np.zeros(spec.num_items, np.float32)

    def valid_ndcg(bias: np.ndarray) -> float:
        if not len(vt):
            return 0.0
        return float(per_user_metrics(target_ranks(vs + bias, vt), 10)["NDCG@10"].mean())

    curve = [valid_ndcg(w)]  # epoch 0: the shipped head, so training must beat it
    for epoch in range(1, max_epochs + 1):
        w = w + trainer(epoch).train_global(pooled_train, w)
        curve.append(valid_ndcg(w))
    best = int(np.argmax(curve))
    pooled = _pool(list(examples.values()), spec.num_items)
    w = np.zeros(spec.num_items, np.float32)
    for epoch in range(1, best + 1):
        w = w + trainer(epoch).train_global(pooled, w)
    info = {
        "epochs": best,
        "validation_ndcg_by_epoch": [round(c, 5) for c in curve],
        "examples": len(pooled),
        "lr": lr,
        "batch_size": batch_size,
    }
    return w, info


def _pool(parts: list[Examples], n: int) -> Examples:
    parts = [p for p in parts if len(p)]
    if not parts:
        return Examples(np.zeros((0, n), np.float32), np.zeros(0, np.int64))
    return Examples(
        np.concatenate([p.scores for p in parts]), np.concatenate([p.targets for p in parts])
    )


def _no_scoring(rows: np.ndarray) -> np.ndarray:  # examples arrive pre-scored
    raise RuntimeError("examples must be pre-scored")
