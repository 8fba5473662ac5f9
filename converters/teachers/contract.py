"""The teacher contract: ``teacher.toml``, the descriptor of a teacher edgerec did not train.

A teacher maps a batch of item-index rows to next-item scores over its own catalog.
The descriptor says how to feed it and how to read it (``docs/teacher-contract.md``
has one example per kind)::

    kind = "onnx"                     # edgerec | keras | savedmodel | onnx | remote
    path = "sasrec.onnx"              # relative to the descriptor's folder

    [input]
    name = "item_seq"  max_len = 50  dtype = "int64"  padding = "right"  pad_id = 0
    mask = false                      # true: the last position is [MASK] (BERT4Rec)
    batch = "dynamic"                 # or "static" with batch_size = N

    [output]
    name = "scores"  position = "none"  column_offset = 0  scores = "logits"

    [vocabulary]
    path = "item_ids.json"  format = "json"  reserved = ["[PAD]"]

    [[extra_inputs]]
    name = "item_seq_len"  value = "length"  dtype = "int64"

It loads through :mod:`edgerec.config` (typed dataclasses, ``file:line`` errors); value
rules that need several keys at once live in :meth:`TeacherContract.validate`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgerec.config import Source, build, load, parse_with, read_toml, toml_key
from edgerec.errors import InputError

KINDS = ("edgerec", "keras", "savedmodel", "onnx", "remote")
DTYPES = ("int32", "int64")
POSITIONS = ("none", "last", "last_real")
SCORES = ("logits", "probabilities", "log_probabilities")
VOCAB_FORMATS = ("json", "csv", "recbole")
EXTRA_VALUES = ("length", "length_minus_one", "last_index", "attention_mask")
PROTOCOLS = ("kserve-v2", "tf-serving")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{name} must be one of {', '.join(allowed)} (got {value!r})")


@dataclass(frozen=True)
class InputSpec:
    """``[input]``: the item-id tensor the teacher reads."""

    name: str = "input"
    max_len: int = 50
    dtype: str = "int64"
    padding: str = "left"  # where padding goes: "left" (recent items last) or "right"
    pad_id: int = 0
    mask: bool = False  # True: append the [MASK] token and score it (BERT4Rec)
    mask_id: int | None = None  # teacher index of [MASK]; default: the vocabulary's "[MASK]"
    batch: str = "dynamic"  # "dynamic" or "static"
    batch_size: int = 1  # the static batch size (only with batch = "static")

    def validate(self) -> None:
        if self.max_len < 1:
            raise InputError(f"input.max_len must be >= 1 (got {self.max_len})")
        if self.mask and self.max_len < 2:
            raise InputError("input.max_len must be >= 2 when input.mask = true")
        _choice("input.dtype", self.dtype, DTYPES)
        _choice("input.padding", self.padding, ("left", "right"))
        _choice("input.batch", self.batch, ("dynamic", "static"))
        if self.batch_size < 1:
            raise InputError(f"input.batch_size must be >= 1 (got {self.batch_size})")

    @property
    def history_len(self) -> int:
        """Real items per row: ``max_len`` less the ``[MASK]`` slot."""
        return self.max_len - 1 if self.mask else self.max_len


@dataclass(frozen=True)
class OutputSpec:
    """``[output]``: where the next-item scores are in the teacher's output."""

    name: str = ""  # output tensor name; "" = the model's first output
    position: str = "none"  # "none": [B, V]; "last": [B, L, V] at L-1; "last_real": last item
    column_offset: int = 0  # output column j scores teacher index j + column_offset
    scores: str = "logits"  # "logits", "probabilities" or "log_probabilities"

    def validate(self) -> None:
        _choice("output.position", self.position, POSITIONS)
        _choice("output.scores", self.scores, SCORES)
        if self.column_offset < 0:
            raise InputError(f"output.column_offset must be >= 0 (got {self.column_offset})")


@dataclass(frozen=True)
class VocabularySpec:
    """``[vocabulary]``: the teacher's index -> raw item id list, reserved tokens included."""

    path: str = ""
    format: str = "json"  # "json" list, two-column "csv" (index,item_id), "recbole" dump
    reserved: tuple[str, ...] = ("[PAD]",)  # tokens that are not items (e.g. [PAD], [MASK])
    field: str = "item_id"  # the field of a RecBole field2id_token dump

    def validate(self) -> None:
        _choice("vocabulary.format", self.format, VOCAB_FORMATS)


@dataclass(frozen=True)
class ExtraInput:
    """``[[extra_inputs]]``: a further tensor computed from each row (RecBole's lengths)."""

    name: str
    value: str = "length"  # length | length_minus_one | last_index | attention_mask
    dtype: str = "int64"

    def validate(self) -> None:
        _choice(f"extra_inputs.{self.name}.value", self.value, EXTRA_VALUES)
        _choice(f"extra_inputs.{self.name}.dtype", self.dtype, DTYPES)


@dataclass(frozen=True)
class RemoteSpec:
    """``[remote]``: a model server (Open Inference Protocol / KServe v2, TF Serving REST)."""

    url: str = ""  # e.g. http://host:8000
    protocol: str = "kserve-v2"  # "kserve-v2" or "tf-serving"
    model: str = ""
    version: str = ""
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 0.5  # first retry delay, doubled per retry
    max_requests_per_s: float = 20.0  # 0 = no limit
    batch_size: int = 64

    def validate(self) -> None:
        _choice("remote.protocol", self.protocol, PROTOCOLS)
        if self.timeout_s <= 0:
            raise InputError(f"remote.timeout_s must be > 0 (got {self.timeout_s})")
        if self.retries < 0 or self.batch_size < 1 or self.max_requests_per_s < 0:
            raise InputError(
                "remote.retries must be >= 0, remote.batch_size >= 1, "
                "remote.max_requests_per_s >= 0"
            )


def _parse_extras(value: Any, current: Any, source: Source, path: tuple[str, ...]) -> Any:
    if not isinstance(value, list):
        raise InputError(f"{source.at(path)}: extra_inputs must be an array of tables")
    return tuple(build(ExtraInput, v, source, None, path + (str(i),)) for i, v in enumerate(value))


@dataclass(frozen=True)
class TeacherContract:
    """A parsed ``teacher.toml``; paths are resolved against ``base_dir``."""

    kind: str
    path: str = ""  # model file/dir (edgerec: the teacher directory); unused for remote
    signature: str = "serving_default"  # SavedModel signature
    batch_size: int = 256  # rows per call of a local teacher
    input: InputSpec = field(default_factory=InputSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    vocabulary: VocabularySpec = field(default_factory=VocabularySpec)
    remote: RemoteSpec = field(default_factory=RemoteSpec)
    extra_inputs: tuple[ExtraInput, ...] = field(default=(), metadata=parse_with(_parse_extras))
    base_dir: str = field(default=".", metadata=toml_key("_base_dir"))

    def validate(self) -> None:
        _choice("kind", self.kind, KINDS)
        self.input.validate()
        self.output.validate()
        self.vocabulary.validate()
        self.remote.validate()
        for extra in self.extra_inputs:
            extra.validate()
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1 (got {self.batch_size})")
        if self.kind == "remote":
            if not self.remote.url or not self.remote.model:
                raise InputError("remote.url and remote.model are required for kind = 'remote'")
        elif not self.path:
            raise InputError(f"path is required for kind = {self.kind!r}")
        if self.kind != "edgerec" and not self.vocabulary.path:
            raise InputError(f"vocabulary.path is required for kind = {self.kind!r}")
        names = [self.input.name, *(e.name for e in self.extra_inputs)]
        if len(set(names)) != len(names):
            raise InputError(f"extra_inputs: input names must be distinct (got {names})")

    def resolve(self, relative: str) -> Path:
        """A path of the descriptor, relative to its folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def model_path(self) -> Path:
        return self.resolve(self.path)

    @property
    def vocabulary_path(self) -> Path:
        return self.resolve(self.vocabulary.path)

    def to_json(self) -> dict[str, Any]:
        """The contract as the manifest records it (paths as written, no base dir)."""
        data = asdict(self)
        data.pop("base_dir")
        if self.kind != "remote":
            data.pop("remote")
        data["extra_inputs"] = [asdict(e) for e in self.extra_inputs]
        data["vocabulary"]["reserved"] = list(self.vocabulary.reserved)
        return data

    def canonical(self) -> bytes:
        """Stable bytes of the contract (part of the soft-target cache key)."""
        return json.dumps(self.to_json(), sort_keys=True).encode()


def load_contract(path: str | Path) -> TeacherContract:
    """Read and check a ``teacher.toml`` (``file:line`` errors via :mod:`edgerec.config`)."""
    path = Path(path)
    data, source = read_toml(path)
    if "_base_dir" in data:
        raise InputError(f"{path}: unknown key '_base_dir'")
    data = {**data, "_base_dir": str(path.resolve().parent)}
    return load(TeacherContract, data, source)
