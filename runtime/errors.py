"""Exception types of the on-device runtime.

All derive from :class:`edgerec.errors.EdgerecError`; bad arguments raise
:class:`edgerec.errors.InputError` (exit code 2) as everywhere else in edgerec.
"""

from __future__ import annotations

from edgerec.errors import EdgerecError

__all__ = ["HistoryStoreError", "NonFiniteScoresError"]


class HistoryStoreError(EdgerecError):
    """The history store file cannot be used: not a SQLite database, a database
    written by something else or by an unknown schema version, an I/O failure,
    or the store was already closed. The message names the file."""


class NonFiniteScoresError(EdgerecError):
    """A score vector handed to ranking holds NaN or +/-inf among the candidates.

    Ranking refuses to guess an order; a broken model or a bad quantization
    must fail loudly instead of recommending garbage.
    """
