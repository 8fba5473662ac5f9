"""edgerec.runtime: the TensorFlow-free on-device runtime.

Installs with ``pip install 'edgerec[runtime]'`` (numpy + LiteRT and/or ONNX
Runtime) and must never import TensorFlow; ``tests/test_packaging.py`` checks it.

The recommend path::

    events ─► HistoryStore ─► FeatureExtractor ─► backend.invoke ─► TopK (+ filters)
                                   │ empty history
                                   └──────────► PopularityPrior ─┘
"""

from typing import TYPE_CHECKING, Any

from .errors import HistoryStoreError, NonFiniteScoresError
from .features import Dedupe, ExtractStats, FeatureExtractor
from .popularity import PopularityPrior
from .ranking import Recommendation, TopK, TopKResult, to_recommendations
from .recommender import Recommender

if TYPE_CHECKING:
    from .history import Event, HistoryStore

# Imported on first use (PEP 562), so that ``import edgerec.runtime`` does not load
# sqlite3 for applications that keep their own history.
_LAZY = {"Event": "history", "HistoryStore": "history"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Dedupe",
    "Event",
    "ExtractStats",
    "FeatureExtractor",
    "HistoryStore",
    "HistoryStoreError",
    "NonFiniteScoresError",
    "PopularityPrior",
    "Recommendation",
    "Recommender",
    "TopK",
    "TopKResult",
    "to_recommendations",
]
