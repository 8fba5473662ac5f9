"""Which bundle a federated head belongs to, and whether the device may use it.

A head is an additive bias over one bundle's catalog, trained against that bundle's
scores: applying it to another model (another model id, or another version of the same
model after an over-the-air update) silently degrades the ranking, even when the
catalog sizes agree. So every head carries the identity of its bundle — the
manifest's ``model.id`` and ``model.version`` — and the device uses a head, trains on
it and takes part in rounds only when that identity matches the model it runs.

The coordinator states the identity in ``GET /v1/head`` (``model_id``,
``model_version``; also in the head's ``metadata``) and in the round view. A field
the coordinator does not send (an older coordinator) or the device's model does not
expose (a test or simulation model without a manifest) is not compared: those heads
are accepted as before, after the catalog-size check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from .sync_outcome import SyncError

__all__ = ["UNKNOWN_BUNDLE", "BundleId", "bundle_of_answer", "bundle_of_model", "mismatch"]


class BundleId(NamedTuple):
    """A bundle's identity: model id and model version (None where unknown)."""

    model_id: str | None = None
    model_version: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"model_id": self.model_id, "model_version": self.model_version}

    @classmethod
    def from_json(cls, data: Any) -> BundleId:
        """The identity saved by :meth:`to_json` (unknown for anything else)."""
        if not isinstance(data, Mapping):
            return cls()
        return cls(*(_text(data.get(k)) for k in cls._fields))

    def __str__(self) -> str:
        return f"{self.model_id or '?'}@{self.model_version or '?'}"


#: a model or answer that states no identity
UNKNOWN_BUNDLE = BundleId()


def bundle_of_model(model: Any) -> BundleId:
    """The identity of what the app hands to the sync client: a Recommender's manifest
    (``manifest.model_id`` / ``manifest.model_version``), else the object's own
    ``model_id`` / ``model_version`` attributes, else unknown."""
    manifest = getattr(model, "manifest", None)
    source = manifest if manifest is not None else model
    return BundleId(
        _text(getattr(source, "model_id", None)), _text(getattr(source, "model_version", None))
    )


def bundle_of_answer(data: Mapping[str, Any], what: str) -> BundleId:
    """The identity a coordinator answer (head or round view) states: its top-level
    ``model_id`` / ``model_version``, else those of its ``metadata``.

    A field that is absent or null is unknown (an older coordinator); one of another
    type is a :class:`SyncError` (``bad_response``).
    """
    metadata = data.get("metadata")
    fallback = metadata if isinstance(metadata, Mapping) else {}
    values = []
    for key in BundleId._fields:
        value = data.get(key)
        if value is None:
            value = fallback.get(key)
        if value is not None and not isinstance(value, str):
            raise SyncError(f"{what}: {key} {value!r} is not a string", "bad_response")
        values.append(value)
    return BundleId(*values)


def mismatch(device: BundleId, served: BundleId, what: str) -> str | None:
    """Why ``served`` (a head or round) is not for the device's bundle; None when every
    field both sides state agrees."""
    for key, mine, theirs in zip(BundleId._fields, device, served, strict=True):
        if mine is not None and theirs is not None and mine != theirs:
            return (
                f"{what} belongs to bundle {served}, this device runs {device} "
                f"({key} differs); not using it"
            )
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
