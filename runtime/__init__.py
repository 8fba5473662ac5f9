"""edgerec.runtime: the TensorFlow-free on-device runtime.

Installs with ``pip install 'edgerec[runtime]'`` (numpy + LiteRT and/or ONNX
Runtime) and must never import TensorFlow; ``tests/test_packaging.py`` checks it.

The recommend path::

    events ─► HistoryStore ─► FeatureExtractor ─► backend.invoke ─► TopK (+ filters)
                                   │ empty history
                                   └──────────► PopularityPrior ─┘
"""

from .errors import HistoryStoreError, NonFiniteScoresError
from .features import Dedupe, ExtractStats, FeatureExtractor
from .history import Event, HistoryStore
from .popularity import PopularityPrior
from .ranking import Recommendation, TopK, TopKResult, to_recommendations
from .recommender import Recommender

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
