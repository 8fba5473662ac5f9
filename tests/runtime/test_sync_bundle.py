"""Which bundle a head belongs to, on the device (``runtime/sync_bundle.py``) and in
its state folder (``runtime/sync_state.py``): the rules the end-to-end tests in
``tests/coordinator/test_head_identity.py`` and ``test_update_heads.py`` rely on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edgerec.runtime.sync_bundle import (
    UNKNOWN_BUNDLE,
    BundleId,
    bundle_of_answer,
    bundle_of_model,
    mismatch,
)
from edgerec.runtime.sync_outcome import SyncError
from edgerec.runtime.sync_state import DeviceState

A1 = BundleId("m", "1")


def test_answers_name_their_bundle_at_the_top_or_in_the_metadata():
    assert bundle_of_answer({"model_id": "m", "model_version": "1"}, "head") == A1
    assert bundle_of_answer({"metadata": {"model_id": "m", "model_version": "1"}}, "h") == A1
    assert bundle_of_answer({"model_id": "m"}, "head") == BundleId("m", None)  # older
    assert bundle_of_answer({}, "head") == UNKNOWN_BUNDLE
    with pytest.raises(SyncError, match="model_version 3 is not a string") as err:
        bundle_of_answer({"model_id": "m", "model_version": 3}, "head answer")
    assert err.value.status == "bad_response"


def test_only_fields_both_sides_state_are_compared():
    assert mismatch(A1, A1, "head") is None
    assert mismatch(A1, BundleId("m", None), "head") is None  # an older coordinator
    assert mismatch(UNKNOWN_BUNDLE, BundleId("x", "9"), "head") is None  # no identity
    reason = mismatch(A1, BundleId("m", "2"), "the head")
    assert reason and "m@2" in reason and "m@1" in reason and "model_version" in reason
    assert "model_id" in mismatch(A1, BundleId("other", "1"), "the head")


def test_a_recommender_is_known_by_its_manifest(tiny_bundle: Path):
    from edgerec.runtime import Recommender

    with Recommender.open(tiny_bundle) as rec:
        bundle = bundle_of_model(rec)
        assert bundle == (rec.manifest.model_id, rec.manifest.model_version)
        assert None not in bundle


def test_a_saved_head_is_used_only_for_its_bundle(tmp_path: Path):
    state = DeviceState(tmp_path, durable=False)
    bias = np.arange(5, dtype=np.float32)
    sha = hashlib.sha256(bias.tobytes()).hexdigest()
    state.save_head(4, sha, {}, bias, A1)
    version, loaded = state.load_head(A1)
    assert version == 4
    np.testing.assert_array_equal(loaded, bias)
    assert state.load_head(BundleId("m", "2")) == (None, None)
    assert state.load_head(UNKNOWN_BUNDLE) == (None, None)


def test_a_head_saved_before_heads_named_their_bundle(tmp_path: Path):
    """An older client's head.json names no bundle: a model that states its bundle
    does not use it (it may be another bundle's: fetch again); one that states none
    does, as before."""
    state = DeviceState(tmp_path, durable=False)
    bias = np.ones(5, np.float32)
    state.save_head(2, hashlib.sha256(bias.tobytes()).hexdigest(), {}, bias, A1)
    head = json.loads((tmp_path / "head.json").read_text())
    del head["bundle"]
    (tmp_path / "head.json").write_text(json.dumps(head))
    assert state.load_head(A1) == (None, None)
    assert state.load_head(UNKNOWN_BUNDLE)[0] == 2
