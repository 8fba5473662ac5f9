"""Fixtures of the release tests: a real converter-made bundle to publish.

Built by :func:`tests.converters.tiny.build_tiny_bundle` (cached per test process, so
it is shared with the runtime and converter tests of the same session), or copied
from ``EDGEREC_TEST_BUNDLE`` for quick local iterations.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def release_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("release-bundle") / "tiny"
    prebuilt = os.environ.get("EDGEREC_TEST_BUNDLE")
    if prebuilt:
        shutil.copytree(prebuilt, out)
        return out
    from tests.converters.tiny import build_tiny_bundle

    return build_tiny_bundle(out)
