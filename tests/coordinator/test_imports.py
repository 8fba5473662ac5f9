"""The device side stays light: no web framework, no accountant, no TensorFlow."""

from __future__ import annotations

from tests.import_check import heavy_modules_loaded

HEAVY = ("fastapi", "starlette", "uvicorn", "pydantic", "dp_accounting", "scipy",
         "tensorflow", "httpx", "httpcore")  # fmt: skip


def test_runtime_sync_imports_no_server_side_modules():
    code = "import edgerec.runtime.sync, edgerec.federated.wire, edgerec.coordinator"
    assert heavy_modules_loaded(code, HEAVY) == []


def test_coordinator_cli_registration_does_not_import_the_server():
    code = (
        "import argparse, edgerec.coordinator.cli as c\n"
        "c.register(argparse.ArgumentParser().add_subparsers())"
    )
    assert heavy_modules_loaded(code, HEAVY) == []
