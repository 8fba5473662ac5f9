"""``Recommender`` end to end on a real converter-made bundle.

Every test that needs the bundle is ``slow`` (the session builds it once, ~1 min).
Covers: both backends and every precision, ``recommend`` / ``recommend_batch`` /
``recommend_for``, filters, the popularity fallback, thread safety, the CPU
fallback of the accelerator, parity against the bundle's reference outputs, and
bad input (each with a clear exception type and message and no partial state).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from pathlib import Path

import numpy as np
import pytest

import edgerec._deps
from edgerec.bundle import BundleError, open_bundle
from edgerec.errors import InputError, MissingExtraError
from edgerec.runtime import HistoryStore, Recommendation, Recommender
from edgerec.runtime.backends import litert as litert_backend
from edgerec.runtime.backends import onnx as onnx_backend
from edgerec.runtime.backends.base import AcceleratorUnavailable, create_backend
from edgerec.runtime.errors import HistoryStoreError
from edgerec.runtime.history import Event
from edgerec.vocab import Vocab

slow = pytest.mark.slow

#: (backend, precision) of every CPU artifact the tiny bundle holds
CPU_ARTIFACTS = [
    ("litert", "fp32"),
    ("litert", "fp16"),
    ("litert", "int8-dynamic"),
    ("litert", "int8"),
    ("onnx", "fp32"),
    ("onnx", "fp16"),
    ("onnx", "int8-dynamic"),
]
BACKENDS = ("litert", "onnx")


# -- helpers ---------------------------------------------------------------------------


def _vocab(bundle: Path) -> Vocab:
    return Vocab.load(bundle / "vocab.json")


def reference_histories(bundle: Path) -> list[list[str]]:
    """Raw item ids (oldest first) of every reference input row of the bundle."""
    vocab = _vocab(bundle)
    rows = np.load(bundle / "reference" / "inputs.npy")
    out = []
    for row in rows:
        idx = [int(i) for i in row if 0 < i <= vocab.num_items]
        out.append(vocab.decode(idx))
    return out


def sample_histories(bundle: Path) -> list[list[str]]:
    """Reference histories plus short, long, empty, unknown-only and mixed ones."""
    ids = list(_vocab(bundle).item_ids)
    refs = reference_histories(bundle)
    return [
        *refs,
        ids[:1],
        ids[5:9],
        ids * 2,  # longer than the model input: truncated
        [],
        ["no-such-item", "nor-this"],
        ["no-such-item", ids[3], "nor-this", ids[4]],
    ]


def ids_of(recs: list[Recommendation]) -> list[str]:
    return [r.item_id for r in recs]


def popularity_order(bundle: Path) -> list[str]:
    """Item ids by training count descending, ties by lower index (MostPopular)."""
    counts = np.load(bundle / "popularity.npy")
    order = np.argsort(-counts, kind="stable") + 1
    return _vocab(bundle).decode(order.tolist())


def open_rec(bundle: Path, backend: str = "litert", precision: str = "auto", **kw) -> Recommender:
    kw.setdefault("accelerator", "cpu")
    return Recommender.open(bundle, backend=backend, precision=precision, **kw)


def digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# -- opening ---------------------------------------------------------------------------


@slow
@pytest.mark.parametrize(("backend", "precision"), CPU_ARTIFACTS)
def test_every_backend_and_precision_recommends(
    tiny_bundle: Path, backend: str, precision: str
) -> None:
    vocab = _vocab(tiny_bundle)
    with open_rec(tiny_bundle, backend, precision) as rec:
        assert rec.backend_name == backend
        assert rec.precision == precision
        assert rec.accelerator == "cpu"
        assert rec.artifact.format == ("tflite" if backend == "litert" else "onnx")
        for history in reference_histories(tiny_bundle):
            recs = rec.recommend(history, k=10)
            assert len(recs) == 10
            assert all(isinstance(r, Recommendation) for r in recs)
            assert all(r.item_id in vocab for r in recs)
            assert not set(ids_of(recs)) & set(history)  # exclude_seen defaults to True
            scores = [r.score for r in recs]
            assert all(math.isfinite(s) for s in scores)
            assert scores == sorted(scores, reverse=True)
            # the runtime's top-k is the top-k of the backend's own scores
            row, _ = rec.features.extract(history)
            raw = rec.backend.run_row(row)
            mask = np.ones(vocab.num_items, bool)
            mask[vocab.encode(history) - 1] = False
            best = np.sort(raw[mask])[::-1][:10]
            np.testing.assert_allclose(scores, best, rtol=0, atol=0)


@slow
def test_auto_precision_picks_the_default_artifact(tiny_bundle: Path) -> None:
    manifest = open_bundle(tiny_bundle)
    default = manifest.artifact(manifest.data["default_artifact"])
    with open_rec(tiny_bundle, "litert") as rec:
        assert rec.artifact.name == default.name
    with open_rec(tiny_bundle, "onnx") as rec:  # same precision in the other format
        assert rec.artifact.format == "onnx"
        assert rec.precision == default.precision
    with Recommender.open(tiny_bundle, accelerator="cpu") as rec:  # backend="auto": LiteRT
        assert rec.backend_name == "litert"


@slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_recommend_matches_the_reference_outputs(tiny_bundle: Path, backend: str) -> None:
    """History in, raw ids out: the whole path against the converter's stored outputs."""
    manifest = open_bundle(tiny_bundle)
    vocab = _vocab(tiny_bundle)
    with open_rec(tiny_bundle, backend) as rec:
        expected = np.load(tiny_bundle / rec.artifact.reference_output)
        for history, ref in zip(reference_histories(tiny_bundle), expected, strict=True):
            recs = rec.recommend(history, k=5, exclude_seen=False)
            top = np.argsort(-ref, kind="stable")[:5] + 1
            assert ids_of(recs) == vocab.decode(top.tolist())
            np.testing.assert_allclose([r.score for r in recs], ref[top - 1], atol=1e-5)
    assert manifest.data["reference"]["rows"] == len(expected)


# -- recommend / recommend_batch / recommend_for ----------------------------------------


@slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_recommend_batch_equals_single_calls(tiny_bundle: Path, backend: str) -> None:
    ids = list(_vocab(tiny_bundle).item_ids)
    histories = [[], *sample_histories(tiny_bundle), ["no-such-item"]]  # prior rows too
    with open_rec(tiny_bundle, backend) as rec:
        for kwargs in (
            {},
            {"exclude_seen": False},
            {"k": 3, "exclude": ["i1", "i2"]},
            {"k": 5, "include": ids[: len(ids) // 2], "exclude": ids[:3]},
            {"k": len(ids), "exclude_seen": False, "exclude": ids[-2:]},
        ):
            batch = rec.recommend_batch(histories, **kwargs)
            single = [rec.recommend(h, **kwargs) for h in histories]
            assert len(batch) == len(histories)
            for b, s in zip(batch, single, strict=True):
                assert ids_of(b) == ids_of(s)
                np.testing.assert_allclose([r.score for r in b], [r.score for r in s], atol=1e-6)
        assert rec.recommend_batch([]) == []


@slow
def test_import_does_not_load_sqlite_or_tensorflow() -> None:
    """The store's sqlite3 is imported when a store is used, not by ``import edgerec.runtime``."""
    import subprocess
    import sys

    code = (
        "import sys, edgerec.runtime as r; a = sorted(m for m in ('sqlite3', 'tensorflow') "
        "if m in sys.modules); r.HistoryStore; print(a, 'sqlite3' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "True"]


@slow
def test_recommend_for_reads_the_history_store(tiny_bundle: Path, tmp_path: Path) -> None:
    ids = list(_vocab(tiny_bundle).item_ids)
    with open_rec(tiny_bundle, store=tmp_path / "history.db") as rec:
        assert isinstance(rec.store, HistoryStore)
        # recorded out of order: the store and the features sort by time
        for ts, item in [(30.0, ids[7]), (10.0, ids[5]), (20.0, ids[6]), (25.0, "unknown")]:
            rec.record("alice", item, ts)
        rec.record("alice", ids[8], 40.0, event_type="purchase")
        expected = rec.recommend([ids[5], ids[6], ids[7], ids[8]], k=7)
        assert rec.recommend_for("alice", k=7) == expected
        assert rec.recommend_for("alice", k=7, exclude_seen=False) == rec.recommend(
            [ids[5], ids[6], ids[7], ids[8]], k=7, exclude_seen=False
        )
        # a user without history gets the popularity prior
        assert ids_of(rec.recommend_for("nobody", k=5)) == popularity_order(tiny_bundle)[:5]
        store = rec.store
    assert store.closed  # the recommender opened it from a path, so it closed it


@slow
def test_recommend_for_with_a_shared_store_object(tiny_bundle: Path, tmp_path: Path) -> None:
    ids = list(_vocab(tiny_bundle).item_ids)
    with HistoryStore(tmp_path / "h.db") as store:
        store.record_many([("bob", ids[i], float(i)) for i in range(3)])
        with open_rec(tiny_bundle, store=store) as rec:
            assert rec.recommend_for("bob", k=4) == rec.recommend(ids[:3], k=4)
        assert not store.closed  # not ours to close
        store.record("bob", ids[3])


@slow
def test_recommend_for_without_store(tiny_bundle: Path) -> None:
    with open_rec(tiny_bundle) as rec:
        with pytest.raises(InputError, match="no history store attached"):
            rec.recommend_for("alice")
        with pytest.raises(InputError, match="no history store attached"):
            rec.record("alice", "i1")


@slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_exclude_seen(tiny_bundle: Path, backend: str) -> None:
    history = reference_histories(tiny_bundle)[1]
    with open_rec(tiny_bundle, backend) as rec:
        n = rec.vocab.num_items
        everything = rec.recommend(history, k=n, exclude_seen=False)
        assert len(everything) == n
        filtered = rec.recommend(history, k=n)
        assert len(filtered) == n - len(set(history))
        assert ids_of(filtered) == [r.item_id for r in everything if r.item_id not in history]


@slow
def test_include_and_exclude_lists(tiny_bundle: Path) -> None:
    history = reference_histories(tiny_bundle)[0]
    with open_rec(tiny_bundle) as rec:
        top = ids_of(rec.recommend(history, k=10))
        # deny-list: the first three vanish, the rest move up in order
        out = ids_of(rec.recommend(history, k=7, exclude=top[:3]))
        assert out == top[3:10]
        # allow-list: only those, ranked by score; unknown ids in the lists are ignored
        allowed = [top[5], top[2], "no-such-item", top[8]]
        out = ids_of(rec.recommend(history, k=10, include=allowed))
        assert out == [top[2], top[5], top[8]]
        # include and exclude together; seen items stay excluded even if allowed
        out = ids_of(rec.recommend(history, k=10, include=[*top[:4], history[0]], exclude=top[:1]))
        assert out == top[1:4]
        assert rec.recommend(history, include=[]) == []
        assert ids_of(rec.recommend(history, exclude=["no-such-item"])) == top


@slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_k_larger_than_the_catalog_returns_the_whole_catalog(
    tiny_bundle: Path, backend: str
) -> None:
    vocab = _vocab(tiny_bundle)
    history = reference_histories(tiny_bundle)[2]
    with open_rec(tiny_bundle, backend) as rec:
        recs = rec.recommend(history, k=10 * vocab.num_items, exclude_seen=False)
        assert sorted(ids_of(recs)) == sorted(vocab.item_ids)
        recs = rec.recommend(history, k=10**9)
        assert len(recs) == vocab.num_items - len(set(history))
        assert rec.recommend(history, k=0) == []
        assert len(rec.recommend([], k=10**6)) == vocab.num_items


@slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_or_unknown_history_uses_the_popularity_prior(
    tiny_bundle: Path, backend: str
) -> None:
    prior = popularity_order(tiny_bundle)
    with open_rec(tiny_bundle, backend) as rec:
        for history in ([], ["no-such-item"], ("a", "b", "c"), iter(["zz"])):
            assert ids_of(rec.recommend(history, k=10)) == prior[:10]
        batch = rec.recommend_batch([[], ["no-such-item"]], k=4)
        assert [ids_of(b) for b in batch] == [prior[:4], prior[:4]]
        # the prior honours the filters too
        assert ids_of(rec.recommend([], k=3, exclude=prior[:2])) == prior[2:5]


@slow
def test_unknown_ids_are_skipped_not_fatal(tiny_bundle: Path) -> None:
    history = reference_histories(tiny_bundle)[3]
    noisy = ["?", *history[:3], "??", *history[3:], "???"]
    with open_rec(tiny_bundle) as rec:
        assert rec.recommend(noisy) == rec.recommend(history)
        _, stats = rec.features.extract(noisy)
        assert stats.num_unknown == 3


@slow
def test_events_are_ordered_by_timestamp(tiny_bundle: Path) -> None:
    history = reference_histories(tiny_bundle)[0]
    events = [Event("u", item, float(t)) for t, item in enumerate(history)]
    with open_rec(tiny_bundle) as rec:
        assert rec.recommend(events[::-1]) == rec.recommend(history)


@slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_recommend_equals_serial(tiny_bundle: Path, backend: str) -> None:
    histories = sample_histories(tiny_bundle)
    with open_rec(tiny_bundle, backend, threads=1) as rec:
        serial = [rec.recommend(h, k=10) for h in histories]
        results: dict[tuple[int, int], list[Recommendation]] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(6)

        def work(worker: int) -> None:
            try:
                start.wait()
                for rep in range(25):
                    for i in range(len(histories)):
                        j = (i + worker) % len(histories)
                        results[(worker, rep * 100 + j)] = rec.recommend(histories[j], k=10)
                batch = rec.recommend_batch(histories, k=10)
                assert batch == serial
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        assert len(results) == 6 * 25 * len(histories)
        for (_, key), recs in results.items():
            assert recs == serial[key % 100]


# -- accelerator -----------------------------------------------------------------------


@slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_accelerator_auto_falls_back_to_cpu(
    tiny_bundle: Path,
    backend: str,
    no_gpu: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(litert_backend, "_warned", set())  # each logs its reason once
    monkeypatch.setattr(onnx_backend, "_warned", set())
    caplog.set_level(logging.INFO, logger="edgerec.runtime")
    with Recommender.open(tiny_bundle, backend=backend, accelerator="auto") as rec:
        assert rec.accelerator == "cpu"
        assert rec.backend.accelerator == "cpu"
        assert len(rec.recommend(reference_histories(tiny_bundle)[0])) == 10
        if backend == "litert":  # the GPU variant was tried first, then the CPU artifact
            assert "gpu" not in rec.artifact.roles
    assert "gpu" in caplog.text.lower() and "cpu" in caplog.text.lower()


@slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_accelerator_gpu_without_gpu_raises(tiny_bundle: Path, backend: str, no_gpu: None) -> None:
    with pytest.raises(AcceleratorUnavailable, match="accelerator='gpu' requested"):
        Recommender.open(tiny_bundle, backend=backend, accelerator="gpu")


@slow
# ai_edge_litert's Delegate.__del__ trips over its own half-built object after a failed load
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_gpu_delegate_that_does_not_load_falls_back(
    tiny_bundle: Path, tmp_path: Path, no_gpu: None
) -> None:
    bogus = tmp_path / "libnot_a_delegate.so"
    bogus.write_bytes(b"\x7fELF nonsense")
    with Recommender.open(tiny_bundle, accelerator="auto", gpu_delegate=str(bogus)) as rec:
        assert rec.accelerator == "cpu"
    with pytest.raises(AcceleratorUnavailable, match="libnot_a_delegate"):
        Recommender.open(tiny_bundle, accelerator="gpu", gpu_delegate=str(bogus))


# -- parity ----------------------------------------------------------------------------


@slow
def test_every_artifact_matches_its_reference_output(tiny_bundle: Path) -> None:
    """Each artifact (GPU variant included, run on the CPU) against reference/<artifact>.npy."""
    manifest = open_bundle(tiny_bundle)
    spec = manifest.feature_spec
    rows = np.load(manifest.path(manifest.data["reference"]["inputs"]))
    assert rows.shape[1] == spec.max_len
    checked = []
    for art in manifest.artifacts:
        assert art.reference_output, f"{art.name} has no reference output"
        expected = np.load(manifest.path(art.reference_output))
        kwargs = {"num_items": spec.num_items, "max_len": spec.max_len, "threads": 1}
        if art.format == "tflite":
            kwargs["inputs"] = art.inputs
        backend = create_backend(art.format, manifest.path(art.path), accelerator="cpu", **kwargs)
        got = backend.run(rows)
        backend.close()
        assert got.shape == expected.shape == (len(rows), spec.num_items)
        # same host and interpreter as the converter's validation: all but bit-exact
        atol = 1e-4 if art.precision in ("fp32", "fp16") else 1e-3
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol, err_msg=art.name)
        checked.append(art.name)
    assert {"tflite-fp32", "onnx-fp32", "tflite-fp16-gpu"} <= set(checked)


# -- bad input: the bundle -------------------------------------------------------------


def test_missing_bundle_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="bundle directory not found"):
        Recommender.open(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_directory_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"manifest\.json: missing"):
        Recommender.open(tmp_path)


@slow
@pytest.mark.parametrize(
    "name", ["student.int8-dynamic.tflite", "vocab.json", "popularity.npy", "reference/inputs.npy"]
)
def test_missing_file(bundle_copy: Path, name: str) -> None:
    (bundle_copy / name).unlink()
    with pytest.raises(BundleError, match=rf"{name}: listed in manifest\.json but missing"):
        Recommender.open(bundle_copy)


@slow
@pytest.mark.parametrize("name", ["student.fp32.tflite", "student.fp32.onnx", "vocab.json"])
def test_tampered_file(bundle_copy: Path, name: str) -> None:
    path = bundle_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte, same size
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{name}: sha256 does not match"):
        Recommender.open(bundle_copy, backend="onnx" if name.endswith("onnx") else "litert")


@slow
def test_truncated_artifact(bundle_copy: Path) -> None:
    path = bundle_copy / "student.int8-dynamic.onnx"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(
        BundleError, match=r"student\.int8-dynamic\.onnx: size \d+ bytes, .*truncated"
    ):
        Recommender.open(bundle_copy, backend="onnx")


@slow
def test_unknown_schema_version(edit_manifest) -> None:
    bundle = edit_manifest(lambda m: m.update(schema_version=99))
    with pytest.raises(BundleError, match="schema_version 99 is not supported"):
        Recommender.open(bundle)


@slow
def test_rejected_bundle(edit_manifest) -> None:
    bundle = edit_manifest(lambda m: m.update(status="rejected"))
    with pytest.raises(BundleError, match="status is 'rejected'"):
        Recommender.open(bundle)


@slow
def test_manifest_not_json(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").write_text('{"schema_version": 1, "artifacts": [')
    with pytest.raises(BundleError, match="corrupt JSON"):
        Recommender.open(bundle_copy)
    (bundle_copy / "manifest.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BundleError, match="corrupt JSON"):
        Recommender.open(bundle_copy)
    (bundle_copy / "manifest.json").write_text("[1, 2, 3]")
    with pytest.raises(BundleError, match="top level must be an object"):
        Recommender.open(bundle_copy)


@slow
def test_bundle_without_artifact_for_the_backend(edit_manifest) -> None:
    def drop_onnx(m: dict) -> None:
        m["artifacts"] = [a for a in m["artifacts"] if a["format"] != "onnx"]

    bundle = edit_manifest(drop_onnx)
    with pytest.raises(BundleError, match="no onnx artifact"):
        Recommender.open(bundle, backend="onnx")


def _hide_modules(monkeypatch: pytest.MonkeyPatch, *hidden: str) -> None:
    real = edgerec._deps.has_module
    monkeypatch.setattr(edgerec._deps, "has_module", lambda name: name not in hidden and real(name))


@slow
@pytest.mark.parametrize(
    ("backend", "module"), [("litert", "ai_edge_litert"), ("onnx", "onnxruntime")]
)
def test_backend_package_missing(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, backend: str, module: str
) -> None:
    _hide_modules(monkeypatch, module)
    with pytest.raises(MissingExtraError, match=r"pip install 'edgerec\[runtime\]'") as info:
        Recommender.open(tiny_bundle, backend=backend)
    assert module in str(info.value)
    assert info.value.extra == "runtime"
    assert info.value.exit_code == 2


@slow
def test_auto_backend_uses_what_is_installed(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _hide_modules(monkeypatch, "ai_edge_litert")
    with Recommender.open(tiny_bundle, accelerator="cpu") as rec:
        assert rec.backend_name == "onnx"
    _hide_modules(monkeypatch, "ai_edge_litert", "onnxruntime")
    with pytest.raises(MissingExtraError, match=r"pip install 'edgerec\[runtime\]'"):
        Recommender.open(tiny_bundle)


@slow
def test_litert_only_bundle_without_litert(edit_manifest, monkeypatch: pytest.MonkeyPatch) -> None:
    def drop_onnx(m: dict) -> None:
        m["artifacts"] = [a for a in m["artifacts"] if a["format"] != "onnx"]

    bundle = edit_manifest(drop_onnx)
    _hide_modules(monkeypatch, "ai_edge_litert")
    with pytest.raises(
        MissingExtraError, match=r"ai_edge_litert.*pip install 'edgerec\[runtime\]'"
    ):
        Recommender.open(bundle)


@slow
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "tensorflow"}, "backend must be one of"),
        ({"accelerator": "tpu"}, "accelerator must be one of"),
        ({"threads": 0}, "threads must be a positive integer"),
        ({"threads": True}, "threads must be a positive integer"),
        ({"precision": "int4"}, "no tflite artifact with precision 'int4'"),
        ({"backend": "onnx", "precision": "int8"}, "no onnx artifact with precision 'int8'"),
        ({"dedupe": "sometimes"}, "dedupe must be one of"),
    ],
)
def test_bad_open_arguments(tiny_bundle: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Recommender.open(tiny_bundle, **{"accelerator": "cpu", **kwargs})


@slow
def test_failed_open_leaves_the_bundle_untouched(bundle_copy: Path) -> None:
    before = digest_tree(bundle_copy)
    path = bundle_copy / "student.fp16.tflite"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    tampered = digest_tree(bundle_copy)
    with pytest.raises(BundleError):
        Recommender.open(bundle_copy, precision="fp16")
    assert digest_tree(bundle_copy) == tampered != before


# -- bad input: calls ------------------------------------------------------------------


@slow
@pytest.mark.parametrize(
    "history",
    [
        ["i1", None],
        [None],
        ["i1", 7],
        [b"i1"],
        ["i1", ["i2"]],
        [3.5, "i1"],
    ],
)
def test_non_string_item_ids(tiny_bundle: Path, history: list) -> None:
    message = "item ids must be strings|raw item id strings"
    with open_rec(tiny_bundle) as rec:
        with pytest.raises(InputError, match=message):
            rec.recommend(history)
        with pytest.raises(InputError, match=message):
            rec.recommend_batch([["i1"], history])
        assert len(rec.recommend(["i1", "i2"])) == 10  # still usable: no partial state


@slow
def test_history_that_is_one_string_or_bad_filters(tiny_bundle: Path) -> None:
    with open_rec(tiny_bundle) as rec:
        with pytest.raises(InputError, match="not one string"):
            rec.recommend("i1")
        with pytest.raises(InputError, match="include: item ids are strings"):
            rec.recommend(["i1"], include=["i2", None])
        with pytest.raises(InputError, match="exclude: item ids are strings"):
            rec.recommend(["i1"], exclude=[5])
        with pytest.raises(InputError, match="not one string"):
            rec.recommend(["i1"], include="i2")


@slow
@pytest.mark.parametrize("k", [-1, -100, 2.5, "10", None, True])
def test_bad_k(tiny_bundle: Path, k: object) -> None:
    with open_rec(tiny_bundle) as rec:
        with pytest.raises(InputError, match="k must be an integer >= 0"):
            rec.recommend(["i1"], k=k)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="k must be an integer >= 0"):
            rec.recommend_batch([["i1"], []], k=k)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="k must be an integer >= 0"):
            rec.recommend([], k=k)  # type: ignore[arg-type]


@slow
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_timestamps(tiny_bundle: Path, tmp_path: Path, bad: float) -> None:
    events = [Event("u", "i1", 1.0), Event("u", "i2", bad), Event("u", "i3", 3.0)]
    with open_rec(tiny_bundle, store=tmp_path / "h.db") as rec:
        with pytest.raises(InputError, match="timestamps must be finite"):
            rec.recommend(events)
        with pytest.raises(InputError, match="finite"):
            rec.record("u", "i2", bad)
        assert rec.store is not None and rec.store.count("u") == 0  # nothing stored
        rec.record("u", "i2", 2.0)
        assert rec.recommend_for("u") == rec.recommend(["i2"])


@slow
def test_events_without_timestamps(tiny_bundle: Path) -> None:
    with open_rec(tiny_bundle) as rec, pytest.raises(InputError, match="numeric .timestamp"):
        rec.recommend([Event("u", "i1", 1.0), object()])


@slow
@pytest.mark.parametrize(
    "content",
    [b"this is not a database, just text\n" * 20, b"SQLite format 3\x00" + b"\x00" * 50, b"\x00"],
)
def test_history_store_that_is_not_a_database(
    tiny_bundle: Path, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "history.db"
    path.write_bytes(content)
    with pytest.raises(HistoryStoreError, match=r"history\.db"):
        Recommender.open(tiny_bundle, accelerator="cpu", store=path)
    assert path.read_bytes() == content  # left untouched
    assert not Path(f"{path}-wal").exists()


@slow
def test_history_store_of_another_application(tiny_bundle: Path, tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    before = path.read_bytes()
    with pytest.raises(HistoryStoreError, match="not an edgerec history store"):
        Recommender.open(tiny_bundle, accelerator="cpu", store=path)
    assert path.read_bytes() == before


@slow
def test_closed_recommender_fails_loudly(tiny_bundle: Path) -> None:
    for backend in BACKENDS:
        rec = open_rec(tiny_bundle, backend)
        rec.close()
        rec.close()  # idempotent
        with pytest.raises(Exception, match="closed"):
            rec.recommend(["i1"])


@slow
def test_repr_and_manifest_details(tiny_bundle: Path) -> None:
    with open_rec(tiny_bundle) as rec:
        text = repr(rec)
        assert rec.manifest.model_id in text and "litert/cpu" in text
        assert (
            rec.spec.max_len
            == json.loads((tiny_bundle / "manifest.json").read_text())["feature_spec"]["max_len"]
        )


@slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_failed_open_releases_the_loaded_backend(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """A failure after the model is loaded (bad store, bad dedupe) leaves nothing open."""
    import edgerec.runtime.recommender as recommender_module

    created = []
    real = recommender_module.create_backend

    def spy(*args, **kwargs):
        be = real(*args, **kwargs)
        created.append(be)
        return be

    monkeypatch.setattr(recommender_module, "create_backend", spy)
    not_a_db = tmp_path / "history.db"
    not_a_db.write_text("plain text, not SQLite")
    with pytest.raises(HistoryStoreError):
        Recommender.open(tiny_bundle, backend=backend, accelerator="cpu", store=not_a_db)
    with pytest.raises(InputError, match="dedupe"):
        Recommender.open(tiny_bundle, backend=backend, accelerator="cpu", dedupe="bogus")
    # a store that open() itself opened from a path is closed again
    closed = []
    real_close = HistoryStore.close
    monkeypatch.setattr(HistoryStore, "close", lambda self: closed.append(self) or real_close(self))
    with pytest.raises(InputError, match="dedupe"):
        Recommender.open(
            tiny_bundle, backend=backend, accelerator="cpu", dedupe="bogus", store=tmp_path / "h.db"
        )
    assert len(closed) == 1 and closed[0].closed
    assert len(created) == 3
    row = np.load(tiny_bundle / "reference" / "inputs.npy")[0]
    for be in created:
        with pytest.raises(Exception, match="closed"):
            be.run_row(row)


@slow
def test_global_and_local_bias_shift_scores(tiny_bundle: Path) -> None:
    with open_rec(tiny_bundle) as rec:
        history = sample_histories(tiny_bundle)[0]
        base = rec.recommend(history, k=rec.vocab.num_items, exclude_seen=False)
        target = base[-1].item_id  # the lowest-ranked item
        bias = np.zeros(rec.vocab.num_items, np.float32)
        bias[rec.vocab.index(target) - 1] = 1e4
        rec.set_global_bias(bias, version=3)
        assert rec.head_version == 3
        top = rec.recommend(history, k=1, exclude_seen=False)
        assert top[0].item_id == target
        assert top[0].score == pytest.approx(base[-1].score + 1e4, rel=1e-4)
        batch = rec.recommend_batch([history], k=1, exclude_seen=False)
        assert batch[0][0].item_id == target
        rec.set_local_bias(-bias)  # local personalisation cancels it out
        assert ids_of(rec.recommend(history, k=3, exclude_seen=False)) == ids_of(base[:3])
        rec.set_global_bias(None)
        rec.set_local_bias(None)
        assert rec.recommend(history, k=3, exclude_seen=False) == base[:3]
        with pytest.raises(InputError, match="shape"):
            rec.set_global_bias(np.zeros(3, np.float32))
        bad = np.zeros(rec.vocab.num_items, np.float32)
        bad[0] = np.nan
        with pytest.raises(InputError, match="NaN"):
            rec.set_local_bias(bad)
