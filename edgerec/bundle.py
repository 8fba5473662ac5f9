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

    manifest.sig.json      optional detached Ed25519 signatures of manifest.json
                           (``edgerec.runtime.signing``; not listed in ``files``)

``manifest.json`` lists every other file with its sha256 and byte size. Reading
is fail-closed: every field the runtime relies on is type- and range-checked
(:func:`check_manifest`), every path must stay inside the bundle root (no
``..``, no absolute path, no symlink leaving the root), a file is read only
when the manifest lists it and its size and sha256 match
(:meth:`Manifest.file`), and a bundle is usable only when its ``status`` says
``accepted`` (a missing status is not). Every refusal is a :class:`BundleError`
naming the file and the field or reason. This module is TensorFlow-free.

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
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from edgerec._hashing import sha256_file
from edgerec.errors import EdgerecError, InputError
from edgerec.features import FeatureSpec

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
MANIFEST = "manifest.json"
#: detached signatures of manifest.json (written and checked by edgerec.runtime.signing)
SIGNATURE_FILE = "manifest.sig.json"
#: a manifest larger than this is refused before parsing (real ones are tens of KB)
MAX_MANIFEST_BYTES = 4 << 20
#: largest file size a manifest may declare (1 TiB)
MAX_FILE_BYTES = 1 << 40
MAX_PATH_CHARS = 1024
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
    # True when the teacher failed the teacher gate and --allow-weak-teacher shipped it anyway
    allow_weak_teacher: bool = False
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
    """Parsed and checked ``manifest.json`` of a bundle.

    Read files through :meth:`file`: it refuses a path the manifest does not
    list or that leaves the bundle root, and hashes the file before handing
    out its path (once per file; :func:`open_bundle` verifies all up front).
    """

    data: dict[str, Any]
    root: Path
    verified: set[str] = field(default_factory=set, repr=False)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def schema_version(self) -> int:
        return int(self.data["schema_version"])

    @property
    def status(self) -> str | None:
        """``accepted``, ``rejected``, or None when the manifest has no status (not accepted)."""
        status = self.data.get("status")
        return None if status is None else str(status)

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
        """The artifact entries; one without ``gate_passed`` counts as not passed."""
        return [
            ArtifactEntry.from_json(
                {**a, "gate_passed": a.get("gate_passed", False)},
                f"{self.manifest_path} artifacts[{i}]",
            )
            for i, a in enumerate(self.data.get("artifacts", []))
        ]

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """Every non-manifest file: relative path -> {"sha256", "bytes"}."""
        return dict(self.data.get("files", {}))

    @property
    def vocab_file(self) -> str:
        """Relative path of the vocabulary (``vocab.path``, default ``vocab.json``)."""
        return str((self.data.get("vocab") or {}).get("path", "vocab.json"))

    @property
    def popularity_file(self) -> str:
        """Relative path of the popularity prior (``popularity.path``)."""
        return str((self.data.get("popularity") or {}).get("path", "popularity.npy"))

    @property
    def reference_inputs_file(self) -> str:
        """Relative path of the reference input rows (``reference.inputs``)."""
        return str((self.data.get("reference") or {}).get("inputs", "reference/inputs.npy"))

    def path(self, relative: str) -> Path:
        """``relative`` resolved inside the bundle root (refused if it leaves it).

        Does not check that the manifest lists it; use :meth:`file` to read.
        """
        return resolve_in_bundle(self.root, relative, relative)

    def file(self, relative: str) -> Path:
        """Path of a listed bundle file whose size and sha256 match the manifest.

        Raises:
            BundleError: not listed, outside the bundle, missing or modified.
        """
        if relative not in self.verified:
            verify_files(self, [relative])
        return self.path(relative)

    def artifact(self, name: str) -> ArtifactEntry:
        for a in self.artifacts:
            if a.name == name:
                return a
        names = ", ".join(a.name for a in self.artifacts)
        raise BundleError(f"{self.root}: no artifact named {name!r} (have: {names})")


def resolve_in_bundle(root: Path, relative: object, where: str) -> Path:
    """``root / relative``, refusing a path that is absolute, climbs with ``..``
    or (through a symlink) resolves outside ``root``. ``where`` names the field."""
    rel = check_relative_path(relative, root / MANIFEST, where)
    base = root.resolve()
    target = (base / rel).resolve()
    if not target.is_relative_to(base):
        raise BundleError(
            f"{root / rel}: resolves to {target}, outside the bundle directory "
            f"(symlink leaving the bundle; field {where})"
        )
    return root / rel


def check_relative_path(relative: object, manifest_path: Path, where: str) -> str:
    """Syntax of a bundle path: a non-empty relative POSIX path without ``..``."""
    if not isinstance(relative, str) or not relative:
        raise BundleError(
            f"{manifest_path}: field {where}: must be a non-empty relative path "
            f"(got {_describe(relative)})"
        )
    if len(relative) > MAX_PATH_CHARS or "\x00" in relative or "\\" in relative:
        raise BundleError(f"{manifest_path}: field {where}: bad path {relative[:80]!r}")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or (len(relative) > 1 and relative[1] == ":"):
        raise BundleError(
            f"{manifest_path}: field {where}: absolute path {relative!r} is not allowed "
            "(bundle paths are relative to the bundle directory)"
        )
    if ".." in pure.parts:
        raise BundleError(
            f"{manifest_path}: field {where}: path {relative!r} climbs out with '..' "
            "(not allowed in a bundle)"
        )
    return relative


def read_manifest_bytes(root: str | Path) -> bytes:
    """The raw bytes of ``root/manifest.json`` (size-capped, confined to ``root``).

    Signature checks and parsing use these same bytes, so the manifest cannot
    change between the two.
    """
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: bundle directory not found")
    if not path.is_file():
        raise BundleError(f"{path}: missing (not an edgerec bundle?)")
    resolve_in_bundle(root, MANIFEST, MANIFEST)
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{path}: {size} bytes, larger than the {MAX_MANIFEST_BYTES}-byte limit for a manifest"
        )
    with open(path, "rb") as fh:
        raw = fh.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: larger than the {MAX_MANIFEST_BYTES}-byte manifest limit")
    return raw


def read_manifest(root: str | Path, raw: bytes | None = None) -> Manifest:
    """Parse and check ``manifest.json`` (types, ranges, paths; no hashing).

    Args:
        raw: the manifest bytes when the caller already read them
            (:func:`read_manifest_bytes`), e.g. to check a signature first.
    """
    root = Path(root)
    path = root / MANIFEST
    if raw is None:
        raw = read_manifest_bytes(root)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"{path}: corrupt JSON ({exc})") from None
    check_manifest(data, path)
    return Manifest(data=data, root=root)


def verify_files(manifest: Manifest, only: list[str] | None = None) -> None:
    """Check confinement, existence, byte size and sha256 of bundle files.

    Args:
        only: relative paths to check (default: every file in the manifest).
    """
    files = manifest.files
    for rel in only if only is not None else list(files):
        entry = files.get(rel)
        if entry is None:
            raise BundleError(
                f"{manifest.root / str(rel)}: not listed in {MANIFEST} 'files' "
                "(the runtime reads only listed files)"
            )
        path = resolve_in_bundle(manifest.root, rel, f"files[{rel!r}]")
        if not path.is_file():
            raise BundleError(f"{path}: listed in {MANIFEST} but missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise BundleError(
                f"{path}: size {size} bytes, manifest says {entry['bytes']} (truncated or replaced)"
            )
        if sha256_file(path) != entry["sha256"]:
            raise BundleError(f"{path}: sha256 does not match {MANIFEST} (file was modified)")
        manifest.verified.add(rel)


def check_status(manifest: Manifest) -> None:
    """Refuse a bundle that does not say it is accepted (a missing status included)."""
    status = manifest.status
    if status is None:
        raise BundleError(
            f"{manifest.manifest_path}: field 'status' is missing; a bundle is usable only "
            f"when its manifest says status {STATUS_ACCEPTED!r}"
        )
    if status != STATUS_ACCEPTED:
        raise BundleError(
            f"{manifest.root}: bundle status is {status!r} (a quality gate failed); "
            "see its report.md"
        )


def open_bundle(
    root: str | Path, allow_rejected: bool = False, raw: bytes | None = None
) -> Manifest:
    """Read and check the manifest, refuse a bundle that is not accepted, and
    verify every listed file (confinement, size, sha256).

    Args:
        allow_rejected: read a rejected bundle (or one without a status) anyway,
            e.g. to inspect it.
        raw: manifest bytes already read (see :func:`read_manifest`).
    """
    manifest = read_manifest(root, raw)
    if not allow_rejected:
        check_status(manifest)
    verify_files(manifest)
    return manifest


# ------------------------------------------------------------------ checking
#: feature_spec and count ranges a manifest may declare
MAX_SEQUENCE_LENGTH = 1 << 16
MAX_CATALOG_ITEMS = (1 << 31) - 3
_HEX = frozenset("0123456789abcdef")


def _describe(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


class _Checker:
    """Type and range checks of one manifest; every failure names file and field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, what: str, value: object = None) -> BundleError:
        got = "" if value is None else f" (got {_describe(value)})"
        return BundleError(f"{self.path}: field {where}: {what}{got}")

    def obj(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "must be an object", value)
        return value

    def lst(self, value: object, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, "must be a list", value)
        return value

    def key(self, data: dict[str, Any], key: str, where: str) -> Any:
        if key not in data:
            raise BundleError(f"{self.path}: field {where}.{key} is missing")
        return data[key]

    def string(self, value: object, where: str, nonempty: bool = True) -> str:
        if not isinstance(value, str) or (nonempty and not value):
            raise self.fail(
                where, "must be a non-empty string" if nonempty else "must be a string", value
            )
        return value

    def opt_string(self, value: object, where: str) -> str | None:
        return None if value is None else self.string(value, where)

    def integer(self, value: object, where: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, "must be an integer", value)
        if not low <= value <= high:
            raise self.fail(where, f"must be in [{low}, {high}]", value)
        return value

    def boolean(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "must be true or false", value)
        return value

    def strings(self, value: object, where: str) -> list[str]:
        items = self.lst(value, where)
        for i, item in enumerate(items):
            self.string(item, f"{where}[{i}]", nonempty=False)
        return items

    def listed(self, value: object, where: str, files: dict[str, Any]) -> str:
        rel = check_relative_path(value, self.path, where)
        if rel not in files:
            raise BundleError(
                f"{self.path}: field {where}: {rel!r} is not listed in 'files' "
                "(the runtime reads only files the manifest lists and hashes)"
            )
        return rel


def check_manifest(data: object, path: Path) -> None:
    """Check every manifest field the runtime and the bundle tools rely on.

    Required: ``schema_version`` (supported), ``model.id``/``model.version``,
    ``feature_spec``, ``files``, ``artifacts``. Optional sections (``status``,
    ``vocab``, ``popularity``, ``head``, ``reference``, ``gates``, the
    ``*_artifact`` names) are checked when present; every path must be a safe
    relative path and every path the runtime may read must be listed in
    ``files``. Raises :class:`BundleError` naming the file and the field.
    """
    c = _Checker(path)
    if not isinstance(data, dict):
        raise BundleError(f"{path}: top level must be an object (got {type(data).__name__})")
    version = data.get("schema_version")
    if isinstance(version, bool) or version not in SUPPORTED_SCHEMA_VERSIONS:
        raise BundleError(
            f"{path}: schema_version {version!r} is not supported by this edgerec "
            f"(supported: {list(SUPPORTED_SCHEMA_VERSIONS)}); upgrade edgerec or re-convert"
        )
    for key in ("model", "feature_spec", "files", "artifacts"):
        if key not in data:
            raise BundleError(f"{path}: missing field {key!r}")
    if "status" in data:
        c.string(data["status"], "status")
    for key in ("edgerec_version", "created"):
        if key in data:
            c.string(data[key], key, nonempty=False)
    model = c.obj(data["model"], "model")
    c.string(c.key(model, "id", "model"), "model.id")
    c.string(c.key(model, "version", "model"), "model.version")
    _check_feature_spec(c, c.obj(data["feature_spec"], "feature_spec"))
    files = _check_files(c, c.obj(data["files"], "files"))
    names = _check_artifacts(c, c.lst(data["artifacts"], "artifacts"), files)
    for key in ("default_artifact", "fallback_artifact", "gpu_artifact"):
        name = c.opt_string(data.get(key), key)
        if name is not None and name not in names:
            raise c.fail(key, f"names no artifact of this bundle (have: {sorted(names)})", name)
    _check_sections(c, data, files)


def _check_feature_spec(c: _Checker, spec: dict[str, Any]) -> None:
    max_len = c.integer(
        c.key(spec, "max_len", "feature_spec"), "feature_spec.max_len", 2, MAX_SEQUENCE_LENGTH
    )
    num_items = c.integer(
        c.key(spec, "num_items", "feature_spec"), "feature_spec.num_items", 1, MAX_CATALOG_ITEMS
    )
    if "pad_id" in spec and c.integer(spec["pad_id"], "feature_spec.pad_id", 0, 0) != 0:
        raise c.fail("feature_spec.pad_id", "must be 0", spec["pad_id"])
    if "mask_id" in spec:
        c.integer(spec["mask_id"], "feature_spec.mask_id", num_items + 1, num_items + 1)
    try:
        FeatureSpec(max_len=max_len, num_items=num_items)
    except InputError as exc:
        raise c.fail("feature_spec", str(exc)) from None


def _check_files(c: _Checker, files: dict[str, Any]) -> dict[str, Any]:
    for rel, entry in files.items():
        where = f"files[{rel!r}]"
        check_relative_path(rel, c.path, where)
        if rel in (MANIFEST, SIGNATURE_FILE):
            raise c.fail(where, f"{rel} cannot be listed in its own manifest")
        entry = c.obj(entry, where)
        digest = c.string(c.key(entry, "sha256", where), f"{where}.sha256")
        if len(digest) != 64 or not set(digest) <= _HEX:
            raise c.fail(f"{where}.sha256", "must be 64 lowercase hex digits", digest)
        c.integer(c.key(entry, "bytes", where), f"{where}.bytes", 0, MAX_FILE_BYTES)
    return files


def _check_artifacts(c: _Checker, artifacts: list[Any], files: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    formats = {str(f) for f in Format}
    precisions = {str(p) for p in Precision}
    for i, raw in enumerate(artifacts):
        where = f"artifacts[{i}]"
        a = c.obj(raw, where)
        name = c.string(c.key(a, "name", where), f"{where}.name")
        if name in names:
            raise c.fail(f"{where}.name", "duplicate artifact name", name)
        names.add(name)
        rel = c.listed(c.key(a, "path", where), f"{where}.path", files)
        if c.string(c.key(a, "format", where), f"{where}.format") not in formats:
            raise c.fail(f"{where}.format", f"must be one of {sorted(formats)}", a["format"])
        if c.string(c.key(a, "precision", where), f"{where}.precision") not in precisions:
            raise c.fail(
                f"{where}.precision", f"must be one of {sorted(precisions)}", a["precision"]
            )
        if c.string(c.key(a, "sha256", where), f"{where}.sha256") != files[rel]["sha256"]:
            raise c.fail(f"{where}.sha256", f"differs from files[{rel!r}].sha256")
        if (
            c.integer(c.key(a, "bytes", where), f"{where}.bytes", 0, MAX_FILE_BYTES)
            != files[rel]["bytes"]
        ):
            raise c.fail(f"{where}.bytes", f"differs from files[{rel!r}].bytes")
        for key in ("roles", "notes"):
            if key in a:
                c.strings(a[key], f"{where}.{key}")
        for key in ("experimental", "gate_passed"):
            if key in a:
                c.boolean(a[key], f"{where}.{key}")
        for key in ("gpu", "metrics"):
            if key in a:
                c.obj(a[key], f"{where}.{key}")
        if isinstance(a.get("gpu"), dict) and "ready" in a["gpu"]:
            c.boolean(a["gpu"]["ready"], f"{where}.gpu.ready")
        if a.get("reference_output") is not None:
            c.listed(a["reference_output"], f"{where}.reference_output", files)
        for j, extra in enumerate(c.lst(a.get("files", []), f"{where}.files")):
            c.listed(extra, f"{where}.files[{j}]", files)
        for j, spec in enumerate(c.lst(a.get("inputs", []), f"{where}.inputs")):
            _check_input(c, c.obj(spec, f"{where}.inputs[{j}]"), f"{where}.inputs[{j}]", files)
        for j, spec in enumerate(c.lst(a.get("outputs", []), f"{where}.outputs")):
            c.obj(spec, f"{where}.outputs[{j}]")
    return names


def _check_input(c: _Checker, spec: dict[str, Any], where: str, files: dict[str, Any]) -> None:
    c.string(c.key(spec, "name", where), f"{where}.name")
    feed = c.string(spec.get("feed", "items"), f"{where}.feed")
    if feed not in FEEDS:
        raise c.fail(f"{where}.feed", f"must be one of {sorted(FEEDS)}", feed)
    for k, dim in enumerate(c.lst(c.key(spec, "shape", where), f"{where}.shape")):
        c.integer(dim, f"{where}.shape[{k}]", -1, MAX_CATALOG_ITEMS)
    for key in ("dtype", "tensor"):
        if key in spec:
            c.string(spec[key], f"{where}.{key}", nonempty=False)
    if feed == "embedding_rows":
        c.listed(c.key(spec, "table", where), f"{where}.table", files)


def _check_sections(c: _Checker, data: dict[str, Any], files: dict[str, Any]) -> None:
    """The optional sections: the files they name must be listed."""
    for section, keys in (
        ("vocab", ("path",)),
        ("popularity", ("path",)),
        ("head", ("path",)),
        ("reference", ("inputs", "student")),
    ):
        if data.get(section) is None:
            continue
        part = c.obj(data[section], section)
        for key in keys:
            if part.get(key) is not None:
                c.listed(part[key], f"{section}.{key}", files)
    if isinstance(data.get("head"), dict) and "version" in data["head"]:
        c.integer(data["head"]["version"], "head.version", 0, 1 << 62)
    if isinstance(data.get("reference"), dict) and "rows" in data["reference"]:
        c.integer(data["reference"]["rows"], "reference.rows", 0, MAX_CATALOG_ITEMS)
    if data.get("gates") is not None:
        gates = c.obj(data["gates"], "gates")
        if "passed" in gates:
            c.boolean(gates["passed"], "gates.passed")


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

    def finish(
        self,
        manifest: BundleManifest | Mapping[str, Any],
        before_publish: Callable[[Path], None] | None = None,
    ) -> Path:
        """Write ``manifest.json`` and move the bundle into place atomically.

        ``manifest`` is the converter's typed :class:`BundleManifest`, or (tests,
        synthetic bundles) a mapping of manifest fields; the writer adds
        ``schema_version``, ``artifacts`` and ``files``. ``before_publish`` runs
        on the complete temporary directory just before the rename (the
        converter signs the manifest there), so a published bundle is complete
        and, when signing was asked for, signed.
        """
        fields = manifest.to_json() if isinstance(manifest, BundleManifest) else dict(manifest)
        write_manifest(self.tmp, fields, self.artifacts, self.files)
        if before_publish is not None:
            before_publish(self.tmp)
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
