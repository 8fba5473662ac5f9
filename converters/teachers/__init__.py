"""Teachers edgerec did not train: the contract, one runtime per kind, soft targets.

``edgerec convert --teacher teacher.toml`` reads a :class:`TeacherContract`
(:mod:`.contract`), opens the model in its own runtime (:func:`open_teacher`), maps its
vocabulary onto the data's (:mod:`.vocab_map`), checks it (:mod:`.checks`), scores it
against most-popular under the full-ranking protocol (:mod:`.gate`), and caches its
soft targets once per (teacher, data) (:mod:`.soft_targets`).

``kind = "edgerec"`` is today's teacher directory and takes the converter's native
path (the Keras teacher runs inside the distillation graph).
"""

from __future__ import annotations

from typing import Any

from edgerec.errors import InputError
from edgerec.vocab import Vocab

from .base import ContractScorer, TeacherScorer
from .contract import TeacherContract, load_contract
from .vocab_map import VocabMapping, build_mapping

__all__ = [
    "ContractScorer",
    "TeacherContract",
    "TeacherScorer",
    "VocabMapping",
    "build_mapping",
    "load_contract",
    "open_teacher",
]


def _runtime(contract: TeacherContract) -> Any:
    if contract.kind == "onnx":
        from .onnx_teacher import OnnxTeacher

        return OnnxTeacher(contract)
    if contract.kind == "keras":
        from .keras_teacher import KerasTeacher

        return KerasTeacher(contract)
    if contract.kind == "savedmodel":
        from .keras_teacher import SavedModelTeacher

        return SavedModelTeacher(contract)
    if contract.kind == "remote":
        from .remote import RemoteTeacher

        return RemoteTeacher(contract)
    raise InputError(
        f"kind {contract.kind!r} has no contract scorer (kind = 'edgerec' is a teacher "
        "directory: pass the directory to --teacher)"
    )


def open_teacher(contract: TeacherContract, data_vocab: Vocab) -> ContractScorer:
    """The contract's teacher, loaded in its runtime and mapped onto ``data_vocab``."""
    mapping = build_mapping(contract, data_vocab)
    runtime = _runtime(contract)
    batch = contract.remote.batch_size if contract.kind == "remote" else contract.batch_size
    return ContractScorer(runtime, contract, mapping, batch)
