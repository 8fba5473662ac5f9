"""Help formatting shared by every ``edgerec`` sub-command.

Lives in core, not in :mod:`edgerec.cli`, so that the sub-command modules of the lower
layers (``edgerec.data.cli``, ``edgerec.teacher.cli``, ...) do not import the top-level
command line, which sits in the harness layer and imports them.
"""

from __future__ import annotations

import argparse

__all__ = ["HelpFormatter"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in epilogs as written."""
