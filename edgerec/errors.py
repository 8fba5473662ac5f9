"""Exception types shared across edgerec.

Every error a user can cause derives from :class:`EdgerecError`; the CLI maps
:class:`InputError` (bad input or usage) to exit code 2.
"""

from __future__ import annotations


class EdgerecError(Exception):
    """Base class for every error edgerec raises on purpose.

    ``exit_code`` is what the ``edgerec`` CLI exits with when it catches one.
    """

    exit_code: int = 1


class InputError(EdgerecError, ValueError):
    """Bad input: a malformed file, an unknown name, an impossible setting.

    The message says what was wrong, where (file, line, field) and what to do.
    """

    exit_code = 2


class MissingExtraError(EdgerecError, ImportError):
    """An optional dependency group is not installed."""

    exit_code = 2

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"this feature needs the '{module}' module, which is part of the "
            f"'{extra}' extra: pip install 'edgerec[{extra}]'"
        )
        self.extra = extra
        self.module = module
