"""Interaction data: loading, preprocessing, splits, synthetic logs, MovieLens-100K.

Typical use::

    from edgerec.data import load_dataset, leave_one_out

    dataset = load_dataset("movielens-100k")  # fetched once into ~/.cache/edgerec
    split = leave_one_out(dataset)

Submodules are imported on first attribute access, so ``import edgerec.data``
(and the CLI's ``--help``) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgerec._lazy import lazy_exports

if TYPE_CHECKING:
    from edgerec.data.dataset import Interactions, LeaveOneOutSplit, SequenceDataset
    from edgerec.data.loaders import load_interactions, sniff_format
    from edgerec.data.movielens import FetchError, cache_root, fetch_movielens_100k
    from edgerec.data.preprocess import (
        build_sequences,
        dataset_stats,
        leave_one_out,
        natural_order,
    )
    from edgerec.data.sources import DATASETS, load_dataset
    from edgerec.data.synth import SynthConfig, SyntheticLog, generate_synthetic, iter_synthetic

_EXPORTS = {
    "Interactions": "edgerec.data.dataset",
    "SequenceDataset": "edgerec.data.dataset",
    "LeaveOneOutSplit": "edgerec.data.dataset",
    "DATASETS": "edgerec.data.sources",
    "load_dataset": "edgerec.data.sources",
    "load_interactions": "edgerec.data.loaders",
    "sniff_format": "edgerec.data.loaders",
    "FetchError": "edgerec.data.movielens",
    "cache_root": "edgerec.data.movielens",
    "fetch_movielens_100k": "edgerec.data.movielens",
    "build_sequences": "edgerec.data.preprocess",
    "dataset_stats": "edgerec.data.preprocess",
    "leave_one_out": "edgerec.data.preprocess",
    "natural_order": "edgerec.data.preprocess",
    "SynthConfig": "edgerec.data.synth",
    "SyntheticLog": "edgerec.data.synth",
    "generate_synthetic": "edgerec.data.synth",
    "iter_synthetic": "edgerec.data.synth",
}

__all__ = [
    "DATASETS",
    "FetchError",
    "Interactions",
    "LeaveOneOutSplit",
    "SequenceDataset",
    "SynthConfig",
    "SyntheticLog",
    "build_sequences",
    "cache_root",
    "dataset_stats",
    "fetch_movielens_100k",
    "generate_synthetic",
    "iter_synthetic",
    "leave_one_out",
    "load_dataset",
    "load_interactions",
    "natural_order",
    "sniff_format",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), __all__)
