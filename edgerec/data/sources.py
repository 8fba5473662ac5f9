"""Data sources by name or path.

``load_dataset`` turns a known dataset name (``DATASETS``) or a log file into a
preprocessed :class:`SequenceDataset`; the file formats themselves are read by
:mod:`edgerec.data.loaders`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgerec.data.dataset import Interactions, SequenceDataset
from edgerec.errors import InputError


def _movielens_100k(cache_dir: str | Path | None) -> Interactions:
    from edgerec.data.loaders import load_interactions
    from edgerec.data.movielens import fetch_movielens_100k

    return load_interactions(fetch_movielens_100k(cache_dir), format="recbole")


# Known dataset names -> loader of the raw log (cache_dir -> Interactions).
DATASETS: dict[str, Callable[[str | Path | None], Interactions]] = {
    "movielens-100k": _movielens_100k,
}
ALIASES = {"ml-100k": "movielens-100k", "ml100k": "movielens-100k"}


def resolve_name(name_or_path: str | Path) -> str | None:
    """The canonical dataset name for a known name or alias, else None."""
    if isinstance(name_or_path, Path):
        return None
    key = name_or_path.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in DATASETS else None


def load_raw(
    name_or_path: str | Path,
    *,
    format: str = "auto",
    cache_dir: str | Path | None = None,
    **columns: str | None,
) -> tuple[str, Interactions]:
    """``(name, raw log)`` of a known dataset (fetched and cached) or a file."""
    from edgerec.data.loaders import load_interactions

    name = resolve_name(name_or_path)
    if name is not None:
        if format != "auto" or any(v is not None for v in columns.values()):
            raise InputError(f"{name}: format and column options only apply to files")
        return name, DATASETS[name](cache_dir)
    path = Path(name_or_path)
    if not path.exists():
        raise InputError(
            f"{name_or_path!s}: neither a known dataset ({', '.join(sorted(DATASETS))}) "
            "nor an existing file"
        )
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    return Path(stem).stem, load_interactions(path, format=format, **columns)


def load_dataset(
    name_or_path: str | Path,
    min_user_interactions: int = 3,
    min_item_interactions: int = 1,
    dedupe: bool = False,
    *,
    format: str = "auto",
    cache_dir: str | Path | None = None,
    item_order: str = "id",
    name: str | None = None,
    **columns: str | None,
) -> SequenceDataset:
    """Load and preprocess a dataset into per-user sequences.

    Args:
        name_or_path: ``"movielens-100k"`` (alias ``"ml-100k"``), fetched once into
            the cache (see :func:`edgerec.data.fetch_movielens_100k`), or a file
            read by :func:`edgerec.data.load_interactions`.
        min_user_interactions: drop users with fewer events (3 = what leave-one-out
            needs; MovieLens-100K has at least 20 per user, so nobody is dropped).
        min_item_interactions, dedupe, item_order: see
            :func:`edgerec.data.build_sequences`.
        format, **columns: file format and column names (``user_col``, ``item_col``,
            ``time_col``, ``event_col``, ``delimiter``), files only.
        cache_dir: cache root for named datasets.
        name: dataset name stored on the result (default: the canonical dataset
            name or the file's stem).

    MovieLens-100K defaults: every rating is an implicit interaction, no k-core
    beyond dropping users with fewer than 3 events.
    """
    from edgerec.data.preprocess import build_sequences

    resolved, raw = load_raw(name_or_path, format=format, cache_dir=cache_dir, **columns)
    return build_sequences(
        raw,
        min_user_interactions=min_user_interactions,
        min_item_interactions=min_item_interactions,
        dedupe=dedupe,
        item_order=item_order,  # type: ignore[arg-type]
        name=name or resolved,
    )
