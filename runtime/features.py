"""Raw interaction events -> the model's input row, on the hot ``recommend()`` path.

:class:`FeatureExtractor` turns what the history store returns (or a plain list
of raw item ids) into exactly the row :meth:`edgerec.features.FeatureSpec.encode`
builds: order by time, de-duplicate, map raw ids to indices, skip ids the
vocabulary does not know, keep the last ``spec.history_len`` items, left-pad,
``[MASK]`` last. It also reports which items the user has seen (for
exclude-seen ranking) and whether nothing usable was left (fall back to the
popularity prior).

Pipeline order, which the tests pin down:

1. sort events by timestamp (stable: equal timestamps keep their given order;
   a plain list of item ids is taken as already oldest-first);
2. map raw ids to indices; unknown ids are counted and dropped — so an unknown
   id between two equal items does not keep them apart in step 3;
3. de-duplicate (``"none"``, ``"consecutive"``: drop an item equal to the one
   just before it, ``"all-keep-last"``: keep only each item's last occurrence);
4. keep the last ``history_len`` items (``max_len - 1``) and encode.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from enum import StrEnum
from operator import attrgetter
from typing import Any, Protocol

import numpy as np

from edgerec.errors import InputError
from edgerec.features import FeatureSpec
from edgerec.vocab import Vocab

__all__ = ["Dedupe", "ExtractStats", "FeatureExtractor", "TimedItem"]

logger = logging.getLogger(__name__)

_OK = object()
_timestamp = attrgetter("timestamp")
_item = attrgetter("item")


class TimedItem(Protocol):
    """Anything with a raw ``item`` id and a ``timestamp`` (e.g. ``history.Event``)."""

    @property
    def item(self) -> str: ...

    @property
    def timestamp(self) -> float: ...


class Dedupe(StrEnum):
    """De-duplication policy applied to the known items of a history."""

    NONE = "none"
    CONSECUTIVE = "consecutive"
    ALL_KEEP_LAST = "all-keep-last"


class ExtractStats:
    """What :meth:`FeatureExtractor.extract` did to one history (read-only).

    Attributes:
        num_events: events (or item ids) given.
        num_unknown: ids not in the vocabulary, skipped.
        num_duplicates: known items dropped by the de-dup policy.
        num_truncated: older items cut because the row holds ``history_len``.
        num_used: items in the row (``num_events - num_unknown - num_duplicates
            - num_truncated``).
        empty: True when the row holds no item (no events, or all unknown): use
            the popularity prior instead of the model.
        seen: sorted unique int32 indices of every known item in the history
            (before de-dup and truncation) — pass as ``exclude`` to ranking.
            Computed on first access.
        known: the same items as int32 indices in time order, repeats kept
            (cheaper than ``seen``; ranking does not need them sorted or unique).
    """

    __slots__ = (
        "num_events",
        "num_unknown",
        "num_duplicates",
        "num_truncated",
        "num_used",
        "_known",
        "_seen",
    )

    def __init__(
        self,
        num_events: int,
        num_unknown: int,
        num_duplicates: int,
        num_truncated: int,
        num_used: int,
        known: list[int],
    ) -> None:
        self.num_events = num_events
        self.num_unknown = num_unknown
        self.num_duplicates = num_duplicates
        self.num_truncated = num_truncated
        self.num_used = num_used
        self._known = known
        self._seen: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        """True when no item made it into the row."""
        return self.num_used == 0

    @property
    def seen(self) -> np.ndarray:
        """Sorted unique int32 indices of the known items of the history."""
        if self._seen is None:
            seen = np.array(sorted(set(self._known)), np.int32)
            seen.flags.writeable = False
            self._seen = seen
        return self._seen

    @property
    def known(self) -> np.ndarray:
        """int32 indices of the known items of the history, oldest first, repeats kept."""
        return np.array(self._known, np.int32)

    def to_json(self) -> dict[str, Any]:
        """The counters as a JSON-able dict (without ``seen``)."""
        return {
            "num_events": self.num_events,
            "num_unknown": self.num_unknown,
            "num_duplicates": self.num_duplicates,
            "num_truncated": self.num_truncated,
            "num_used": self.num_used,
            "empty": self.empty,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExtractStats):
            return NotImplemented
        return self.to_json() == other.to_json() and np.array_equal(self.seen, other.seen)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_json().items())
        return f"ExtractStats({fields})"


class FeatureExtractor:
    """Builds model input rows from raw histories for one vocabulary and feature spec.

    Args:
        vocab: the bundle's vocabulary (raw item id -> index ``1..n``).
        spec: the bundle's feature spec; ``spec.num_items`` must equal ``len(vocab)``.
        dedupe: ``"none"``, ``"consecutive"`` or ``"all-keep-last"`` (see the module
            docstring).

    Example::

        fx = FeatureExtractor(vocab, spec, dedupe="consecutive")
        row, stats = fx.extract(store.history(user, limit=200))
        scores = prior.scores if stats.empty else backend.invoke(row[None])[0]

    Thread-safe: it holds no per-call state.
    """

    def __init__(self, vocab: Vocab, spec: FeatureSpec, dedupe: str | Dedupe = "none") -> None:
        if not isinstance(vocab, Vocab):
            raise InputError(f"vocab must be an edgerec.vocab.Vocab (got {type(vocab).__name__})")
        if not isinstance(spec, FeatureSpec):
            raise InputError(
                f"spec must be an edgerec.features.FeatureSpec (got {type(spec).__name__})"
            )
        if spec.num_items != vocab.num_items:
            raise InputError(
                f"feature spec has num_items={spec.num_items} but the vocabulary has "
                f"{vocab.num_items} items; they must come from the same bundle"
            )
        try:
            self._dedupe = Dedupe(dedupe)
        except ValueError:
            choices = ", ".join(repr(d.value) for d in Dedupe)
            raise InputError(f"dedupe must be one of {choices} (got {dedupe!r})") from None
        self.vocab = vocab
        self.spec = spec
        # The vocabulary's own dict: a C-level lookup per id instead of a method call.
        index = getattr(vocab, "_index", None)
        self._lookup = index.get if isinstance(index, dict) else vocab.get
        self._hist_len = spec.history_len
        self._max_len = spec.max_len
        self._blank = np.full(spec.max_len, spec.pad_id, np.int32)
        self._blank[-1] = spec.mask_id

    @property
    def dedupe(self) -> Dedupe:
        """The de-duplication policy."""
        return self._dedupe

    def extract(
        self, history: Sequence[TimedItem] | Sequence[str]
    ) -> tuple[np.ndarray, ExtractStats]:
        """One ``(max_len,)`` int32 input row and its :class:`ExtractStats`.

        Args:
            history: events with ``.item`` and ``.timestamp`` (any order), or raw
                item ids oldest first.

        Raises:
            InputError: an id that is not a string (``None`` included), an event
                without ``item``/``timestamp``, or a non-finite timestamp.
        """
        row = self._blank.copy()
        return row, self._fill(history, row)

    def extract_batch(
        self, histories: Sequence[Sequence[TimedItem] | Sequence[str]]
    ) -> tuple[np.ndarray, list[ExtractStats]]:
        """``(B, max_len)`` int32 rows and one :class:`ExtractStats` per history."""
        batch = np.tile(self._blank, (len(histories), 1))
        stats = [self._fill(h, row) for h, row in zip(histories, batch, strict=True)]
        return batch, stats

    def _items(self, history: Any) -> list:
        """Raw item ids in time order."""
        if isinstance(history, str | bytes):
            raise InputError("a history is a sequence of events or item ids, not one string")
        if isinstance(history, np.ndarray):
            history = history.tolist()
        elif not isinstance(history, list | tuple):
            history = list(history)
        if not history or isinstance(history[0], str):
            return history if isinstance(history, list) else list(history)
        try:
            if not math.isfinite(sum(map(_timestamp, history))):
                bad = next(e.timestamp for e in history if not math.isfinite(e.timestamp))
                raise InputError(f"event timestamps must be finite (got {bad!r})")
            # Stable, and linear when already in order (as HistoryStore.history returns).
            return list(map(_item, sorted(history, key=_timestamp)))
        except (AttributeError, TypeError) as exc:
            raise InputError(
                "a history holds events with .item and a numeric .timestamp (e.g. "
                f"edgerec.runtime.history.Event) or raw item id strings ({exc})"
            ) from None

    def _fill(self, history: Any, row: np.ndarray) -> ExtractStats:
        items = self._items(history)
        try:
            known = list(map(self._lookup, items))
        except TypeError:  # an unhashable id
            known = [None]
        if None in known:  # rare path: type checks only when something did not map
            bad = next((i for i in items if not isinstance(i, str)), _OK)
            if bad is not _OK:
                raise InputError(f"item ids must be strings (got {type(bad).__name__}: {bad!r})")
            known = [j for j in known if j is not None]
            if logger.isEnabledFor(logging.DEBUG):
                unknown = [i for i in items if self._lookup(i) is None]
                logger.debug(
                    "skipped %d item ids not in the vocabulary (e.g. %r)",
                    len(unknown),
                    unknown[:5],
                )
        num_unknown = len(items) - len(known)
        if not known:
            return ExtractStats(len(items), num_unknown, 0, 0, 0, known)
        used = known
        if self._dedupe is Dedupe.CONSECUTIVE:
            used = [b for a, b in zip([0, *known], known, strict=False) if a != b]
        elif self._dedupe is Dedupe.ALL_KEEP_LAST:
            used = list(dict.fromkeys(reversed(known)))
            used.reverse()
        tail = used[-self._hist_len :]
        end = self._max_len - 1
        row[end - len(tail) : end] = tail
        return ExtractStats(
            len(items),
            num_unknown,
            len(known) - len(used),
            len(used) - len(tail),
            len(tail),
            known,
        )

    def __repr__(self) -> str:
        return (
            f"FeatureExtractor(num_items={self.spec.num_items}, max_len={self.spec.max_len}, "
            f"dedupe={self._dedupe.value!r})"
        )
