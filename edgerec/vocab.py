"""Item vocabulary: raw item id (string) <-> model index.

Reserved indices (the same on every side, documented in the bundle):

* ``0`` — ``PAD_ID``: padding on the left of a short sequence.
* ``1 .. n`` — the ``n`` catalog items, in vocabulary order.
* ``n + 1`` — the ``[MASK]`` token (BERT4Rec Cloze); the model predicts the
  item at the masked position.

Model outputs cover items ``1 .. n`` only, so output column ``j`` is item index
``j + 1``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from edgerec.errors import InputError

PAD_ID = 0
VOCAB_FORMAT = "edgerec-vocab/1"


class Vocab:
    """An immutable mapping between raw item ids and model indices ``1..n``."""

    __slots__ = ("_ids", "_index")

    def __init__(self, item_ids: Sequence[str]) -> None:
        ids = [str(i) for i in item_ids]
        index = {item: pos + 1 for pos, item in enumerate(ids)}
        if len(index) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise InputError(f"vocabulary has a duplicate item id {dup!r}")
        self._ids = tuple(ids)
        self._index = index

    @property
    def num_items(self) -> int:
        """Number of catalog items ``n`` (reserved ids excluded)."""
        return len(self._ids)

    @property
    def mask_id(self) -> int:
        """Index of the ``[MASK]`` token, ``n + 1``."""
        return len(self._ids) + 1

    @property
    def size(self) -> int:
        """Embedding-table rows: pad + items + mask = ``n + 2``."""
        return len(self._ids) + 2

    @property
    def item_ids(self) -> tuple[str, ...]:
        """Raw item ids in index order (index ``i`` is ``item_ids[i - 1]``)."""
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item: object) -> bool:
        return item in self._index

    def index(self, item: str) -> int:
        """Model index of a raw item id; raises ``KeyError`` for unknown ids."""
        return self._index[item]

    def get(self, item: str, default: int | None = None) -> int | None:
        """Model index of ``item`` or ``default`` when it is unknown."""
        return self._index.get(item, default)

    def encode(self, items: Iterable[str]) -> np.ndarray:
        """Indices of known ``items`` (unknown ids are skipped) as int32."""
        idx = self._index
        return np.fromiter((idx[i] for i in items if i in idx), dtype=np.int32)

    def decode(self, indices: Iterable[int]) -> list[str]:
        """Raw item ids of model indices ``1..n``."""
        ids = self._ids
        out = []
        for i in indices:
            i = int(i)
            if not 1 <= i <= len(ids):
                raise InputError(f"index {i} is not an item index (valid: 1..{len(ids)})")
            out.append(ids[i - 1])
        return out

    def to_json(self) -> dict:
        """JSON-able form (see :meth:`save`)."""
        return {
            "format": VOCAB_FORMAT,
            "pad_id": PAD_ID,
            "mask_id": self.mask_id,
            "num_items": self.num_items,
            "item_ids": list(self._ids),
        }

    def sha256(self) -> str:
        """Content hash: two vocabs with the same ids in the same order agree."""
        payload = json.dumps(list(self._ids), separators=(",", ":")).encode()
        return hashlib.sha256(payload).hexdigest()

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON."""
        Path(path).write_text(json.dumps(self.to_json()), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        """Read a vocabulary written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path}: vocabulary file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not a valid vocabulary JSON file ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT:
            raise InputError(f"{path}: field 'format' must be {VOCAB_FORMAT!r}")
        ids = data.get("item_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InputError(f"{path}: field 'item_ids' must be a list of strings")
        vocab = cls(ids)
        if data.get("mask_id") != vocab.mask_id or data.get("pad_id") != PAD_ID:
            raise InputError(f"{path}: reserved ids do not match (pad 0, mask n+1)")
        return vocab

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._ids == other._ids

    def __hash__(self) -> int:
        return hash(self._ids)

    def __repr__(self) -> str:
        return f"Vocab(num_items={self.num_items})"
