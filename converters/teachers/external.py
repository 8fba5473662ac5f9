"""The converter's load-teacher step for a ``teacher.toml`` (any kind but ``edgerec``).

Order matters — nothing slow happens before the cheap checks pass:

1. open the model in its runtime and map the vocabulary (:func:`open_teacher`);
2. probe a handful of real rows (shapes, width vs vocabulary, NaN/inf, ``[B, 1]``);
3. the teacher gate on the validation split (:mod:`.gate`, exit 3 when it loses);
4. the soft targets, from the cache or computed once (:mod:`.soft_targets`).

The result carries what the rest of the pipeline needs: the distil pass's teacher
(:class:`~.soft_targets.CachedTeacher`), a score function for the quality pass (the
teacher is scored under the same protocol as the student), and the manifest's
teacher section (:class:`ExternalTeacherInfo`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.vocab import Vocab

from . import open_teacher
from .base import ContractScorer
from .contract import TeacherContract
from .gate import TeacherGateResult, check_teacher
from .soft_targets import DEFAULT_TOP_K, CachedTeacher, SoftTargets, cached_soft_targets

log = logging.getLogger(__name__)

PROBE_ROWS = 8


@dataclass(frozen=True)
class ContractConfig:
    """Stands in for a teacher directory's config in the manifest (``config.to_json()``)."""

    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return self.data


@dataclass
class ExternalTeacherInfo:
    """The manifest's view of a teacher edgerec did not train."""

    path: Path
    fingerprint: str
    contract: dict[str, Any]
    config: ContractConfig
    vocab: Vocab
    num_params: int = 0  # unknown for a foreign model
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExternalTeacher:
    """A checked teacher with its soft targets, ready for the distil pass."""

    scorer: ContractScorer
    gate: TeacherGateResult
    targets: SoftTargets
    cache: dict[str, Any]
    info: ExternalTeacherInfo

    def distil_teacher(self, split: LeaveOneOutSplit, student_max_len: int) -> CachedTeacher:
        return CachedTeacher(split, self.targets, student_max_len)


def probe(scorer: ContractScorer, split: LeaveOneOutSplit) -> None:
    """Score a few real histories: every shape and value check runs on real output."""
    inputs = [h for h in split.valid_inputs() if len(h)][:PROBE_ROWS]
    scorer(inputs)


def prepare_external(
    contract: TeacherContract,
    descriptor: Path,
    split: LeaveOneOutSplit,
    *,
    exclude_mode: str,
    cache_dir: Path | None,
    top_k: int = DEFAULT_TOP_K,
    gate_users: int = 2000,
    seed: int = 0,
    progress: bool = True,
) -> ExternalTeacher:
    """Steps 1-4 of the module docstring."""
    scorer = open_teacher(contract, split.vocab)
    probe(scorer, split)
    gate = check_teacher(scorer, split, exclude_mode, gate_users, seed, progress)
    targets, cache = cached_soft_targets(scorer, split, cache_dir, top_k, progress)
    fingerprint = scorer.fingerprint()
    section = {
        "kind": contract.kind,
        "descriptor": str(descriptor),
        "contract": contract.to_json(),
        "vocabulary": scorer.mapping.report,
        "gate": gate.to_json(),
        "soft_targets": {"key": cache["key"], "top_k": cache["top_k"]},
    }
    info = ExternalTeacherInfo(
        path=descriptor,
        fingerprint=fingerprint,
        contract=section,
        config=ContractConfig({"kind": contract.kind, **contract.to_json()}),
        vocab=split.vocab,
    )
    return ExternalTeacher(scorer, gate, targets, cache, info)


def teacher_quality(
    scorer: ContractScorer,
    histories: list[np.ndarray],
    targets: np.ndarray,
    mode: str,
    window: int,
    num_items: int,
) -> tuple[dict[str, float], np.ndarray]:
    """Test-split metrics and per-user NDCG@10 of the teacher, the student's protocol."""
    from edgerec.metrics import evaluate

    result = evaluate(
        scorer,
        histories,
        targets,
        ks=(10,),
        exclude_mode=mode,
        window=window if mode == "input" else None,
        num_items=num_items,
    )
    return result.metrics, result.per_user(10)["NDCG@10"]
