"""One interface for every teacher kind: :class:`TeacherScorer`.

``score(rows)`` takes item-index rows ``int32 [B, L]`` in the **data's** index space
(left-padded with 0, oldest item first, no ``[MASK]``) and returns ``float32
[B, n_items + 1]`` next-item scores in the data's index space (column 0, padding,
is ``-inf``; items the teacher does not know score :data:`UNKNOWN_SCORE`).

Each kind only supplies a :class:`TeacherRuntime` (load in its own runtime, run one
batch of named input arrays, return the named output); :class:`ContractScorer` does
the rest the same way for all of them: vocabulary mapping, padding side, ``[MASK]``,
extra inputs, batching (static or dynamic), reading the score slice, probabilities to
log space, and the shape / value checks that turn a wrong descriptor into an
:class:`~edgerec.errors.InputError` naming the key to fix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from edgerec.errors import InputError

from .contract import TeacherContract
from .vocab_map import VocabMapping

log = logging.getLogger(__name__)

UNKNOWN_SCORE = -1e9  # score of an item the teacher cannot rank (and of -inf outputs)


class TeacherScorer(Protocol):
    """What the converter needs from any teacher."""

    num_items: int

    def score(self, rows: np.ndarray, progress: bool = False) -> np.ndarray:
        """``int32 [B, L]`` data-index rows -> ``float32 [B, n_items + 1]`` scores."""
        ...

    def fingerprint(self) -> str:
        """A hash of the model (file bytes, or the served model's identity)."""
        ...


class TeacherRuntime(Protocol):
    """One teacher kind: a model loaded in its own runtime."""

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run one batch; returns the contract's output tensor as numpy."""
        ...

    def input_shape(self) -> tuple[int | None, ...] | None:
        """The declared shape of the item-id input (None entries: dynamic), if known."""
        ...

    def fingerprint(self) -> str: ...


def batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class ContractScorer:
    """:class:`TeacherScorer` of a :class:`TeacherRuntime` read through a contract."""

    def __init__(
        self,
        runtime: TeacherRuntime,
        contract: TeacherContract,
        mapping: VocabMapping,
        batch_size: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.contract = contract
        self.mapping = mapping
        self.num_items = mapping.num_data_items
        spec = contract.input
        self.batch_size = (
            spec.batch_size if spec.batch == "static" else (batch_size or contract.batch_size)
        )
        self._check_declared_shape()

    def fingerprint(self) -> str:
        return self.runtime.fingerprint()

    # ------------------------------------------------------------------ inputs
    def _check_declared_shape(self) -> None:
        shape = self.runtime.input_shape()
        spec = self.contract.input
        if shape is None:
            return
        if len(shape) != 2:
            raise InputError(
                f"teacher input {spec.name!r} has shape {list(shape)}; the contract needs "
                "a [batch, max_len] item-id input"
            )
        batch, length = shape
        if length is not None and length != spec.max_len:
            raise InputError(
                f"input.max_len = {spec.max_len} does not fit the teacher: its input "
                f"{spec.name!r} has a static length of {length}; set input.max_len = {length}"
            )
        if batch is not None and spec.batch == "dynamic" and batch != 1:
            raise InputError(
                f"teacher input {spec.name!r} has a static batch of {batch}; set "
                f'input.batch = "static" and input.batch_size = {batch}'
            )
        if batch is not None and spec.batch == "static" and batch != spec.batch_size:
            raise InputError(
                f"input.batch_size = {spec.batch_size} but the teacher's static batch is {batch}"
            )
        if batch == 1 and spec.batch == "dynamic":
            self.batch_size = 1

    def encode(self, rows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The teacher's input arrays for data rows, and the position to read per row."""
        spec = self.contract.input
        rows = np.asarray(rows)
        if rows.ndim != 2:
            raise InputError(f"teacher rows must be [B, L] (got shape {rows.shape})")
        b, length = len(rows), spec.max_len
        dtype = np.dtype(spec.dtype)
        out = np.full((b, length), self.mapping.pad_id, dtype)
        position = np.zeros(b, np.int64)
        filled = np.zeros(b, np.int64)
        for i, row in enumerate(rows):
            items = self.mapping.data_to_teacher[row[row > 0]]
            items = items[items >= 0][-spec.history_len :]
            k = len(items)
            if spec.padding == "left":
                end = length - 1 if spec.mask else length
                out[i, end - k : end] = items
                position[i] = length - 1
            else:
                out[i, :k] = items
                position[i] = k if spec.mask else max(k - 1, 0)
            if spec.mask:
                out[i, position[i]] = self.mapping.mask_id
            filled[i] = k + int(spec.mask)
        feeds = {spec.name: out}
        for extra in self.contract.extra_inputs:
            edtype = np.dtype(extra.dtype)
            if extra.value == "length":
                feeds[extra.name] = filled.astype(edtype)
            elif extra.value == "length_minus_one":
                feeds[extra.name] = np.maximum(filled - 1, 0).astype(edtype)
            elif extra.value == "last_index":
                feeds[extra.name] = position.astype(edtype)
            else:  # attention_mask
                feeds[extra.name] = (out != self.mapping.pad_id).astype(edtype)
        return feeds, position

    # ----------------------------------------------------------------- outputs
    def decode(self, raw: np.ndarray, position: np.ndarray) -> np.ndarray:
        """The contract's output -> ``float32 [B, n_items + 1]`` in the data's index space."""
        out_spec = self.contract.output
        raw = np.asarray(raw)
        b = len(position)
        want = 2 if out_spec.position == "none" else 3
        if raw.ndim != want or raw.shape[0] != b:
            layout = "[B, V]" if want == 2 else "[B, L, V]"
            raise InputError(
                f"teacher output has shape {list(raw.shape)}; output.position = "
                f"{out_spec.position!r} expects {layout} with B = {b}"
            )
        if out_spec.position == "last":
            raw = raw[:, -1, :]
        elif out_spec.position == "last_real":
            raw = raw[np.arange(b), position, :]
        width = raw.shape[-1]
        if width == 1:
            raise InputError(
                f"teacher output is [B, 1]: one number per row, not a score vector over the "
                f"catalog (is output.name {out_spec.name!r} a score/rating head?)"
            )
        expected = self.mapping.teacher_size - out_spec.column_offset
        if width != expected:
            raise InputError(
                f"teacher output width {width} does not match its vocabulary: "
                f"{self.mapping.teacher_size} tokens - output.column_offset "
                f"{out_spec.column_offset} = {expected} columns expected"
            )
        if not np.issubdtype(raw.dtype, np.floating):
            raise InputError(f"teacher output has dtype {raw.dtype}; scores must be floating")
        raw = raw.astype(np.float32)
        bad = np.isnan(raw) | np.isposinf(raw)
        if bad.any():
            raise InputError(
                f"teacher output has {int(bad.sum())} NaN/+inf scores in {int(bad.any(1).sum())} "
                f"of {b} rows: the model or its export is broken"
            )
        if out_spec.scores == "probabilities":
            if raw.min() < 0 or raw.max() > 1.0 + 1e-3:
                raise InputError(
                    "output.scores = 'probabilities' but the output has values outside [0, 1]; "
                    "use scores = 'logits'"
                )
            raw = np.log(np.maximum(raw, 1e-30))
        raw = np.maximum(raw, UNKNOWN_SCORE)
        scores = np.full((b, self.num_items + 1), UNKNOWN_SCORE, np.float32)
        keep = self.mapping.column_to_data > 0
        scores[:, self.mapping.column_to_data[keep]] = raw[:, keep]
        scores[:, 0] = -np.inf
        return scores

    def score(self, rows: np.ndarray, progress: bool = False) -> np.ndarray:
        rows = np.asarray(rows)
        out = np.empty((len(rows), self.num_items + 1), np.float32)
        parts = list(batches(len(rows), self.batch_size))
        if progress and len(parts) > 1:
            from tqdm import tqdm

            parts = tqdm(parts, desc=f"teacher ({self.contract.kind})", unit="batch")
        static = self.contract.input.batch == "static"
        for part in parts:
            chunk = rows[part]
            n = len(chunk)
            if static and n < self.batch_size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch_size - n, 0)])
            feeds, position = self.encode(chunk)
            out[part] = self.decode(self.runtime.run(feeds), position)[:n]
        return out

    def __call__(self, histories: list[np.ndarray]) -> np.ndarray:
        """``edgerec.metrics.evaluate``'s score function: histories -> ``[B, n]``."""
        length = self.contract.input.history_len
        rows = np.zeros((len(histories), length), np.int32)
        for i, h in enumerate(histories):
            tail = np.asarray(h)[-length:]
            if len(tail):
                rows[i, -len(tail) :] = tail
        return self.score(rows)[:, 1:]
