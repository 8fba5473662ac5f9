"""The teacher's vocabulary and its mapping onto the data's.

The teacher indexes items in its own order (RecBole puts ``[PAD]`` at 0, a BERT4Rec
adds ``[MASK]``), the data in edgerec's (``edgerec.vocab``: 0 pad, ``1..n`` items).
The mapping joins them on the raw item id.

**The student's catalog is the data's.** The bundle's vocabulary is what the device
can recommend and what the student is trained and evaluated on, so:

* items the data has but the teacher lacks stay in the catalog; they are dropped from
  the teacher's input rows and get no soft-target mass of their own (the tail share of
  the soft targets, and the ground-truth term of the loss, still train them);
* items the teacher has but the data lacks are dropped from its scores (the student
  cannot recommend what has no index on the device); the rest is renormalised by the
  loss's softmax.

Both counts are reported; a mapping that shares under ``min_overlap`` of the data's
items is refused as a wrong vocabulary file (or a wrong format / column order).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.errors import InputError
from edgerec.vocab import Vocab

from .contract import TeacherContract

log = logging.getLogger(__name__)

MIN_OVERLAP = 0.5


def read_teacher_vocabulary(path: Path, fmt: str, field: str = "item_id") -> list[str]:
    """The teacher's index -> token list (reserved tokens included) from ``path``."""
    if not path.is_file():
        raise InputError(f"{path}: teacher vocabulary file not found")
    try:
        if fmt == "csv":
            return _read_csv(path)
        if fmt == "recbole" and path.suffix == ".npy":
            return [str(t) for t in np.load(path, allow_pickle=False).tolist()]
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise InputError(f"{path}: cannot read the teacher vocabulary as {fmt} ({exc})") from None
    if fmt == "recbole" and isinstance(data, dict):
        if field not in data:
            raise InputError(
                f"{path}: RecBole field2id_token dump has no field {field!r} "
                f"(fields: {', '.join(map(str, data))}); set vocabulary.field"
            )
        data = data[field]
    if not isinstance(data, list) or not data:
        raise InputError(f"{path}: the teacher vocabulary must be a non-empty JSON list of ids")
    return [str(t) for t in data]


def _read_csv(path: Path) -> list[str]:
    rows = [r for r in csv.reader(path.read_text(encoding="utf-8").splitlines()) if r]
    if rows and not rows[0][0].strip().lstrip("-").isdigit():
        rows = rows[1:]  # header
    by_index: dict[int, str] = {}
    for line, row in enumerate(rows, 1):
        if len(row) != 2:
            raise InputError(f"{path}: row {line} must have 2 columns index,item_id (got {row})")
        try:
            index = int(row[0])
        except ValueError:
            raise InputError(f"{path}: row {line}: index {row[0]!r} is not an integer") from None
        if index in by_index:
            raise InputError(f"{path}: row {line}: index {index} appears twice")
        by_index[index] = row[1].strip()
    if not by_index:
        raise InputError(f"{path}: the teacher vocabulary is empty")
    size = max(by_index) + 1
    missing = [i for i in range(size) if i not in by_index]
    if missing or min(by_index) < 0:
        raise InputError(
            f"{path}: indices must cover 0..{size - 1} without gaps (missing {missing[:5]})"
        )
    return [by_index[i] for i in range(size)]


@dataclass(frozen=True)
class VocabMapping:
    """Index arrays between the data's vocabulary and the teacher's."""

    data_to_teacher: np.ndarray  # [n_data + 1] teacher index of data index i; -1: unknown
    column_to_data: np.ndarray  # [W] data index of teacher output column c; 0: dropped
    teacher_size: int  # tokens in the teacher vocabulary, reserved included
    pad_id: int
    mask_id: int | None
    report: dict[str, Any]

    @property
    def num_data_items(self) -> int:
        return len(self.data_to_teacher) - 1


def build_mapping(
    contract: TeacherContract, data_vocab: Vocab, min_overlap: float = MIN_OVERLAP
) -> VocabMapping:
    """Check the teacher's vocabulary and map it onto ``data_vocab`` (see module docstring)."""
    spec = contract.vocabulary
    where = str(contract.vocabulary_path)
    tokens = read_teacher_vocabulary(contract.vocabulary_path, spec.format, spec.field)
    seen: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if token in seen:
            raise InputError(
                f"{where}: duplicate id {token!r} at teacher indices {seen[token]} and {index}"
            )
        seen[token] = index
    missing = [r for r in spec.reserved if r not in seen]
    if missing:
        raise InputError(
            f"{where}: reserved token(s) {missing} of vocabulary.reserved are not in the "
            f"vocabulary (RecBole and most exports put '[PAD]' at index 0)"
        )
    pad_id = contract.input.pad_id
    if not 0 <= pad_id < len(tokens) or tokens[pad_id] not in spec.reserved:
        got = tokens[pad_id] if 0 <= pad_id < len(tokens) else "out of range"
        raise InputError(
            f"{where}: input.pad_id {pad_id} must be the index of a reserved token "
            f"({list(spec.reserved)}); it is {got!r}"
        )
    mask_id = None
    if contract.input.mask:
        mask_id = (
            contract.input.mask_id if contract.input.mask_id is not None else seen.get("[MASK]")
        )
        if (
            mask_id is None
            or not 0 <= mask_id < len(tokens)
            or tokens[mask_id] not in spec.reserved
        ):
            raise InputError(
                f"{where}: input.mask = true needs a reserved [MASK] token "
                "(add '[MASK]' to vocabulary.reserved or set input.mask_id)"
            )
    reserved = {seen[r] for r in spec.reserved}
    teacher_items = {t: i for t, i in seen.items() if i not in reserved}
    data_to_teacher = np.full(data_vocab.num_items + 1, -1, np.int64)
    data_to_teacher[0] = pad_id
    for d, item in enumerate(data_vocab.item_ids, 1):
        data_to_teacher[d] = teacher_items.get(item, -1)
    width = len(tokens) - contract.output.column_offset
    column_to_data = np.zeros(max(width, 0), np.int64)
    data_index = {item: d for d, item in enumerate(data_vocab.item_ids, 1)}
    for token, t in teacher_items.items():
        c = t - contract.output.column_offset
        if 0 <= c < width:
            column_to_data[c] = data_index.get(token, 0)
    shared = int((data_to_teacher[1:] >= 0).sum())
    report = {
        "data_items": data_vocab.num_items,
        "teacher_items": len(teacher_items),
        "shared": shared,
        "data_only": data_vocab.num_items - shared,
        "teacher_only": len(teacher_items) - shared,
        "rule": "student catalog = the data's items; data-only items get no teacher mass, "
        "teacher-only items are dropped from the soft targets",
    }
    overlap = shared / max(data_vocab.num_items, 1)
    if overlap < min_overlap:
        raise InputError(
            f"{where}: only {shared} of the data's {data_vocab.num_items} items "
            f"({overlap:.0%}) are in the teacher's vocabulary (need >= {min_overlap:.0%}); "
            "wrong vocabulary file, format or id column?"
        )
    if report["data_only"] or report["teacher_only"]:
        log.warning(
            "teacher vocabulary: %d shared items, %d only in the data (kept, no teacher "
            "mass), %d only in the teacher (dropped)",
            shared,
            report["data_only"],
            report["teacher_only"],
        )
    return VocabMapping(data_to_teacher, column_to_data, len(tokens), pad_id, mask_id, report)
