"""The edgerec bundle: what ``edgerec convert`` writes and the runtime reads.

A bundle is a directory::

    manifest.json          schema version, model id/version, feature spec, files
    vocab.json             item id <-> index (edgerec.vocab)
    popularity.npy         int64 item counts: the empty-history fallback prior
    head.npz               trainable head parameters (federated updates)
    reference/inputs.npy   reference input rows for device-side parity checks
    reference/<name>.npy   reference outputs of the float student (and artifacts)
    <artifacts>            e.g. student.int8-dynamic.tflite, student.fp32.onnx
    <artifact files>       e.g. student.fp16.gpu.embeddings.npy (GPU-variant inputs)
    report.md/.json/.png   the converter's report

``manifest.json`` lists every other file with its sha256 and byte size; the
runtime refuses a bundle whose schema version it does not know, whose status is
``rejected``, or whose files are missing or do not match their hashes — with an
error naming the file and the reason. This module is TensorFlow-free.

**Input contract of an artifact.** ``ArtifactEntry.inputs`` lists the model's
inputs; each has ``name``, ``shape``, ``dtype`` and ``feed``, which says how a
runtime builds it from the encoded item row (``FeatureSpec.encode``, int32
``[L]``) — see :data:`FEEDS` (``edgerec.runtime.backends.litert.InputFeeds``
builds them). Standard artifacts take the
row itself; the GPU variant takes float embedding rows plus a float key mask
(the GPU delegate computes on floats only).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from edgerec._hashing import sha256_file
from edgerec.errors import EdgerecError, InputError
from edgerec.features import FeatureSpec

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
MANIFEST = "manifest.json"
STATUS_ACCEPTED = "accepted"
STATUS_REJECTED = "rejected"

#: how each artifact input is built from an encoded item row ``row`` (int32 ``[L]``)
FEEDS = {
    "items": "the row itself, int32 [1, L]",
    "embedding_rows": "table[row] as float32 [1, L, d]; table = the .npy file named by "
    "the input's 'table' key (float16 [n + 2, d], rows indexed like the vocabulary)",
    "key_mask": "float32 [1, L]: 1.0 where row != 0 (items and [MASK]), 0.0 for padding",
}


class BundleError(EdgerecError):
    """A bundle is missing, malformed, tampered with or incompatible."""

    exit_code = 2


@dataclass
class ArtifactEntry:
    """One model artifact of a bundle (a .tflite or .onnx file)."""

    name: str
    path: str
    format: str  # "tflite" | "onnx"
    precision: str  # "fp32" | "fp16" | "int8-dynamic" | "int8"
    sha256: str
    bytes: int
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)  # "default", "cpu-fallback", "gpu"
    gpu: dict[str, Any] = field(default_factory=dict)  # {"ready", "blocking_ops", "source"}
    metrics: dict[str, Any] = field(default_factory=dict)  # NDCG@10, parity, latency...
    experimental: bool = False
    gate_passed: bool = True
    reference_output: str | None = None  # reference/<name>.npy: outputs on reference/inputs.npy
    files: list[str] = field(default_factory=list)  # other bundle files it needs (tables)
    notes: list[str] = field(default_factory=list)

    @property
    def is_default(self) -> bool:
        return "default" in self.roles

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> ArtifactEntry:
        known = set(cls.__dataclass_fields__)
        required = ("name", "path", "format", "precision", "sha256", "bytes")
        missing = [k for k in required if k not in data]
        if missing:
            raise BundleError(f"{where}: artifact entry lacks field(s) {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})


class Precision(StrEnum):
    """Numeric mode of an exported artifact."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8_DYNAMIC = "int8-dynamic"  # int8 weights, float activations (dynamic range)
    INT8 = "int8"  # int8 weights and activations (representative-data calibration)

    def __str__(self) -> str:
        return self.value

    @property
    def bytes_per_weight(self) -> int:
        return {"fp32": 4, "fp16": 2}.get(self.value, 1)


class Format(StrEnum):
    """File format of an artifact (which runtime backend runs it)."""

    TFLITE = "tflite"
    ONNX = "onnx"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class FileEntry:
    """Hash and size of one bundle file (``files[path]``)."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class DistillationInfo:
    """How the student was distilled (``model.distillation``)."""

    alpha: float
    temperature: float
    best_epoch: int
    epochs_run: int
    valid: dict[str, Any] | None


@dataclass(frozen=True)
class ModelInfo:
    """The student model (``model``): id, content version, architecture, config."""

    id: str
    version: str
    architecture: str
    config: dict[str, Any]
    num_params: int
    distillation: DistillationInfo


@dataclass(frozen=True)
class TeacherInfo:
    """The teacher the student was distilled from (``teacher``)."""

    fingerprint: str
    path: str
    config: dict[str, Any]
    num_params: int
    metrics: dict[str, float] | None
    # kind, contract (teacher.toml as parsed) and soft-target cache key of a teacher
    # edgerec did not train (docs/teacher-contract.md); None for a teacher directory
    contract: dict[str, Any] | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """The training data (``dataset``)."""

    name: str
    num_users: int
    num_items: int
    num_interactions: int


@dataclass(frozen=True)
class VocabInfo:
    """The vocabulary file and its reserved ids (``vocab``)."""

    path: str
    sha256: str
    num_items: int
    pad_id: int
    mask_id: int
    reserved: str


@dataclass(frozen=True)
class PopularityInfo:
    """The empty-history fallback ranking (``popularity``)."""

    path: str
    dtype: str
    description: str


@dataclass(frozen=True)
class HeadInfo:
    """The trainable head for federated updates (``head``)."""

    path: str
    version: int
    base_model_version: str
    params: dict[str, list[int]]
    description: str


@dataclass(frozen=True)
class ReferenceInfo:
    """Reference rows and outputs for device-side parity checks (``reference``)."""

    inputs: str
    student: str
    rows: int
    description: str


@dataclass(frozen=True)
class GatesInfo:
    """Outcome of the converter's gates (``gates``)."""

    passed: bool
    failures: list[str]
    warnings: list[str]
    config: dict[str, Any]


@dataclass(frozen=True)
class ReportFiles:
    """The converter's report files (``report``)."""

    markdown: str = "report.md"
    json: str = "report.json"
    plot: str = "report.png"


@dataclass(frozen=True)
class Recipe:
    """The conversion settings that made the bundle (``recipe``): the converter's
    config as JSON plus the seed, kept as written so any config key round-trips."""

    settings: dict[str, Any]
    seed: int

    def to_json(self) -> dict[str, Any]:
        return {**self.settings, "seed": self.seed}


@dataclass(frozen=True)
class BundleIdentity:
    """What a bundle is: the part of the manifest also embedded in each artifact."""

    status: str
    edgerec_version: str
    model: ModelInfo
    teacher: TeacherInfo
    dataset: DatasetInfo
    vocab: VocabInfo
    feature_spec: dict[str, Any]
    recipe: Recipe
    default_artifact: str | None
    fallback_artifact: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "edgerec_version": self.edgerec_version,
            "model": asdict(self.model),
            "teacher": asdict(self.teacher),
            "dataset": asdict(self.dataset),
            "vocab": asdict(self.vocab),
            "feature_spec": self.feature_spec,
            "recipe": self.recipe.to_json(),
            "default_artifact": self.default_artifact,
            "fallback_artifact": self.fallback_artifact,
        }


@dataclass(frozen=True)
class BundleManifest:
    """A converter-made ``manifest.json`` before the writer adds ``artifacts`` and
    ``files`` (which it hashes as it copies them); see :meth:`BundleWriter.finish`."""

    identity: BundleIdentity
    created: str
    gpu_artifact: str | None
    popularity: PopularityInfo
    head: HeadInfo
    reference: ReferenceInfo
    quality: dict[str, Any]
    gates: GatesInfo
    report: ReportFiles = field(default_factory=ReportFiles)

    @property
    def status(self) -> str:
        return self.identity.status

    def to_json(self) -> dict[str, Any]:
        """The manifest fields in the order ``manifest.json`` lists them."""
        return {
            **self.identity.to_json(),
            "created": self.created,
            "gpu_artifact": self.gpu_artifact,
            "popularity": asdict(self.popularity),
            "head": asdict(self.head),
            "reference": asdict(self.reference),
            "quality": self.quality,
            "gates": asdict(self.gates),
            "report": asdict(self.report),
        }


@dataclass
class Manifest:
    """Parsed ``manifest.json`` of a bundle."""

    data: dict[str, Any]
    root: Path

    @property
    def schema_version(self) -> int:
        return int(self.data["schema_version"])

    @property
    def status(self) -> str:
        return str(self.data.get("status", STATUS_ACCEPTED))

    @property
    def model_id(self) -> str:
        return str(self.data["model"]["id"])

    @property
    def model_version(self) -> str:
        return str(self.data["model"]["version"])

    @property
    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec.from_json(self.data["feature_spec"])

    @property
    def artifacts(self) -> list[ArtifactEntry]:
        return [
            ArtifactEntry.from_json(a, f"{self.root / MANIFEST} artifacts[{i}]")
            for i, a in enumerate(self.data.get("artifacts", []))
        ]

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """Every non-manifest file: relative path -> {"sha256", "bytes"}."""
        return dict(self.data.get("files", {}))

    def path(self, relative: str) -> Path:
        return self.root / relative

    def artifact(self, name: str) -> ArtifactEntry:
        for a in self.artifacts:
            if a.name == name:
                return a
        names = ", ".join(a.name for a in self.artifacts)
        raise BundleError(f"{self.root}: no artifact named {name!r} (have: {names})")


def read_manifest(root: str | Path) -> Manifest:
    """Parse and structurally check ``manifest.json`` (no hashing)."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: bundle directory not found")
    if not path.is_file():
        raise BundleError(f"{path}: missing (not an edgerec bundle?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: corrupt JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: top level must be an object")
    version = data.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise BundleError(
            f"{path}: schema_version {version!r} is not supported by this edgerec "
            f"(supported: {list(SUPPORTED_SCHEMA_VERSIONS)}); upgrade edgerec or re-convert"
        )
    for key in ("model", "feature_spec", "files", "artifacts"):
        if key not in data:
            raise BundleError(f"{path}: missing field {key!r}")
    try:
        FeatureSpec.from_json(data["feature_spec"])
    except InputError as exc:
        raise BundleError(f"{path}: bad feature_spec ({exc})") from None
    return Manifest(data=data, root=root)


def verify_files(manifest: Manifest, only: list[str] | None = None) -> None:
    """Check existence, byte size and sha256 of bundle files.

    Args:
        only: relative paths to check (default: every file in the manifest).
    """
    files = manifest.files
    for rel in only if only is not None else list(files):
        entry = files.get(rel)
        if entry is None:
            raise BundleError(f"{manifest.root}: {rel} is not listed in {MANIFEST}")
        path = manifest.root / rel
        if not path.is_file():
            raise BundleError(f"{path}: listed in {MANIFEST} but missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise BundleError(
                f"{path}: size {size} bytes, manifest says {entry['bytes']} (truncated or replaced)"
            )
        if sha256_file(path) != entry["sha256"]:
            raise BundleError(f"{path}: sha256 does not match {MANIFEST} (file was modified)")


def open_bundle(root: str | Path, allow_rejected: bool = False) -> Manifest:
    """Read the manifest and verify every file; refuse rejected bundles."""
    manifest = read_manifest(root)
    if manifest.status != STATUS_ACCEPTED and not allow_rejected:
        raise BundleError(
            f"{manifest.root}: bundle status is {manifest.status!r} (a quality gate failed); "
            "see its report.md"
        )
    verify_files(manifest)
    return manifest


class BundleWriter:
    """Builds a bundle in a temporary directory and publishes it atomically.

    Usage::

        with BundleWriter(out_dir, force=False) as w:
            w.add_file("vocab.json", src_path)        # or w.add_bytes(...)
            w.add_artifact(entry_without_hash, src_path)
            w.finish(manifest_fields)                 # hashes, manifest, rename
    """

    def __init__(self, out_dir: str | Path, force: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.force = force
        check_output_dir(self.out_dir, force)
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.", dir=self.out_dir.parent))
        self.files: dict[str, FileEntry] = {}
        self.artifacts: list[dict[str, Any]] = []

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _register(self, rel: str) -> dict[str, Any]:
        path = self.tmp / rel
        entry = FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)
        self.files[rel] = entry
        return asdict(entry)

    def add_file(self, rel: str, src: str | Path) -> dict[str, Any]:
        """Copy ``src`` into the bundle at ``rel`` and record its hash."""
        dst = self.tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        return self._register(rel)

    def add_bytes(self, rel: str, payload: bytes) -> dict[str, Any]:
        """Write ``payload`` into the bundle at ``rel`` and record its hash."""
        dst = self.tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(payload)
        return self._register(rel)

    def add_artifact(self, entry: dict[str, Any], src: str | Path) -> ArtifactEntry:
        """Add a model artifact; ``sha256`` and ``bytes`` are filled in."""
        info = self.add_file(entry["path"], src)
        full = {**entry, **info}
        artifact = ArtifactEntry.from_json(full, "artifact")
        self.artifacts.append(artifact.to_json())
        return artifact

    def finish(self, manifest: BundleManifest | Mapping[str, Any]) -> Path:
        """Write ``manifest.json`` and move the bundle into place atomically.

        ``manifest`` is the converter's typed :class:`BundleManifest`, or (tests,
        synthetic bundles) a mapping of manifest fields; the writer adds
        ``schema_version``, ``artifacts`` and ``files``.
        """
        fields = manifest.to_json() if isinstance(manifest, BundleManifest) else dict(manifest)
        write_manifest(self.tmp, fields, self.artifacts, self.files)
        publish_dir(self.tmp, self.out_dir, self.force)
        return self.out_dir


def write_manifest(
    root: Path,
    fields: Mapping[str, Any],
    artifacts: list[dict[str, Any]],
    files: Mapping[str, FileEntry],
) -> Path:
    """Write ``root/manifest.json``: the schema version, ``fields``, the artifact
    entries and every other file's hash (sorted by path)."""
    data = {
        "schema_version": SCHEMA_VERSION,
        **fields,
        "artifacts": artifacts,
        "files": {rel: asdict(entry) for rel, entry in sorted(files.items())},
    }
    path = root / MANIFEST
    path.write_text(json.dumps(data, indent=2, sort_keys=False))
    return path


def check_output_dir(out_dir: Path, force: bool) -> None:
    """Refuse to write over a non-empty directory unless ``force``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        what = "a different bundle" if (out_dir / MANIFEST).exists() else "other files"
        raise InputError(f"{out_dir}: already holds {what}; pass --force to replace it")


def publish_dir(tmp: Path, out_dir: Path, force: bool) -> None:
    """Move ``tmp`` to ``out_dir``; an existing ``out_dir`` is swapped out only
    after the new one is complete, so a crash never leaves a half-written bundle."""
    if out_dir.exists():
        check_output_dir(out_dir, force)
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
