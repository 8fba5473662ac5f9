"""Fixtures of the runtime tests: a real converter-made bundle, built once per session.

``tiny_bundle`` is made by :func:`tests.converters.tiny.build_tiny_bundle` (distil,
export, quantize, validate, package: ~1 min on 2 cores, shared with the converter
tests when both run in one session). Tests must treat it as read-only; a test that
tampers with files copies it first (:func:`bundle_copy`).

For quick local iterations ``EDGEREC_TEST_BUNDLE=/path/to/bundle`` copies an
existing converter-made bundle instead of building one.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

BUNDLE_ENV = "EDGEREC_TEST_BUNDLE"


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete converter-made bundle (every target and precision, GPU variant)."""
    out = tmp_path_factory.mktemp("runtime-bundle") / "tiny"
    prebuilt = os.environ.get(BUNDLE_ENV)
    if prebuilt:
        shutil.copytree(prebuilt, out)
        return out
    from tests.converters.tiny import build_tiny_bundle

    return build_tiny_bundle(out)


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle that a test may damage."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


@pytest.fixture
def edit_manifest(bundle_copy: Path) -> Callable[[Callable[[dict[str, Any]], None]], Path]:
    """Apply ``change(manifest_dict)`` to the copy's manifest.json; returns the bundle."""

    def apply(change: Callable[[dict[str, Any]], None]) -> Path:
        path = bundle_copy / "manifest.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
        return bundle_copy

    return apply


def gpu_here() -> str | None:
    """Why a GPU path might work on this machine (tests of the CPU fallback skip), or None."""
    import onnxruntime as ort

    gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    if gpu & set(ort.get_available_providers()):
        return "ONNX Runtime offers a GPU provider here"
    if ctypes.util.find_library("vulkan") is not None:
        return "a Vulkan loader is installed (LiteRT's GPU accelerator may work)"
    if os.environ.get("EDGEREC_TFLITE_GPU_DELEGATE"):
        return "EDGEREC_TFLITE_GPU_DELEGATE names a GPU delegate"
    return None


@pytest.fixture
def no_gpu() -> None:
    """Skip when this machine may have a working GPU path."""
    reason = gpu_here()
    if reason:
        pytest.skip(f"checks the CPU fallback, but {reason}")
