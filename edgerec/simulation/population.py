"""A synthetic device population with a popularity shift, for the federated simulation.

MovieLens-100K has 943 users, and the post-cut-off part of it offers the additive item-bias
head little to learn (see ``benchmarks/RESULTS.md``). :func:`synthetic_population` builds
a large population from the project's data generator (:func:`edgerec.data.synth.generate_synthetic`,
the code behind ``edgerec data synth``) and then applies a documented **trend shift**:

* ``mean_gap`` is set so that a user's events span about ``span_days`` (the generator's
  default of one hour would put each user entirely before or after any global cut-off);
* after the cut-off time (the ``cutoff_quantile`` of all timestamps), each event is, with
  probability ``trend_share``, replaced by one of ``trend_items`` "trending" items drawn
  with Zipf(1) weights; the trending items are chosen uniformly from the catalog (so
  most were unpopular before the cut-off, and the shipped model under-rates them).

The shipped model is trained only on the unshifted pre-cut-off events, so the shift is
exactly what a shared head trained on the devices' new events can pick up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgerec.data.dataset import Interactions
from edgerec.errors import InputError

__all__ = ["SynthPopulation", "apply_trend_shift", "synthetic_population"]


@dataclass(frozen=True)
class SynthPopulation:
    """Settings of :func:`synthetic_population` (all recorded in the result)."""

    users: int = 80_000
    items: int = 1_000
    mean_length: float = 12.0
    span_days: float = 365.0
    cutoff_quantile: float = 0.8
    trend_share: float = 0.3
    trend_items: int = 50
    seed: int = 0


def apply_trend_shift(
    log: Interactions, cutoff: int, share: float, num_trending: int, seed: int = 0
) -> tuple[Interactions, dict[str, Any]]:
    """Replace a ``share`` of the events at or after ``cutoff`` by trending items."""
    if not 0.0 <= share <= 1.0 or num_trending < 1:
        raise InputError("trend share must be in [0, 1] and trending items >= 1")
    n_items = len(log.item_ids)
    rng = np.random.default_rng([seed, 99])
    trending = rng.choice(n_items, size=min(num_trending, n_items), replace=False)
    weights = 1.0 / np.arange(1, trending.size + 1)
    weights /= weights.sum()
    items = np.asarray(log.items).copy()
    post = np.flatnonzero(np.asarray(log.timestamps) >= cutoff)
    hit = post[rng.random(post.size) < share]
    items[hit] = trending[rng.choice(trending.size, size=hit.size, p=weights)]
    shifted = Interactions(
        users=log.users,
        items=items.astype(np.asarray(log.items).dtype),
        timestamps=log.timestamps,
        user_ids=log.user_ids,
        item_ids=log.item_ids,
        events=log.events,
        event_types=log.event_types,
        source=f"{log.source} + trend shift",
    )
    info = {
        "cutoff": int(cutoff),
        "trend_share": share,
        "trending_items": [log.item_ids[i] for i in trending.tolist()],
        "events_replaced": int(hit.size),
    }
    return shifted, info


def synthetic_population(cfg: SynthPopulation) -> tuple[Interactions, dict[str, Any]]:
    """The generator's log (in memory) with the trend shift applied after the cut-off."""
    from edgerec.data.synth import generate_synthetic

    mean_gap = cfg.span_days * 86_400.0 / max(cfg.mean_length, 1.0)
    log = generate_synthetic(
        cfg.users, cfg.items, cfg.mean_length, cfg.seed, mean_gap=mean_gap
    ).interactions
    assert log is not None
    cutoff = int(np.quantile(np.asarray(log.timestamps), cfg.cutoff_quantile, method="higher"))
    shifted, info = apply_trend_shift(log, cutoff, cfg.trend_share, cfg.trend_items, cfg.seed)
    info.update({"generator": "edgerec.data.synth.generate_synthetic", "mean_gap": mean_gap})
    return shifted, info
