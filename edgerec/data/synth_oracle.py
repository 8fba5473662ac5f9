"""The synthetic generator's own next-item distribution: the best any model can do.

:mod:`edgerec.data.synth` draws each event from a distribution that depends only on the
previous item (its cluster and position) and on the user's hidden taste clusters. Given
both, that distribution is known in closed form (:meth:`NextItemOracle.probabilities`),
and ranking the catalog by it maximises the expected value of any rank-based metric
such as NDCG@10 or HR@10. :func:`oracle_ranks` scores a leave-one-out split with it, so
a benchmark can say what fraction of this optimum a model reaches.

The oracle knows the taste, which a model only infers from the history, so its figure
is an upper bound: a model can come close to it on long histories, not exceed it in
expectation. The mixture, for a previous item in cluster ``c`` at position ``p``:

* ``p_chain``: the item at position ``(p + g) mod size(c)``, ``g >= 1`` geometric
  with success probability :data:`~edgerec.data.synth.CHAIN_STEP_P`;
* ``p_stay``: cluster ``c``, then a position by the in-cluster popularity law;
* ``p_noise``: a cluster by global cluster popularity, then a position;
* the rest, a jump: with ``p_taste`` one of the taste clusters (uniformly over the
  user's ``taste_clusters`` draws), otherwise successor ``k`` of ``c`` with the
  generator's successor probabilities; then a position.

The in-cluster law: a position is ``floor(size * U ** item_skew)`` for uniform ``U``,
so position ``k`` has probability ``((k+1)/size) ** (1/skew) - (k/size) ** (1/skew)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.data.synth import CHAIN_STEP_P, SynthConfig, World
from edgerec.errors import InputError
from edgerec.metrics import target_ranks

__all__ = ["NextItemOracle", "oracle_ranks"]

#: chain steps summed exactly; the geometric tail beyond is below float32 resolution
_MAX_CHAIN_STEP = 64


class NextItemOracle:
    """The generator's next-item probabilities (see the module docstring).

    Args:
        cfg: the generator's configuration (the catalog structure is rebuilt from it).
    """

    def __init__(self, cfg: SynthConfig) -> None:
        self.cfg = cfg
        w = World(cfg)
        self.world = w
        self.cluster_prob = _probabilities(w.cluster_cdf)
        self.successor_prob = _probabilities(w.successor_cdf)
        # probability of each item given that its cluster was chosen
        sizes = w.size[w.item_cluster].astype(np.float64)
        rank = (w.item_slot - w.start[w.item_cluster]).astype(np.float64)
        inv = 1.0 / cfg.item_skew
        self.within = ((rank + 1) / sizes) ** inv - (rank / sizes) ** inv
        steps = np.arange(1, _MAX_CHAIN_STEP + 1)
        self.step_prob = CHAIN_STEP_P * (1 - CHAIN_STEP_P) ** (steps - 1)
        self._steps = steps

    def probabilities(self, previous: np.ndarray, taste: np.ndarray) -> np.ndarray:
        """``[B, items]`` next-item probabilities over item codes (raw id - 1).

        Args:
            previous: ``[B]`` item codes of each user's last event.
            taste: ``[B, taste_clusters]`` each user's taste clusters.
        """
        cfg, w = self.cfg, self.world
        previous = np.asarray(previous, dtype=np.int64)
        taste = np.asarray(taste, dtype=np.int64)
        b = previous.shape[0]
        if taste.shape != (b, cfg.taste_clusters):
            raise InputError(
                f"taste must have shape ({b}, {cfg.taste_clusters}) (got {taste.shape})"
            )
        p_jump = 1.0 - cfg.p_chain - cfg.p_stay - cfg.p_noise
        cluster = w.item_cluster[previous]
        rows = np.arange(b)
        # weight of each cluster being chosen by stay, noise or a jump
        weight = np.tile(cfg.p_noise * self.cluster_prob, (b, 1))
        weight[rows, cluster] += cfg.p_stay
        for t in range(cfg.taste_clusters):
            np.add.at(weight, (rows, taste[:, t]), p_jump * cfg.p_taste / cfg.taste_clusters)
        for k in range(cfg.successors):
            succ = w.successors[cluster, k]
            np.add.at(weight, (rows, succ), p_jump * (1 - cfg.p_taste) * self.successor_prob[k])
        probs = weight[:, w.item_cluster] * self.within[None, :]
        # the chain: positions p + g (mod size) of the same cluster
        size = w.size[cluster]
        pos = w.item_slot[previous] - w.start[cluster]
        slots = w.start[cluster, None] + (pos[:, None] + self._steps[None, :]) % np.maximum(
            size[:, None], 1
        )
        chained = w.slot_item[slots]
        np.add.at(probs, (np.repeat(rows, self._steps.size), chained.ravel()),
                  np.tile(cfg.p_chain * self.step_prob, b))  # fmt: skip
        return probs


def oracle_ranks(
    oracle: NextItemOracle,
    split: LeaveOneOutSplit,
    taste: np.ndarray,
    *,
    which: str = "test",
    batch_size: int = 256,
) -> np.ndarray:
    """The rank of each user's target under the oracle, under the project's protocol
    (full ranking over the split's catalog, history kept, ties against the target).

    Args:
        oracle: the generator's oracle.
        split: leave-one-out split of a log the generator wrote (raw ids ``1..``).
        taste: ``[users, taste_clusters]`` taste clusters by user code (raw id - 1),
            :attr:`~edgerec.data.synth.SyntheticLog.taste`.
        which: ``"test"`` or ``"valid"`` target.
    """
    if which not in ("test", "valid"):
        raise InputError(f"which must be 'test' or 'valid' (got {which!r})")
    item_codes = _codes(split.vocab.item_ids, "item")
    user_codes = _codes(split.dataset.user_ids, "user")
    if item_codes.max(initial=0) >= oracle.cfg.items or user_codes.max(initial=0) >= len(taste):
        raise InputError("the split holds ids the generator's configuration cannot have made")
    if which == "test":
        histories, targets = split.test_inputs(), split.test_target
    else:
        histories, targets = split.train, split.valid_target
    previous = np.array([h[-1] if len(h) else 0 for h in histories], dtype=np.int64)
    if (previous == 0).any():
        raise InputError("every user needs at least one event before the target")
    ranks = np.empty(len(histories), dtype=np.int64)
    for start in range(0, len(histories), batch_size):
        sl = slice(start, start + batch_size)
        probs = oracle.probabilities(item_codes[previous[sl] - 1], taste[user_codes[sl]])
        ranks[sl] = target_ranks(probs[:, item_codes], np.asarray(targets[sl]), None)
    return ranks


def _probabilities(cdf: np.ndarray) -> np.ndarray:
    """The probabilities behind a sampling CDF; a draw past its last value (rounding)
    goes to the last entry, as the generator clips it."""
    probs = np.diff(np.concatenate([[0.0], cdf]))
    probs[-1] += max(0.0, 1.0 - float(cdf[-1]))
    return probs


def _codes(raw_ids: Sequence[str], what: str) -> np.ndarray:
    try:
        codes = np.array([int(r) - 1 for r in raw_ids], dtype=np.int64)
    except ValueError:
        raise InputError(f"{what} ids are not the generator's integer ids") from None
    if codes.size and codes.min() < 0:
        raise InputError(f"{what} ids are not the generator's ids (1, 2, ...)")
    return codes
