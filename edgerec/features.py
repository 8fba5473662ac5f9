"""Feature spec: how an item history becomes the model's input row.

Shared by the teacher, the converter and the runtime so that all of them build
exactly the same input. A history of item indices (oldest first) becomes a row
of ``max_len`` int32 ids: the last ``max_len - 1`` items, then ``[MASK]`` in the
last position, left-padded with ``PAD_ID``. The model's prediction for the
masked position is the next-item score vector.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgerec.errors import InputError
from edgerec.vocab import PAD_ID


@dataclass(frozen=True)
class FeatureSpec:
    """Input contract of a sequential model.

    Attributes:
        max_len: sequence length ``L`` of the model input (including ``[MASK]``).
        num_items: catalog size ``n``; valid item indices are ``1..n``.
        pad_id: padding index (always 0).
        mask_id: index of the ``[MASK]`` token (``n + 1``).
    """

    max_len: int
    num_items: int
    pad_id: int = PAD_ID
    mask_id: int = -1

    def __post_init__(self) -> None:
        if self.max_len < 2:
            raise InputError(f"max_len must be at least 2 (got {self.max_len})")
        if self.num_items < 1:
            raise InputError(f"num_items must be at least 1 (got {self.num_items})")
        if self.mask_id == -1:
            object.__setattr__(self, "mask_id", self.num_items + 1)
        if self.mask_id != self.num_items + 1 or self.pad_id != PAD_ID:
            raise InputError("feature spec: pad_id must be 0 and mask_id num_items + 1")

    @property
    def history_len(self) -> int:
        """How many history items fit in one input row (``max_len - 1``)."""
        return self.max_len - 1

    def to_json(self) -> dict:
        """JSON-able form."""
        return {**asdict(self), "padding": "left", "last_position": "mask"}

    @classmethod
    def from_json(cls, data: dict) -> FeatureSpec:
        """Inverse of :meth:`to_json` (unknown keys are ignored)."""
        try:
            return cls(
                max_len=int(data["max_len"]),
                num_items=int(data["num_items"]),
                pad_id=int(data.get("pad_id", PAD_ID)),
                mask_id=int(data.get("mask_id", -1)),
            )
        except KeyError as exc:
            raise InputError(f"feature spec: missing field {exc.args[0]!r}") from None

    def encode(self, history: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """One input row for a history of item indices (oldest first).

        Args:
            history: 1-D integer array of item indices in ``1..n``.
            out: optional int32 array of shape ``(max_len,)`` to fill in place.
        """
        row = np.full(self.max_len, self.pad_id, np.int32) if out is None else out
        if out is not None:
            row.fill(self.pad_id)
        tail = history[-self.history_len :] if len(history) else history
        if len(tail):
            row[self.max_len - 1 - len(tail) : self.max_len - 1] = tail
        row[-1] = self.mask_id
        return row

    def encode_batch(self, histories: list[np.ndarray]) -> np.ndarray:
        """Stack :meth:`encode` rows for many histories into ``(B, max_len)`` int32."""
        batch = np.full((len(histories), self.max_len), self.pad_id, np.int32)
        for row, hist in zip(batch, histories, strict=True):
            self.encode(np.asarray(hist), out=row)
        return batch
