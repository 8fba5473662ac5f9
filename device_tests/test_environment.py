"""The device itself: the profile matches the machine, the runtime packages are
there, and TensorFlow is absent from the process (and, with ``--strict-install``,
from the environment)."""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path

import pytest
from devicekit import HEAVY_MODULES, device_model, heavy_modules_loaded


def test_profile_matches_machine(profile, device_report) -> None:
    machine = platform.machine().lower()
    if profile.machine:
        assert machine in (profile.machine, "arm64"), (
            f"profile {profile.name} expects {profile.machine}, this machine is {machine}"
        )
    board = device_model()
    if profile.model_hints and board is not None:
        assert any(h.lower() in board.lower() for h in profile.model_hints), (
            f"profile {profile.name} expects one of {profile.model_hints}, the board says "
            f"{board!r}: pick the matching --profile"
        )


def test_runtime_packages_installed() -> None:
    have = {m: importlib.util.find_spec(m) is not None for m in ("ai_edge_litert", "onnxruntime")}
    assert any(have.values()), (
        "neither ai-edge-litert nor onnxruntime is installed: pip install 'edgerec[runtime]'"
    )
    import numpy

    assert int(numpy.__version__.split(".")[0]) >= 1
    import edgerec.runtime  # noqa: F401


def test_tensorflow_not_imported() -> None:
    """Nothing the suite has done so far imported TensorFlow (checked again at the end)."""
    assert heavy_modules_loaded() == []


def test_strict_install(pytestconfig, device_report) -> None:
    """``--strict-install``: an install like a device's — no TensorFlow in the
    environment, edgerec from an installed wheel rather than a source checkout."""
    import edgerec.runtime

    runtime_dir = Path(edgerec.runtime.__file__).resolve().parent
    installed = runtime_dir.parent.name == "edgerec"  # wheel layout: .../edgerec/runtime
    present = [m for m in HEAVY_MODULES if importlib.util.find_spec(m) is not None]
    device_report.section("install").update(
        {
            "edgerec_runtime_path": str(runtime_dir),
            "from_wheel": installed,
            "heavy_installed": present,
        }
    )
    if not pytestconfig.getoption("--strict-install"):
        pytest.skip("pass --strict-install to require an install-honest environment")
    assert not present, f"{present} installed: a device install has only edgerec[runtime]"
    assert installed, f"edgerec.runtime imported from a source checkout: {runtime_dir}"
