"""The converter's load-teacher step for a ``teacher.toml`` (any kind but ``edgerec``).

Nothing slow happens before the cheap checks pass, and nothing is asked twice:

1. map the vocabulary (:mod:`.vocab_map`) and fingerprint the model (its file or
   folder bytes; a server's identity) — the soft-target cache key follows;
2. **cache hit**: the soft targets and the teacher's scores of the validation and test
   histories come from the cache; the teacher gate and the quality pass read them, and
   the model is not run at all;
3. **cache miss**: open the model in its runtime, probe a few real rows (shapes, width
   vs vocabulary, NaN/inf, ``[B, 1]``), score the validation histories, apply the
   teacher gate (:mod:`.gate`, exit 3 when it loses), then compute the soft targets
   (:mod:`.soft_targets`) and the test histories' scores, and cache them all.

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
from edgerec.errors import InputError
from edgerec.teacher.baselines import BaselineSuite
from edgerec.teacher.gate import GateResult
from edgerec.vocab import Vocab

from . import _runtime
from .base import ContractScorer
from .contract import TeacherContract
from .gate import check_teacher
from .soft_targets import (
    DEFAULT_TOP_K,
    CachedTeacher,
    ScoreTable,
    SoftTargets,
    cache_key,
    compute,
    data_fingerprint,
)
from .vocab_map import VocabMapping, build_mapping

log = logging.getLogger(__name__)

PROBE_ROWS = 8
MAX_TABLE_CELLS = 25_000_000  # users x items of the cached validation/test scores (100 MB)


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


def model_fingerprint(contract: TeacherContract) -> tuple[str, Any]:
    """The model's hash without running it; and the remote runtime when one was opened."""
    from edgerec._hashing import sha256_file

    if contract.kind == "remote":
        runtime = _runtime(contract)  # reads the server's metadata
        return runtime.fingerprint(), runtime
    path = contract.model_path
    if contract.kind == "savedmodel":
        from .keras_teacher import directory_sha256

        if not path.is_dir():
            raise InputError(f"{path}: SavedModel directory not found (key 'path')")
        return directory_sha256(path), None
    if not path.is_file():
        raise InputError(f"{path}: {contract.kind} teacher file not found (key 'path')")
    return sha256_file(path), None


class LazyScorer:
    """A :class:`~.base.TeacherScorer` that opens the model only when a table cannot answer."""

    def __init__(
        self, contract: TeacherContract, mapping: VocabMapping, fingerprint: str, runtime: Any
    ) -> None:
        self.contract = contract
        self.mapping = mapping
        self.num_items = mapping.num_data_items
        self._fingerprint = fingerprint
        self._runtime = runtime
        self._scorer: ContractScorer | None = None
        self.tables: list[ScoreTable] = []
        self.model_calls = 0  # batches the model itself scored (0 on a full cache hit)

    @property
    def scorer(self) -> ContractScorer:
        if self._scorer is None:
            runtime = self._runtime if self._runtime is not None else _runtime(self.contract)
            batch = (
                self.contract.remote.batch_size
                if self.contract.kind == "remote"
                else self.contract.batch_size
            )
            self._scorer = ContractScorer(runtime, self.contract, self.mapping, batch)
        return self._scorer

    def fingerprint(self) -> str:
        return self._fingerprint

    def score(self, rows: np.ndarray, progress: bool = False) -> np.ndarray:
        self.model_calls += 1
        return self.scorer.score(rows, progress)

    def __call__(self, histories: list[np.ndarray]) -> np.ndarray:
        for table in self.tables:
            found = table.lookup(histories)
            if found is not None:
                return found
        self.model_calls += 1
        return self.scorer(histories)


@dataclass
class ExternalTeacher:
    """A checked teacher with its soft targets, ready for the distil pass."""

    scorer: LazyScorer
    gate: GateResult
    baselines: BaselineSuite
    targets: SoftTargets
    cache: dict[str, Any]
    info: ExternalTeacherInfo

    def distil_teacher(self, split: LeaveOneOutSplit, student_max_len: int) -> CachedTeacher:
        return CachedTeacher(split, self.targets, student_max_len)


def probe(scorer: Any, split: LeaveOneOutSplit) -> None:
    """Score a few real histories: every shape and value check runs on real output."""
    inputs = [h for h in split.valid_inputs() if len(h)][:PROBE_ROWS]
    scorer(inputs)


def _score_all(scorer: LazyScorer, histories: list[np.ndarray], progress: bool) -> ScoreTable:
    scores = np.empty((len(histories), scorer.num_items), np.float32)
    step = 1024
    parts = range(0, len(histories), step)
    if progress and len(histories) > step:
        from tqdm import tqdm

        parts = tqdm(parts, desc="teacher eval scores", unit="chunk")
    for start in parts:
        scores[start : start + step] = scorer(histories[start : start + step])
    return ScoreTable(histories, scores)


def _load_tables(path: Path, split: LeaveOneOutSplit) -> list[ScoreTable]:
    if not path.is_file():
        return []
    with np.load(path, allow_pickle=False) as z:
        return [
            ScoreTable(split.valid_inputs(), z["valid"]),
            ScoreTable(split.test_inputs(), z["test"]),
        ]


def prepare_external(
    contract: TeacherContract,
    descriptor: Path,
    split: LeaveOneOutSplit,
    *,
    cache_dir: Path | None,
    top_k: int = DEFAULT_TOP_K,
    gate_users: int = 0,
    seed: int = 0,
    progress: bool = True,
    allow_weak_teacher: bool = False,
) -> ExternalTeacher:
    """Steps 1-3 of the module docstring."""
    mapping = build_mapping(contract, split.vocab)
    fingerprint, runtime = model_fingerprint(contract)
    from edgerec._hashing import sha256_file

    described = contract.canonical() + sha256_file(contract.vocabulary_path).encode()
    key = cache_key(fingerprint, described, data_fingerprint(split), top_k)
    scorer = LazyScorer(contract, mapping, fingerprint, runtime)
    targets_path = tables_path = None
    if cache_dir is not None:
        targets_path = Path(cache_dir) / f"{key}.npz"
        tables_path = Path(cache_dir) / f"{key}.eval.npz"
    hit = targets_path is not None and targets_path.is_file()
    if hit:
        log.info("teacher soft targets from cache %s (the teacher is not run)", targets_path)
        targets = SoftTargets.load(targets_path)
        scorer.tables = _load_tables(tables_path, split)
        gate, suite = check_teacher(
            scorer, split, max_users=gate_users, seed=seed, progress=progress,
            allow_weak_teacher=allow_weak_teacher,
        )  # fmt: skip
    else:
        probe(scorer, split)
        cells = len(split.train) * split.vocab.num_items
        small = cells <= MAX_TABLE_CELLS
        if small:
            scorer.tables = [_score_all(scorer, split.valid_inputs(), progress)]
        gate, suite = check_teacher(
            scorer, split, max_users=gate_users, seed=seed, progress=progress,
            allow_weak_teacher=allow_weak_teacher,
        )  # fmt: skip
        targets = compute(scorer, split, top_k, progress=progress)
        if small:
            scorer.tables.append(_score_all(scorer, split.test_inputs(), progress))
        if targets_path is not None:
            targets.save(targets_path)
            if small:
                _save_tables(tables_path, scorer.tables)
            log.info("teacher soft targets cached at %s", targets_path)
    cache = {"key": key, "top_k": top_k, "hit": hit, "path": str(targets_path or "")}
    section = {
        "kind": contract.kind,
        "descriptor": str(descriptor),
        "contract": contract.to_json(),
        "vocabulary": mapping.report,
        "gate": gate.to_json(),
        "soft_targets": {"key": key, "top_k": top_k},
    }
    info = ExternalTeacherInfo(
        path=descriptor,
        fingerprint=fingerprint,
        contract=section,
        config=ContractConfig({"kind": contract.kind, **contract.to_json()}),
        vocab=split.vocab,
    )
    return ExternalTeacher(scorer, gate, suite, targets, cache, info)


def _save_tables(path: Path, tables: list[ScoreTable]) -> None:
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=".eval.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, valid=tables[0].scores, test=tables[1].scores)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def teacher_quality(
    scorer: Any,
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
