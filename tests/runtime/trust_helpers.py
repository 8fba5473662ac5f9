"""Small real bundles and key pairs for the integrity and signing tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from edgerec.bundle import BundleWriter
from edgerec.features import FeatureSpec
from edgerec.runtime.signing import KeyPair, generate_keys
from edgerec.vocab import Vocab

NUM_ITEMS = 7


def make_minimal_bundle(path: Path, **fields: object) -> Path:
    """A bundle without model artifacts (manifest, vocabulary, prior): enough for
    ``open_bundle``, signing and the bundle CLI, built in milliseconds."""
    vocab = Vocab([f"i{k}" for k in range(NUM_ITEMS)])
    buf = io.BytesIO()
    np.save(buf, np.arange(NUM_ITEMS, dtype=np.int64))
    with BundleWriter(path) as w:
        w.add_bytes("vocab.json", json.dumps(vocab.to_json()).encode())
        w.add_bytes("popularity.npy", buf.getvalue())
        w.finish(
            {
                "status": "accepted",
                "model": {"id": "mini", "version": "1"},
                "feature_spec": FeatureSpec(max_len=4, num_items=NUM_ITEMS).to_json(),
                "vocab": {"path": "vocab.json"},
                "popularity": {"path": "popularity.npy"},
                **fields,
            }
        )
    return path


def keypair(folder: Path, name: str = "release") -> KeyPair:
    """A fresh Ed25519 key pair in ``folder``."""
    return generate_keys(folder, name)


def rewrite_manifest(bundle: Path, change) -> dict:
    """Apply ``change(data)`` to manifest.json in place; returns the new data."""
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return data
