"""Session-wide test hygiene."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """Undo what an in-process ``edgerec.cli.main`` call does to the root logger.

    ``main`` runs ``logging.basicConfig``, whose handler keeps the stream that was
    ``sys.stderr`` at the time: pytest's capture file of that test, closed afterwards.
    Left in place, later log records would be written to a closed file.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
