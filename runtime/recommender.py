"""``Recommender``: open a bundle and rank items for a history, on the device.

::

    from edgerec.runtime import Recommender

    rec = Recommender.open("bundles/ml100k")            # verifies every sha256
    rec = Recommender.open("bundles/ml100k", trusted_keys=["keys/release.pub"])
    rec.recommend(["50", "181", "258"], k=10)           # raw item ids, oldest first
    rec.accelerator                                     # "cpu", "gpu", "cuda"...

The path of one call: feature extraction (:mod:`.features`) → the backend
(LiteRT or ONNX Runtime) → top-k with filters (:mod:`.ranking`); an empty
history (or one with only unknown items) is ranked by the bundle's popularity
prior instead of the model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgerec.bundle import (
    ArtifactEntry,
    BundleError,
    Manifest,
    open_bundle,
    read_manifest_bytes,
)
from edgerec.errors import InputError, MissingExtraError
from edgerec.vocab import Vocab

from .backends.base import (
    ACCELERATORS,
    BACKEND_FOR_FORMAT,
    FORMAT_FOR_BACKEND,
    REQUIRED_MODULE,
    AcceleratorUnavailable,
    Backend,
    BackendError,
    backend_available,
    create_backend,
)
from .features import FeatureExtractor
from .popularity import PopularityPrior
from .ranking import Recommendation, TopK, to_recommendations

if TYPE_CHECKING:  # imported when a store is opened: sqlite3 stays out of plain use
    from .history import HistoryStore
    from .signing import KeySource, TrustedKeys

log = logging.getLogger(__name__)

BACKENDS = ("auto", "litert", "onnx")
_warned_unverified = False  # "not verified against a key" is logged once per process


class BundleLoadError(BundleError, BackendError):
    """A verified bundle file that its loader cannot use (an artifact, table,
    vocabulary or prior that does not fit what the manifest says about it)."""


class Recommender:
    """A loaded bundle: vocabulary, feature spec, one backend, top-k and a prior.

    Create it with :meth:`open`. All methods are safe to call from several
    threads.
    """

    def __init__(
        self,
        manifest: Manifest,
        vocab: Vocab,
        backend: Backend,
        artifact: ArtifactEntry,
        prior: PopularityPrior,
        dedupe: str = "none",
        store: HistoryStore | None = None,
    ) -> None:
        self.manifest = manifest
        self.vocab = vocab
        self.spec = manifest.feature_spec
        self.backend = backend
        self.artifact = artifact
        self.prior = prior
        self.features = FeatureExtractor(vocab, self.spec, dedupe)
        self.topk = TopK(vocab.num_items)
        self.store = store
        self.head_version: str | int | None = None
        self._global_bias: np.ndarray | None = None
        self._local_bias: np.ndarray | None = None
        self._bias: np.ndarray | None = None  # global + local, added to model scores
        self._owns_store = False  # set by open() when it opened the store from a path
        self.signed_by: str | None = None  # id of the trusted key that signed the bundle

    # ------------------------------------------------------------------ open
    @classmethod
    def open(
        cls,
        bundle_path: str | Path,
        backend: str = "auto",
        precision: str = "auto",
        accelerator: str = "auto",
        threads: int = 1,
        dedupe: str = "none",
        store: HistoryStore | str | Path | None = None,
        gpu_delegate: str | None = None,
        trusted_keys: TrustedKeys | KeySource | Iterable[KeySource] | None = None,
    ) -> Recommender:
        """Verify a bundle and load one of its artifacts.

        What is verified, and when: when trust is configured (``trusted_keys``,
        else ``$EDGEREC_TRUSTED_KEYS``, else a trust config file; see
        :mod:`edgerec.runtime.signing`), first the signature of
        ``manifest.json`` by one of the trusted keys; then the manifest itself
        (known schema version, every field's type and range, every path inside
        the bundle, status ``accepted``), then *every* file the manifest lists —
        existence, byte size and sha256, the artifacts this call does not load
        included — and only then is anything read (vocabulary, popularity
        prior, the chosen artifact), each only if the manifest lists it.
        Hashing is a small part of ``open`` (its cost by bundle size is in
        benchmarks/RESULTS.md).

        Args:
            bundle_path: directory written by ``edgerec convert``.
            backend: ``"litert"``, ``"onnx"`` or ``"auto"`` (LiteRT when installed).
            precision: an artifact precision (``"fp32"``, ``"fp16"``,
                ``"int8-dynamic"``, ``"int8"``) or ``"auto"`` (the bundle's default).
            accelerator: ``"auto"`` tries the GPU and falls back to the CPU
                (logged once); ``"gpu"`` raises when no GPU path works; ``"cpu"``.
            threads: CPU threads of the interpreter.
            dedupe: history de-duplication policy (see :class:`FeatureExtractor`).
            store: a :class:`HistoryStore` (or its path) for :meth:`recommend_for`.
            gpu_delegate: path of a TFLite GPU delegate library (LiteRT only).
            trusted_keys: public keys whose signature the bundle must carry: key
                files, folders of ``*.pub`` files, PEM or raw key bytes (several
                at once during a key rotation). None: the environment or the
                trust config file decides; without either the bundle is not
                checked against a key (logged once).

        Raises:
            BundleError: unknown schema, malformed manifest, status not
                ``accepted``, a path leaving the bundle, missing, unlisted or
                tampered files, or (with trust configured) an unsigned bundle,
                a bad signature or one by an untrusted key.
            MissingExtraError: the backend's package is not installed.
            AcceleratorUnavailable: ``accelerator="gpu"`` and no GPU here.
        """
        if backend not in BACKENDS:
            raise InputError(f"backend must be one of {BACKENDS} (got {backend!r})")
        if accelerator not in ACCELERATORS:
            raise InputError(f"accelerator must be one of {ACCELERATORS} (got {accelerator!r})")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise InputError(f"threads must be a positive integer (got {threads!r})")
        manifest, signed_by = _verified_manifest(bundle_path, trusted_keys)
        vocab_file = manifest.vocab_file
        with _load_error(manifest, vocab_file):
            vocab = Vocab.load(manifest.file(vocab_file))
        spec = manifest.feature_spec
        if vocab.num_items != spec.num_items:
            raise BundleError(f"{manifest.root}: {vocab_file} and feature_spec disagree on n")
        fmt = _pick_format(manifest, backend)
        kwargs: dict[str, Any] = {
            "num_items": spec.num_items,
            "max_len": spec.max_len,
            "threads": threads,
        }
        loaded: tuple[Backend, ArtifactEntry] | None = None
        gpu_art = _gpu_artifact(manifest, fmt, precision) if accelerator != "cpu" else None
        if gpu_art is not None:
            extra = (
                {"gpu_delegate": gpu_delegate, "inputs": gpu_art.inputs, "table_dir": manifest.root}
                if fmt == "tflite"
                else {}
            )
            try:
                with _load_error(manifest, gpu_art.path):
                    be = create_backend(
                        fmt, _artifact_file(manifest, gpu_art), accelerator="gpu", **kwargs, **extra
                    )
                loaded = (be, gpu_art)
            except AcceleratorUnavailable as exc:
                if accelerator == "gpu":
                    raise
                log.info(
                    "GPU artifact %s not usable, using the CPU artifact: %s", gpu_art.name, exc
                )
        if loaded is None:
            art = _cpu_artifact(manifest, fmt, precision)
            extra = (
                {"gpu_delegate": gpu_delegate, "inputs": art.inputs, "table_dir": manifest.root}
                if fmt == "tflite"
                else {}
            )
            acc = "cpu" if gpu_art is not None else accelerator
            with _load_error(manifest, art.path):
                be = create_backend(
                    fmt, _artifact_file(manifest, art), accelerator=acc, **kwargs, **extra
                )
            loaded = (be, art)
        be, art = loaded
        opened: HistoryStore | None = None  # a store this call opens from a path
        try:  # a failure below must not leak the loaded backend (no partial state)
            prior_file = manifest.popularity_file
            with _load_error(manifest, prior_file):
                prior = PopularityPrior.load(manifest.file(prior_file), num_items=spec.num_items)
            if isinstance(store, str | Path):
                from .history import HistoryStore

                store = opened = HistoryStore(store)
            rec = cls(manifest, vocab, be, art, prior, dedupe=dedupe, store=store)
        except BaseException:
            be.close()
            if opened is not None:
                opened.close()
            raise
        rec._owns_store = opened is not None
        rec.signed_by = signed_by
        log.info("opened %s: %s %s on %s", manifest.root, art.format, art.precision, be.accelerator)
        return rec

    # ------------------------------------------------------------ properties
    @property
    def accelerator(self) -> str:
        """What actually runs the model: ``"cpu"``, ``"gpu"``, ``"cuda"``, ``"tensorrt"``."""
        return self.backend.accelerator

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def precision(self) -> str:
        return self.artifact.precision

    # ------------------------------------------------------------ head biases
    def set_global_bias(self, bias: np.ndarray | None, version: str | int | None = None) -> None:
        """Apply a federated head: an additive score bias ``[n]`` shared by all devices.

        ``None`` removes it. See ``docs/federated-protocol.md``.
        """
        self._global_bias = self._check_bias(bias, "global bias")
        self.head_version = version if bias is not None else None
        self._update_bias()

    def set_local_bias(self, bias: np.ndarray | None) -> None:
        """Apply this device's private personalisation bias ``[n]`` (never uploaded)."""
        self._local_bias = self._check_bias(bias, "local bias")
        self._update_bias()

    def _check_bias(self, bias: np.ndarray | None, what: str) -> np.ndarray | None:
        if bias is None:
            return None
        arr = np.asarray(bias, dtype=np.float32)
        if arr.shape != (self.vocab.num_items,):
            raise InputError(f"{what} must have shape ({self.vocab.num_items},), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise InputError(f"{what} has NaN or inf values")
        return arr.copy()

    def _update_bias(self) -> None:
        parts = [b for b in (self._global_bias, self._local_bias) if b is not None]
        self._bias = None if not parts else np.sum(parts, axis=0, dtype=np.float32)

    # ------------------------------------------------------------- recommend
    def recommend(
        self,
        history: Sequence[Any],
        k: int = 10,
        exclude_seen: bool = True,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
    ) -> list[Recommendation]:
        """Top-``k`` items for one history.

        Args:
            history: raw item ids (strings, oldest first) or events with
                ``.item`` and ``.timestamp``; unknown ids are counted and skipped.
            k: how many recommendations (more than the catalog returns all).
            exclude_seen: never recommend an item of the history.
            include: allow-list of raw item ids (unknown ids are ignored).
            exclude: deny-list of raw item ids (unknown ids are ignored).
        """
        row, stats = self.features.extract(history)
        if stats.empty:
            scores = self.prior.scores
        else:
            scores = self.backend.run_row(row)
            if self._bias is not None:
                scores = scores + self._bias
        deny = None if exclude is None else self._encode_ids(exclude, "exclude")
        excl = self._merge(stats.known if exclude_seen else None, deny)
        incl = None if include is None else self._encode_ids(include, "include")
        idx, sc = self.topk.query(scores, k, exclude=excl, include=incl)
        return to_recommendations(self.vocab, idx, sc)

    def recommend_batch(
        self,
        histories: Sequence[Sequence[Any]],
        k: int = 10,
        exclude_seen: bool = True,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
    ) -> list[list[Recommendation]]:
        """:meth:`recommend` for many histories, with the same results.

        The model runs row by row (the artifacts have a static batch-1 signature);
        the rest is batched: one pass to build the input rows, the bias and the
        popularity prior applied to all rows at once, ``include``/``exclude``
        encoded and validated once, and one top-k query over the ``(B, n)`` scores.
        """
        rows, stats = self.features.extract_batch(histories)
        empty = np.fromiter((s.empty for s in stats), bool, len(stats))
        scores = np.empty((len(rows), self.vocab.num_items), np.float32)
        if not empty.all():
            model_rows = np.flatnonzero(~empty)
            scores[model_rows] = self.backend.run(rows[model_rows])
            if self._bias is not None:
                scores[model_rows] += self._bias
        scores[empty] = self.prior.scores
        incl = None if include is None else self._encode_ids(include, "include")
        deny = None if exclude is None else self._encode_ids(exclude, "exclude")
        excl: list[np.ndarray] | np.ndarray | None = deny  # one list for every row
        if exclude_seen:  # one list per row
            excl = [s.known if deny is None else np.concatenate([s.known, deny]) for s in stats]
        idx, sc = self.topk.query(scores, k, exclude=excl, include=incl)
        return [to_recommendations(self.vocab, i, v) for i, v in zip(idx, sc, strict=True)]

    def record(
        self, user: str, item: str, timestamp: float | None = None, event_type: str = "view"
    ) -> None:
        """Append an event to the attached history store."""
        self._require_store().record(user, item, timestamp, event_type)

    def recommend_for(self, user: str, k: int = 10, **kwargs: Any) -> list[Recommendation]:
        """:meth:`recommend` on ``user``'s history from the attached store."""
        return self.recommend(self._require_store().history(user), k, **kwargs)

    def close(self) -> None:
        """Release the backend (and the store, if this object opened it). Idempotent."""
        self.backend.close()
        if self._owns_store and self.store is not None:
            self.store.close()

    def __enter__(self) -> Recommender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Recommender({self.manifest.model_id}@{self.manifest.model_version}, "
            f"{self.artifact.name} on {self.backend.name}/{self.accelerator})"
        )

    # --------------------------------------------------------------- helpers
    def _require_store(self) -> HistoryStore:
        if self.store is None:
            raise InputError("no history store attached: Recommender.open(..., store=PATH)")
        return self.store

    def _encode_ids(self, ids: Iterable[str], what: str) -> np.ndarray:
        if isinstance(ids, str):
            raise InputError(f"{what} must be a collection of item ids, not one string")
        out = []
        for item in ids:
            if not isinstance(item, str):
                raise InputError(f"{what}: item ids are strings (got {type(item).__name__})")
            index = self.vocab.get(item)
            if index is not None:
                out.append(index)
        return np.asarray(out, np.int64)

    @staticmethod
    def _merge(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
        """Both exclusion lists in one (ranking ignores repeats)."""
        if a is None or not len(a):
            return b
        if b is None or not len(b):
            return a
        return np.concatenate([a, b])


def _verified_manifest(bundle_path: str | Path, trusted_keys: Any) -> tuple[Manifest, str | None]:
    """The manifest, signature-checked when trust is configured, then fully verified.

    The signature is checked over the same bytes that are then parsed, so the
    manifest cannot be swapped between the two steps.
    """
    global _warned_unverified
    from .signing import TrustedKeys

    trust = TrustedKeys.configured(trusted_keys)
    raw = read_manifest_bytes(bundle_path)
    signed_by = None
    if trust is not None:
        signed_by = trust.verify(bundle_path, raw)
        log.info("%s: manifest signed by trusted key %s", bundle_path, signed_by[:16])
    elif not _warned_unverified:
        _warned_unverified = True
        log.warning(
            "%s: bundle not verified against a signing key (no trusted keys configured: "
            "pass trusted_keys= or set EDGEREC_TRUSTED_KEYS); only its hashes are checked",
            bundle_path,
        )
    return open_bundle(bundle_path, raw=raw), signed_by


@contextmanager
def _load_error(manifest: Manifest, rel: str) -> Iterator[None]:
    """Turn a loader's complaint about a verified bundle file into a BundleLoadError
    (the manifest vouched for the file, so the bundle is what is wrong)."""
    try:
        yield
    except (AcceleratorUnavailable, MissingExtraError, BundleError):
        raise
    except (BackendError, InputError) as exc:
        raise BundleLoadError(f"{manifest.root / rel}: cannot be loaded ({exc})") from exc


def _artifact_file(manifest: Manifest, art: ArtifactEntry) -> Path:
    """The artifact's path after checking it and every file it needs (tables)."""
    for spec in art.inputs:
        if spec.get("table") is not None:
            manifest.file(spec["table"])
    for rel in art.files:
        manifest.file(rel)
    return manifest.file(art.path)


def _pick_format(manifest: Manifest, backend: str) -> str:
    formats = {a.format for a in manifest.artifacts}
    if backend != "auto":
        fmt = FORMAT_FOR_BACKEND[backend]
        if fmt not in formats:
            raise BundleError(f"{manifest.root}: the bundle has no {fmt} artifact for {backend}")
        if not backend_available(fmt):
            raise MissingExtraError("runtime", REQUIRED_MODULE[fmt])
        return fmt
    for fmt in ("tflite", "onnx"):
        if fmt in formats and backend_available(fmt):
            return fmt
    needed = " or ".join(REQUIRED_MODULE[f] for f in sorted(formats) if f in REQUIRED_MODULE)
    raise MissingExtraError("runtime", needed or "ai_edge_litert")


def _usable(manifest: Manifest, fmt: str) -> list[ArtifactEntry]:
    return [a for a in manifest.artifacts if a.format == fmt and a.gate_passed]


def _cpu_artifact(manifest: Manifest, fmt: str, precision: str) -> ArtifactEntry:
    arts = [a for a in _usable(manifest, fmt) if "gpu" not in a.roles or len(a.roles) > 1]
    if precision != "auto":
        match = [a for a in arts if a.precision == precision]
        if not match:
            have = sorted({a.precision for a in arts})
            raise InputError(
                f"{manifest.root}: no {fmt} artifact with precision {precision!r} "
                f"(have: {', '.join(have)})"
            )
        return match[0]
    for role in ("default", "cpu-fallback"):
        for a in arts:
            if role in a.roles:
                return a
    # no role in this format: take the precision of the bundle's default artifact
    for role in ("default", "cpu-fallback"):
        for ref in manifest.artifacts:
            if role in ref.roles:
                for a in arts:
                    if a.precision == ref.precision:
                        return a
    if not arts:
        raise BundleError(f"{manifest.root}: no usable {fmt} artifact")
    return arts[0]


def _gpu_artifact(manifest: Manifest, fmt: str, precision: str) -> ArtifactEntry | None:
    if fmt == "onnx":  # ONNX Runtime providers take the CPU artifact itself
        return None
    for a in _usable(manifest, fmt):
        if "gpu" in a.roles and a.gpu.get("ready") and precision in ("auto", a.precision):
            return a
    return None


__all__ = ["BACKEND_FOR_FORMAT", "BundleLoadError", "Recommender"]
