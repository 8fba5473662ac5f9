"""Property: whatever happens to a real manifest, ``Recommender.open`` either
opens the bundle or raises ``BundleError`` — never a ``KeyError``,
``TypeError``, ``ValueError`` or a crash.

Mutations (hypothesis): at a random place in the converter-made tiny bundle's
manifest, delete the key or list item, or replace the value with an arbitrary
JSON value (adversarial paths, huge and negative numbers, wrong types, nested
junk); or damage the raw bytes (truncate, splice). The bundle's other files
stay intact, so every refusal comes from the manifest reader.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgerec.bundle import BundleError

pytestmark = pytest.mark.slow

INTERESTING = [
    "../vocab.json",
    "/etc/passwd",
    "vocab.json",
    "popularity.npy",
    "head.npz",
    "student.fp32.tflite",
    "student.fp16.gpu.embeddings.npy",
    "reference/inputs.npy",
    "manifest.json",
    "a" * 64,
    "",
    "accepted",
    "rejected",
    "default",
    "gpu",
    "tflite",
    "onnx",
    "fp32",
    "int8",
    "embedding_rows",
    "key_mask",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, 1, -1, 2, 12, 100, 101, 2**31, 2**63])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(INTERESTING)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


#: subtrees that only describe (reports, metrics, provenance): mutated less often
DESCRIPTIVE = {
    "metrics",
    "reasons",
    "ops",
    "blocking_ops",
    "description",
    "quality",
    "recipe",
    "teacher",
    "dataset",
    "report",
    "config",
    "distillation",
    "notes",
    "params",
}


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys and indices) to a value in ``node``."""
    out = []
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        items = []
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


def _patterns(data: dict[str, Any]) -> list[tuple]:
    """Distinct mutation targets: the entries of ``artifacts`` and ``files`` are
    folded into one pattern each (``*``), so that each field of an artifact
    entry is as likely a target as a top-level field."""
    seen = []
    for path in _paths(data):
        if DESCRIPTIVE & {k for k in path if isinstance(k, str)}:
            continue
        if path[0] in ("artifacts", "files") and len(path) > 1:
            path = (path[0], "*", *path[2:])
        if path not in seen:
            seen.append(path)
    return seen


def _targets(data: dict[str, Any], pattern: tuple, every: bool, pick: int) -> list[tuple]:
    """The concrete paths of ``pattern``: all artifacts (``every``) or one."""
    if len(pattern) < 2 or pattern[1] != "*":
        return [pattern]
    keys = list(range(len(data["artifacts"]))) if pattern[0] == "artifacts" else list(data["files"])
    chosen = keys if every and pattern[0] == "artifacts" else [keys[pick % len(keys)]]
    return [(pattern[0], k, *pattern[2:]) for k in chosen]


def _has(parent: Any, key: Any) -> bool:
    if isinstance(parent, dict):
        return key in parent
    return isinstance(parent, list) and isinstance(key, int) and key < len(parent)


def _apply(data: dict[str, Any], path: tuple, kind: str, value: Any) -> None:
    parent: Any = data
    for key in path[:-1]:
        if not _has(parent, key):
            return  # an earlier mutation removed it
        parent = parent[key]
    if _has(parent, path[-1]):
        if kind == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = value


@st.composite
def mutated_manifests(draw: st.DrawFn, original: dict[str, Any]) -> bytes:
    data = json.loads(json.dumps(original))
    kind = draw(st.sampled_from(["delete", "replace", "replace", "replace", "raw", "whole"]))
    if kind == "raw":
        raw = json.dumps(data).encode()
        cut = draw(st.integers(0, len(raw)))
        junk = draw(st.binary(max_size=8))
        return raw[:cut] + junk + raw[cut + len(junk) :]
    if kind == "whole":
        return json.dumps(draw(json_values), allow_nan=True).encode()
    if draw(st.integers(0, 4)):
        pattern = draw(st.sampled_from(_patterns(data)))
        paths = _targets(data, pattern, draw(st.booleans()), draw(st.integers(0, 99)))
    else:  # anywhere, descriptive fields included
        paths = [draw(st.sampled_from(_paths(data)))]
    value = draw(json_values)
    for path in reversed(paths):  # list items from the end: indices stay valid
        _apply(data, path, kind, value)
    return json.dumps(data, allow_nan=True).encode()


@pytest.fixture(scope="module")
def fuzz_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("fuzz") / "bundle"))


@pytest.fixture(scope="module")
def original_manifest(tiny_bundle: Path) -> dict[str, Any]:
    return json.loads((tiny_bundle / "manifest.json").read_text())


def test_mutated_manifest_opens_or_raises_bundle_error(
    fuzz_bundle: Path, original_manifest: dict[str, Any]
) -> None:
    from edgerec.runtime import Recommender

    outcomes: dict[str, int] = {"opened": 0, "refused": 0}

    @settings(
        max_examples=1000,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        raw=mutated_manifests(original_manifest),
        backend=st.sampled_from(["auto", "auto", "auto", "onnx"]),
    )
    def check(raw: bytes, backend: str) -> None:
        (fuzz_bundle / "manifest.json").write_bytes(raw)
        try:
            rec = Recommender.open(fuzz_bundle, backend=backend, accelerator="cpu")
        except BundleError as exc:
            assert str(exc), "a BundleError must say what is wrong"
            outcomes["refused"] += 1
            return
        with rec:
            assert len(rec.recommend([], k=3)) == 3
        outcomes["opened"] += 1

    check()
    # both outcomes occur: the mutations reach past the first check
    assert outcomes["opened"] > 0 and outcomes["refused"] > 0, outcomes
