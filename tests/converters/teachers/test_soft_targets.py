"""Soft targets: computed once per (teacher, data), cached, and found again for Cloze windows."""

from __future__ import annotations

import numpy as np
import pytest

from edgerec.converters.teachers import load_contract, open_teacher
from edgerec.converters.teachers.soft_targets import (
    WindowLocator,
    cached_soft_targets,
    compute,
)
from edgerec.teacher.cloze import cloze_epoch
from tests.converters.teachers.conftest import write_descriptor, write_items
from tests.converters.teachers.graphs import linear_teacher
from tests.converters.teachers.kserve import ModelServer
from tests.converters.teachers.test_remote import REMOTE

pytest.importorskip("onnxruntime")


@pytest.fixture()
def remote_contract(tmp_path, walk_split):
    write_items(tmp_path, ["[PAD]", *walk_split.vocab.item_ids])
    return linear_teacher(tmp_path / "m.onnx", width=walk_split.vocab.num_items + 1)


def _contract(tmp_path, url):
    text = REMOTE.format(url=url, protocol="kserve-v2", timeout=5, retries=0, rate=0)
    text = text.replace("batch_size = 4", "batch_size = 512")
    return load_contract(write_descriptor(tmp_path, text))


def test_second_run_does_not_query_the_teacher(tmp_path, walk_split, remote_contract):
    cache = tmp_path / "cache"
    with ModelServer(remote_contract) as server:
        scorer = open_teacher(_contract(tmp_path, server.url), walk_split.vocab)
        first, info = cached_soft_targets(scorer, walk_split, cache, top_k=16, progress=False)
        asked = len(server.infer_times)
        assert not info["hit"] and asked > 0 and (cache / f"{info['key']}.npz").is_file()
        again, info2 = cached_soft_targets(scorer, walk_split, cache, top_k=16, progress=False)
        assert info2["hit"] and info2["key"] == info["key"]
        assert len(server.infer_times) == asked  # not asked again
        np.testing.assert_array_equal(again.top_items, first.top_items)
        _, other = cached_soft_targets(scorer, walk_split, cache, top_k=8, progress=False)
        assert not other["hit"]  # another K is another key


def test_top_k_and_log_partition_keep_the_distribution(tmp_path, walk_split):
    write_items(tmp_path, ["[PAD]", *walk_split.vocab.item_ids])
    linear_teacher(tmp_path / "m.onnx", width=walk_split.vocab.num_items + 1, seed=3)
    text = REMOTE.split("[input]")[1]
    contract = load_contract(
        write_descriptor(tmp_path, 'kind = "onnx"\npath = "m.onnx"\n[input]' + text)
    )
    scorer = open_teacher(contract, walk_split.vocab)
    targets = compute(scorer, walk_split, top_k=10, progress=False)
    n = walk_split.vocab.num_items
    assert targets.top_values.shape == (targets.prior_row + 1, 10)
    # row of user 0, position 3: the teacher's scores of the history s[:3]
    u0 = walk_split.train[0]
    row = targets.row_of[3]
    hist = np.zeros((1, 24), np.int32)
    hist[0, -3:] = u0[:3]
    full = scorer.score(hist)[0, 1:].astype(np.float64)
    top = np.argsort(-full)[:10]
    np.testing.assert_array_equal(targets.top_items[row], top + 1)
    dense = targets.dense(np.array([row]))[0].astype(np.float64)
    np.testing.assert_allclose(dense[top], full[top], rtol=1e-5)
    lse = np.log(np.exp(dense - dense.max()).sum()) + dense.max()
    np.testing.assert_allclose(lse, np.log(np.exp(full - full.max()).sum()) + full.max(), rtol=1e-4)
    assert targets.row_of[0] == targets.prior_row  # position 0 has no history
    assert targets.dense(np.array([targets.prior_row])).shape == (1, n)


def test_locator_finds_the_position_each_mask_hides(tmp_path, walk_split):
    """Each located window agrees with every visible item; on the walk log, where many
    users share stretches of items, a window can fit several users, so the hidden item
    is exact for most (not all) masks."""
    write_items(tmp_path, ["[PAD]", *walk_split.vocab.item_ids])
    linear_teacher(tmp_path / "m.onnx", width=walk_split.vocab.num_items + 1)
    text = REMOTE.split("[input]")[1]
    contract = load_contract(
        write_descriptor(tmp_path, 'kind = "onnx"\npath = "m.onnx"\n[input]' + text)
    )
    targets = compute(open_teacher(contract, walk_split.vocab), walk_split, 4, progress=False)
    locator = WindowLocator(walk_split, targets, walk_split.vocab.mask_id)
    inverse = np.full(targets.prior_row + 1, -1)
    real = targets.row_of != targets.prior_row
    inverse[targets.row_of[real]] = np.flatnonzero(real)
    rng = np.random.default_rng(1)
    mask_id = walk_split.vocab.mask_id
    for max_len in (8, 25):  # windows shorter and longer than the sequences
        x, y = cloze_epoch(walk_split.train, max_len, mask_id, 0.3, 0.3, 2.0, rng)
        rows = locator.rows(x).astype(np.int64)
        masked = y > 0
        found = rows[masked] != targets.prior_row
        assert found.mean() > 0.9
        exact = locator.flat[inverse[rows[masked][found]]] == y[masked][found]
        assert exact.mean() > 0.9
        for b in range(len(x)):  # the located stretch shows the window's visible items
            j = np.flatnonzero(x[b] == mask_id)
            if rows[b, j[0]] == targets.prior_row:
                continue
            start = inverse[rows[b, j[0]]] - j[0]
            visible = np.flatnonzero((x[b] != 0) & (x[b] != mask_id))
            np.testing.assert_array_equal(locator.flat[start + visible], x[b, visible])
