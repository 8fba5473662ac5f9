"""What a device contributes to a round: local training on its own history, then the
clipped, noised, fixed-point update (:func:`~edgerec.federated.dp.privatize`).

Also adapts what the app hands to the sync client (a bundle path, a
:class:`~edgerec.runtime.Recommender`, or any object with a feature spec, a vocab and a
scoring function) to the few things a round needs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgerec.errors import InputError
from edgerec.features import FeatureSpec
from edgerec.federated.dp import privatize
from edgerec.federated.evaluation import FIELDS, device_report, event_metrics
from edgerec.federated.local import LocalTrainer, build_examples
from edgerec.federated.protocol import RoundParams

from .sync_bundle import UNKNOWN_BUNDLE, BundleId, bundle_of_model
from .sync_outcome import SyncError

log = logging.getLogger(__name__)

__all__ = ["TRAINER_OPTIONS", "LocalUpdate", "SyncModel", "adapt_model"]

#: LocalTrainer options a round may set (anything else in ``training`` is ignored)
TRAINER_OPTIONS = ("lr", "epochs", "batch_size", "l2", "max_examples")


class SyncModel(NamedTuple):
    """The parts of the on-device model that federated sync uses."""

    spec: FeatureSpec
    encode: Callable[[list[str]], np.ndarray]  # raw item ids -> indices (unknown skipped)
    score_fn: Callable[[np.ndarray], np.ndarray]
    store: Any
    target: Any  # where the global bias is applied
    owned: Any  # something to close (a Recommender this client opened)
    bundle: BundleId = UNKNOWN_BUNDLE  # which bundle this is (heads must belong to it)


def adapt_model(model: Any) -> SyncModel:
    """A :class:`SyncModel` from a bundle path (opened here, closed with the client), a
    Recommender, or an object with ``.spec``, ``.vocab`` and ``.score_rows(rows)`` /
    ``.backend.run(rows)``.

    The bundle identity is the Recommender's manifest model id and version, or the
    object's ``model_id`` / ``model_version`` attributes (unknown when it has none)."""
    owned = None
    if isinstance(model, str | Path):
        from .recommender import Recommender

        model = owned = Recommender.open(model)
    spec = getattr(model, "spec", None)
    vocab = getattr(model, "vocab", None)
    if not isinstance(spec, FeatureSpec) or vocab is None:
        raise InputError(
            "SyncClient needs a bundle path, a Recommender, or an object with .spec "
            "(FeatureSpec), .vocab and .score_rows(rows) / .backend.run(rows)"
        )
    score = getattr(model, "score_rows", None)
    if score is None:
        backend = getattr(model, "backend", None)
        score = getattr(backend, "run", None)
    if score is None:
        raise InputError("the model has neither .score_rows(rows) nor .backend.run(rows)")
    return SyncModel(
        spec,
        vocab.encode,
        score,
        getattr(model, "store", None),
        model,
        owned,
        bundle_of_model(model),
    )


class LocalUpdate:
    """Trains the shared head on one user's history and privatizes the result.

    Args:
        model: the adapted on-device model.
        store: the history store (None: no history; training sees no examples).
        user: whose history trains (None: the store's only user).
        rng: noise generator (None: seeded from the OS).
        trainer_options: LocalTrainer defaults (a round's ``training`` overrides them).
    """

    def __init__(
        self,
        model: SyncModel,
        store: Any,
        user: str | None,
        rng: np.random.Generator | None,
        trainer_options: Mapping[str, Any],
    ) -> None:
        self.model = model
        self.store = store
        self.user = user
        self.rng = rng
        self.trainer_options = dict(trainer_options)
        self._trainer: tuple[str, LocalTrainer] | None = None

    def compute(
        self, params: RoundParams, training: Mapping[str, Any], global_bias: np.ndarray | None
    ) -> np.ndarray:
        """Train on the local history from ``global_bias``, then clip, noise and encode
        the change (uint32)."""
        opts = {**self.trainer_options}
        opts.update({k: training[k] for k in TRAINER_OPTIONS if k in training})
        key = json.dumps(opts, sort_keys=True, default=str)
        if self._trainer is None or self._trainer[0] != key:
            # kept across rounds: it caches the model's scores of this device's examples
            # (the model does not change between rounds, only the additive head)
            self._trainer = (key, LocalTrainer(self.model.spec, self.model.score_fn, **opts))
        trainer = self._trainer[1]
        # the last max_examples positions are the examples; the history_len events
        # before them are the first example's full input window. With federated
        # evaluation on, the most recent holdout_events stay out of training: they are
        # what this device judges candidate heads on.
        holdout = _holdout(training)
        history = self.history(trainer.max_examples + self.model.spec.history_len + holdout)
        history = history[: max(0, history.size - holdout)]
        bias = (
            global_bias
            if global_bias is not None
            else np.zeros(self.model.spec.num_items, np.float32)
        )
        delta = trainer.train_global(history, bias)
        update = privatize(delta, params, self.rng)
        log.info(
            "round %s: trained on %d items, |delta|=%.4g%s",
            params.round_id,
            history.size,
            update.norm,
            " (clipped)" if update.clipped else "",
        )
        return update.values

    def evaluate(
        self,
        params: RoundParams,
        max_events: int,
        global_bias: np.ndarray | None,
        candidate: np.ndarray,
    ) -> np.ndarray:
        """This device's report in an evaluation round: how the current head and the
        candidate rank its last ``max_events`` events (held out of its training), as
        metric sums (:func:`~edgerec.federated.evaluation.device_report`), then noised
        and encoded like a training update (uint32)."""
        spec = self.model.spec
        history = self.history(max_events + spec.history_len)
        rows, targets = build_examples(spec, history, max_events)
        empty = np.zeros(0)
        metrics = (empty,) * 4
        if targets.size:
            scores = np.asarray(self.model.score_fn(rows), np.float32)
            current = scores if global_bias is None else scores + global_bias
            ndcg_c, hr_c = event_metrics(current, targets)
            ndcg_k, hr_k = event_metrics(scores + candidate, targets)
            metrics = (ndcg_c, ndcg_k, hr_c, hr_k)
        report = device_report(*metrics, max_events)
        log.info(
            "round %s: evaluated a candidate on %d events (NDCG@10 %+.3f)",
            params.round_id,
            targets.size,
            float(report[FIELDS.index("ndcg_diff")]),
        )
        return privatize(report, params, self.rng).values

    def history(self, limit: int) -> np.ndarray:
        """The user's last ``limit`` events as item indices (unknown items skipped)."""
        store = self.store
        if store is None:
            return np.zeros(0, np.int64)
        user = self.user
        if user is None:
            users = store.users()
            if len(users) > 1:
                raise SyncError(
                    f"the history store has {len(users)} users; pass SyncClient(user=...)"
                )
            if not users:
                return np.zeros(0, np.int64)
            user = users[0]
        events = store.history(user, limit=limit)
        return np.asarray(self.model.encode([e.item for e in events]), np.int64)


def _holdout(training: Mapping[str, Any]) -> int:
    """The round's ``holdout_events`` (0 when absent or unusable)."""
    value = training.get("holdout_events", 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
        return 0
    return value


def decode_bias(data: Mapping[str, Any], num_items: int, what: str) -> np.ndarray:
    """The float32 vector of a head or candidate answer (base64 ``global_bias``,
    checked against its ``sha256`` and the bundle's catalog size)."""
    encoded = data.get("global_bias")
    if not isinstance(encoded, str):
        raise SyncError(f"{what} lacks global_bias", "bad_response")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise SyncError(f"{what}: global_bias is not base64", "bad_response") from None
    if hashlib.sha256(raw).hexdigest() != data.get("sha256"):
        raise SyncError(f"{what}: download corrupted (sha256 mismatch)", "bad_response")
    if len(raw) % 4:
        raise SyncError(f"{what}: {len(raw)} bytes is not float32[]", "bad_response")
    bias = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if bias.shape != (num_items,) or not np.all(np.isfinite(bias)):
        raise SyncError(
            f"{what} has {bias.size} values, the bundle has {num_items} items", "bad_response"
        )
    return bias
