"""Synthetic sequential interaction logs with structure a sequential model can learn.

The generative story (all vectorised with numpy, users simulated in blocks):

* **Catalog.** Items are split into ``clusters`` of (almost) equal size at random.
  Clusters have Zipf-like popularity (exponent ``zipf``); inside a cluster the
  items have a popularity rank and are sampled with ``rank = floor(size * U ** item_skew)``,
  so global item popularity is strongly skewed.
* **Per-user taste.** Every user has ``taste_clusters`` preferred clusters drawn
  by cluster popularity; the first event is in one of them.
* **Next event**, given the current item (cluster ``c``, position ``p`` in it):

  - with ``p_chain``: the next item along the cluster's chain, position
    ``p + g`` (mod size) with ``g >= 1`` geometric (success probability
    :data:`CHAIN_STEP_P`), mostly 1 — a strong first-order item transition;
  - with ``p_stay``: a popular item of the same cluster;
  - with ``p_noise``: a popular item of a random cluster (global popularity);
  - otherwise a cluster switch: with ``p_taste`` to one of the user's preferred
    clusters, else to one of ``successors`` Markov successor clusters of ``c``
    (fixed per cluster, chosen with probabilities decreasing as ``1/(rank+1)``).

* **Lengths** are ``min_length`` plus a geometric tail, mean ``mean_length``.
  **Timestamps** start at a random second of the year after ``start_time`` and
  advance by ``floor(Exponential(mean_gap))`` seconds — zero gaps produce ties,
  whose order is the file order. **Events** are ``view``/``cart``/``purchase``.

Raw ids are ``1..users`` and ``1..items``. Rows are written block by block
(``BLOCK_USERS`` users each), time-sorted within a block. The output depends only
on the arguments: a block's random stream is seeded by ``(seed, block index)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.data.dataset import Interactions
from edgerec.errors import InputError

log = logging.getLogger(__name__)

BLOCK_USERS = 4096
EVENT_TYPES = ("view", "cart", "purchase")
EVENT_PROBS = (0.85, 0.11, 0.04)
CSV_HEADER = "user,item,timestamp,event\n"
#: success probability of the geometric step along a cluster's chain
CHAIN_STEP_P = 0.7


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of :func:`generate_synthetic` (see the module docstring)."""

    users: int
    items: int
    mean_length: float = 20.0
    seed: int = 0
    clusters: int | None = None  # default: max(2, items // 50), at most items // 2
    min_length: int = 3
    zipf: float = 1.0
    item_skew: float = 2.5
    p_chain: float = 0.45
    p_stay: float = 0.2
    p_noise: float = 0.05
    taste_clusters: int = 3
    p_taste: float = 0.5
    successors: int = 4
    start_time: int = 1_600_000_000
    mean_gap: float = 3600.0

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < 2:
            raise InputError(f"need users >= 1 and items >= 2 (got {self.users}, {self.items})")
        if self.min_length < 1:
            raise InputError(f"min_length must be at least 1 (got {self.min_length})")
        if not self.mean_length >= self.min_length:
            raise InputError(
                f"mean_length ({self.mean_length}) must be at least min_length ({self.min_length})"
            )
        if self.clusters is not None and not 1 <= self.clusters <= self.items:
            raise InputError(f"clusters must be in 1..items (got {self.clusters})")
        probs = (self.p_chain, self.p_stay, self.p_noise, self.p_taste)
        if any(not 0.0 <= p <= 1.0 for p in probs) or self.p_chain + self.p_stay + self.p_noise > 1:
            raise InputError("probabilities must be in [0, 1] and p_chain+p_stay+p_noise <= 1")
        if self.taste_clusters < 1 or self.successors < 1:
            raise InputError("taste_clusters and successors must be at least 1")
        if self.item_skew <= 0 or self.zipf < 0 or self.mean_gap < 0:
            raise InputError("item_skew must be > 0, zipf and mean_gap >= 0")

    @property
    def num_clusters(self) -> int:
        if self.clusters is not None:
            return self.clusters
        return int(min(max(2, self.items // 50), self.items // 2))


@dataclass
class SynthChunk:
    """One block of generated rows (0-based user/item codes, time-sorted)."""

    users: np.ndarray  # int64, raw id - 1
    items: np.ndarray  # int64, raw id - 1
    timestamps: np.ndarray  # int64
    events: np.ndarray  # uint8 index into EVENT_TYPES
    num_users: int  # users simulated in this block
    user_codes: np.ndarray  # int64 [num_users], the block's users
    taste: np.ndarray  # int64 [num_users, taste_clusters], their hidden taste clusters


@dataclass
class SyntheticLog:
    """What :func:`generate_synthetic` produced."""

    config: SynthConfig
    rows: int
    item_cluster: np.ndarray  # cluster of item code k (raw id k + 1)
    taste: np.ndarray  # [users, taste_clusters]: hidden taste clusters of user code u
    path: Path | None = None
    interactions: Interactions | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "rows": self.rows,
            "path": str(self.path) if self.path else None,
        }


class World:
    """The catalog structure shared by all users (depends on seed and catalog size)."""

    def __init__(self, cfg: SynthConfig) -> None:
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))
        c = cfg.num_clusters
        self.num_clusters = c
        # Cluster c holds slots start[c] .. start[c+1]-1; slot_item maps slots to items.
        self.start = (np.arange(c + 1, dtype=np.int64) * cfg.items) // c
        self.size = np.diff(self.start)
        self.slot_item = rng.permutation(cfg.items).astype(np.int64)
        slot_cluster = np.repeat(np.arange(c, dtype=np.int64), self.size)
        self.item_cluster = np.empty(cfg.items, dtype=np.int64)
        self.item_cluster[self.slot_item] = slot_cluster
        self.item_slot = np.empty(cfg.items, dtype=np.int64)
        self.item_slot[self.slot_item] = np.arange(cfg.items, dtype=np.int64)
        weights = 1.0 / (rng.permutation(c) + 1.0) ** cfg.zipf
        self.cluster_cdf = np.cumsum(weights / weights.sum())
        self.successors = self.popular_clusters(rng, (c, cfg.successors))
        succ_w = 1.0 / np.arange(1, cfg.successors + 1)
        self.successor_cdf = np.cumsum(succ_w / succ_w.sum())

    def popular_clusters(self, rng: np.random.Generator, shape: Any) -> np.ndarray:
        u = rng.random(shape)
        return np.minimum(np.searchsorted(self.cluster_cdf, u, side="right"), self.num_clusters - 1)


def _rank_sample(rng: np.random.Generator, sizes: np.ndarray, skew: float) -> np.ndarray:
    """Position in a cluster, skewed towards its most popular (low) positions."""
    pos = (sizes * rng.random(sizes.shape) ** skew).astype(np.int64)
    return np.minimum(pos, sizes - 1)


def iter_synthetic(cfg: SynthConfig) -> Iterator[SynthChunk]:
    """Generate the log block by block (``BLOCK_USERS`` users each)."""
    world = World(cfg)
    p_mean = 1.0 / (cfg.mean_length - cfg.min_length + 1.0)
    max_len = int(max(cfg.min_length, 50 * cfg.mean_length))
    event_cdf = np.cumsum(EVENT_PROBS)
    t_chain = cfg.p_chain
    t_stay = t_chain + cfg.p_stay
    t_noise = t_stay + cfg.p_noise
    for block, first_user in enumerate(range(0, cfg.users, BLOCK_USERS)):
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, block]))
        b = min(BLOCK_USERS, cfg.users - first_user)
        lengths = cfg.min_length + rng.geometric(p_mean, size=b) - 1
        lengths = np.minimum(lengths, max_len)
        order = np.argsort(-lengths, kind="stable")  # active users are a prefix
        lengths = lengths[order]
        user_codes = first_user + order
        taste = world.popular_clusters(rng, (b, cfg.taste_clusters))
        longest = int(lengths[0])
        out = np.zeros((b, longest), dtype=np.int64)

        cluster = taste[np.arange(b), rng.integers(0, cfg.taste_clusters, b)]
        pos = _rank_sample(rng, world.size[cluster], cfg.item_skew)
        out[:, 0] = world.slot_item[world.start[cluster] + pos]
        active_counts = np.searchsorted(-lengths, -np.arange(1, longest), side="left")
        for t in range(1, longest):
            n = int(active_counts[t - 1])
            cluster, pos = cluster[:n], pos[:n]
            size = world.size[cluster]
            r = rng.random(n)
            chain = r < t_chain
            noise = (r >= t_stay) & (r < t_noise)
            jump = r >= t_noise
            new_cluster = cluster.copy()  # chain and stay keep the cluster
            if noise.any():
                new_cluster[noise] = world.popular_clusters(rng, int(noise.sum()))
            if jump.any():
                idx = np.flatnonzero(jump)
                to_taste = rng.random(idx.size) < cfg.p_taste
                pick = rng.integers(0, cfg.taste_clusters, idx.size)
                succ = np.searchsorted(world.successor_cdf, rng.random(idx.size), side="right")
                succ = np.minimum(succ, cfg.successors - 1)
                new_cluster[idx] = np.where(
                    to_taste, taste[idx, pick], world.successors[cluster[idx], succ]
                )
            new_size = world.size[new_cluster]
            new_pos = _rank_sample(rng, new_size, cfg.item_skew)
            step = rng.geometric(CHAIN_STEP_P, n)
            new_pos = np.where(chain, (pos + step) % np.maximum(size, 1), new_pos)
            cluster, pos = new_cluster, new_pos
            out[:n, t] = world.slot_item[world.start[cluster] + pos]

        mask = np.arange(longest) < lengths[:, None]
        items = out[mask]
        users = np.repeat(user_codes, lengths)
        gaps = np.floor(rng.exponential(cfg.mean_gap, size=(b, longest))).astype(np.int64)
        gaps[:, 0] = cfg.start_time + rng.integers(0, 365 * 86400, b)
        times = np.cumsum(gaps, axis=1)[mask]
        events = np.searchsorted(event_cdf, rng.random(items.size), side="right")
        events = np.minimum(events, len(EVENT_TYPES) - 1).astype(np.uint8)
        rows = np.argsort(times, kind="stable")
        yield SynthChunk(users[rows], items[rows], times[rows], events[rows], b, user_codes, taste)


def generate_synthetic(
    users: int,
    items: int,
    mean_length: float = 20.0,
    seed: int = 0,
    *,
    out: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> SyntheticLog:
    """Generate a synthetic sequential log (see the module docstring for the model).

    Args:
        users, items: catalog and population size (scales to 1M items, 50k+ users).
        mean_length: mean events per user (at least ``min_length``, default 3).
        seed: the output is a pure function of the arguments.
        out: write the generic CSV format ``user,item,timestamp,event`` there
            (streamed block by block, atomically renamed when complete); when None
            the log is returned in memory as :class:`Interactions`.
        progress: called with the number of users finished after every block.
        **options: further :class:`SynthConfig` fields (``clusters``, ``p_chain`` ...).

    Returns:
        A :class:`SyntheticLog` with the row count, the item -> cluster map and the
        users' hidden taste clusters (what :mod:`edgerec.data.synth_oracle` needs).
    """
    try:
        cfg = SynthConfig(users=users, items=items, mean_length=mean_length, seed=seed, **options)
    except TypeError as exc:
        raise InputError(f"generate_synthetic: {exc}") from None
    item_cluster = World(cfg).item_cluster
    taste = np.zeros((cfg.users, cfg.taste_clusters), dtype=np.int64)
    rows = 0
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        names = np.array(EVENT_TYPES, dtype=object)
        try:
            with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(CSV_HEADER)
                for chunk in iter_synthetic(cfg):
                    taste[chunk.user_codes] = chunk.taste
                    fh.write(
                        "".join(
                            map(
                                "{},{},{},{}\n".format,
                                (chunk.users + 1).tolist(),
                                (chunk.items + 1).tolist(),
                                chunk.timestamps.tolist(),
                                names[chunk.events].tolist(),
                            )
                        )
                    )
                    rows += chunk.users.size
                    if progress is not None:
                        progress(chunk.num_users)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        log.info(
            "wrote %d synthetic interactions (%d users, %d items) to %s", rows, users, items, path
        )
        return SyntheticLog(cfg, rows, item_cluster, taste, path=path)

    parts = []
    for chunk in iter_synthetic(cfg):
        taste[chunk.user_codes] = chunk.taste
        parts.append(chunk)
        rows += chunk.users.size
        if progress is not None:
            progress(chunk.num_users)
    inter = _to_interactions(parts)
    return SyntheticLog(cfg, rows, item_cluster, taste, interactions=inter)


def _to_interactions(parts: list[SynthChunk]) -> Interactions:
    users = np.concatenate([p.users for p in parts])
    items = np.concatenate([p.items for p in parts])

    def intern(raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
        uniq, first, inverse = np.unique(raw, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # first-seen order
        rank = np.empty(order.size, dtype=np.int32)
        rank[order] = np.arange(order.size, dtype=np.int32)
        return rank[inverse.reshape(-1)], [str(v + 1) for v in uniq[order].tolist()]

    user_codes, user_ids = intern(users)
    item_codes, item_ids = intern(items)
    return Interactions(
        users=user_codes,
        items=item_codes,
        timestamps=np.concatenate([p.timestamps for p in parts]),
        user_ids=user_ids,
        item_ids=item_ids,
        events=np.concatenate([p.events for p in parts]).astype(np.int16),
        event_types=list(EVENT_TYPES),
        source="synthetic",
    )
