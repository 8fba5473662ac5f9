"""Which heavy top-level modules a snippet of Python pulls in, run in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable


def heavy_modules_loaded(code: str, heavy: Iterable[str]) -> list[str]:
    """Run ``code`` in a new ``python -c`` and return the sorted ``heavy`` top-level
    modules that are in ``sys.modules`` afterwards (empty when the import rule holds)."""
    names = list(heavy)
    probe = (
        f"{code}\nimport sys as _sys, json as _json\n"
        f"_loaded = {{m.split('.')[0] for m in _sys.modules}}\n"
        f"print(_json.dumps(sorted(_loaded & set({names!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])
