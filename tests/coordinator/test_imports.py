"""The device side stays light: no web framework, no accountant, no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("fastapi", "starlette", "uvicorn", "pydantic", "dp_accounting", "scipy",
         "tensorflow", "httpx", "httpcore")  # fmt: skip


def test_runtime_sync_imports_no_server_side_modules():
    code = (
        "import sys, json, edgerec.runtime.sync, edgerec.coordinator.wire, "
        "edgerec.coordinator;"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert json.loads(out) == []


def test_coordinator_cli_registration_does_not_import_the_server():
    code = (
        "import sys, json, argparse, edgerec.coordinator.cli as c;"
        "c.register(argparse.ArgumentParser().add_subparsers());"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert json.loads(out) == []
