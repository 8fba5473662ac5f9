"""Synthetic generator: determinism, format, and learnable sequential structure."""

from __future__ import annotations

import numpy as np
import pytest

from edgerec.data.loaders import load_interactions
from edgerec.data.preprocess import build_sequences, leave_one_out
from edgerec.data.synth import EVENT_TYPES, generate_synthetic
from edgerec.errors import InputError


def test_file_is_deterministic_and_seed_dependent(tmp_path):
    a = generate_synthetic(300, 200, 8, seed=5, out=tmp_path / "a.csv")
    b = generate_synthetic(300, 200, 8, seed=5, out=tmp_path / "b.csv")
    c = generate_synthetic(300, 200, 8, seed=6, out=tmp_path / "c.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()
    assert a.rows == b.rows and np.array_equal(a.item_cluster, b.item_cluster)
    assert not list(tmp_path.glob(".*tmp*"))  # the temp file was renamed away
    assert c.path == tmp_path / "c.csv"


def test_file_matches_in_memory_log_and_format(tmp_path):
    path = tmp_path / "s.csv"
    on_disk = generate_synthetic(500, 300, 10, seed=1, out=path)
    in_memory = generate_synthetic(500, 300, 10, seed=1).interactions
    assert path.read_text().splitlines()[0] == "user,item,timestamp,event"
    loaded = load_interactions(path)
    assert len(loaded) == len(in_memory) == on_disk.rows
    for inter in (loaded, in_memory):
        assert set(inter.event_types) <= set(EVENT_TYPES)
    assert loaded.user_ids == in_memory.user_ids and loaded.item_ids == in_memory.item_ids
    assert np.array_equal(loaded.items, in_memory.items)
    assert np.array_equal(loaded.timestamps, in_memory.timestamps)
    names = [loaded.event_types[e] for e in loaded.events]
    assert names == [in_memory.event_types[e] for e in in_memory.events]
    ds = build_sequences(loaded)
    assert ds.num_users == 500  # min_length 3 by default: nobody is dropped
    lengths = [len(s) for s in ds.sequences]
    assert min(lengths) >= 3 and 7 < np.mean(lengths) < 13


def test_progress_callback_counts_users():
    seen: list[int] = []
    generate_synthetic(5000, 100, 4, seed=0, progress=seen.append)
    assert sum(seen) == 5000 and len(seen) == 2


def _structure(users=2000, items=500, seed=3):
    log = generate_synthetic(users, items, 30, seed=seed)
    ds = build_sequences(log.interactions)
    raw = np.array([int(i) - 1 for i in ds.vocab.item_ids])  # vocab index - 1 -> item code
    cluster_of_index = np.concatenate([[-1], log.item_cluster[raw]])
    return log, ds, cluster_of_index


def test_structure_same_cluster_transitions_well_above_chance():
    log, ds, cluster_of = _structure()
    prev = np.concatenate([s[:-1] for s in ds.sequences])
    nxt = np.concatenate([s[1:] for s in ds.sequences])
    same = np.mean(cluster_of[prev] == cluster_of[nxt])
    share = np.bincount(cluster_of[np.concatenate(ds.sequences)]) / ds.num_interactions
    chance = float((share**2).sum())
    assert same > 0.6 and same > 3 * chance


def test_structure_popularity_is_skewed():
    _, ds, _ = _structure()
    counts = np.sort(np.bincount(np.concatenate(ds.sequences))[1:])[::-1]
    top_decile = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_decile > 0.3  # uniform would be 0.1


def test_sequential_model_beats_popularity_by_a_clear_margin():
    _, ds, _ = _structure()
    split = leave_one_out(ds)
    n = ds.num_items
    bigram = np.zeros((n + 1, n + 1))
    for hist in split.train:
        np.add.at(bigram, (hist[:-1], hist[1:]), 1)
    pop = np.bincount(np.concatenate(split.train), minlength=n + 1).astype(float)
    pop[0] = -np.inf
    top_pop = np.argsort(-pop)[:10]
    hr_pop = np.isin(split.valid_target, top_pop).mean()
    last = np.array([h[-1] if len(h) else 0 for h in split.train])
    scores = bigram[last] + 1e-6 * pop  # popularity only breaks ties
    scores[:, 0] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :10]
    hr_seq = (top == split.valid_target[:, None]).any(axis=1).mean()
    assert hr_seq > hr_pop + 0.2, (hr_seq, hr_pop)


def test_scales_to_a_million_items():
    log = generate_synthetic(300, 1_000_000, 5, seed=0)
    inter = log.interactions
    assert log.item_cluster.shape == (1_000_000,)
    assert len(inter) == log.rows and max(int(i) for i in inter.item_ids) <= 1_000_000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"users": 0, "items": 10},
        {"users": 10, "items": 1},
        {"users": 10, "items": 10, "mean_length": 2},
        {"users": 10, "items": 10, "p_chain": 0.9, "p_stay": 0.5},
        {"users": 10, "items": 10, "clusters": 11},
        {"users": 10, "items": 10, "no_such_option": 1},
    ],
)
def test_bad_config(kwargs):
    with pytest.raises(InputError):
        generate_synthetic(**kwargs)
