"""Options, fixtures and the JSON report of the device_tests suite.

Run (see README.md)::

    pytest -c device_tests/pytest.ini device_tests --bundle PATH --profile rpi4 \
        --report device-report.json

The suite consumes a bundle made elsewhere and needs only ``edgerec[runtime]``
(numpy, ai-edge-litert and/or onnxruntime, flatbuffers). It must never import
TensorFlow: a test checks it mid-session and the session fails at the end if any
TensorFlow-family module got loaded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from devicekit import (  # noqa: E402 - the suite's own helpers, next to this file
    PROFILES,
    Profile,
    Report,
    heavy_modules_loaded,
)

REPORT_KEY = pytest.StashKey[Report]()
OUTCOMES_KEY = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgerec device tests")
    group.addoption(
        "--bundle",
        default=os.environ.get("EDGEREC_BUNDLE"),
        help="bundle directory made by `edgerec convert` (default: $EDGEREC_BUNDLE)",
    )
    group.addoption(
        "--profile",
        default=os.environ.get("EDGEREC_DEVICE_PROFILE", "host"),
        choices=sorted(PROFILES),
        help="device profile: what the machine must be and offer (default: host)",
    )
    group.addoption(
        "--report",
        default=os.environ.get("EDGEREC_DEVICE_REPORT"),
        help="write the JSON report (parity, accelerator, latency, versions) here",
    )
    group.addoption(
        "--latency-runs",
        type=int,
        default=200,
        help="recommend() calls per latency series (default 200)",
    )
    group.addoption(
        "--threads", type=int, default=1, help="interpreter threads for latency (default 1)"
    )
    group.addoption(
        "--store-dir",
        default=os.environ.get("EDGEREC_DEVICE_STORE_DIR"),
        help="folder on the device's storage for the history-store test "
        "(default: pytest's temporary folder)",
    )
    group.addoption(
        "--min-overlap",
        type=float,
        default=None,
        help="override the top-10 overlap floor of every parity check (default 0.9)",
    )
    group.addoption(
        "--strict-install",
        action="store_true",
        help="also require an install-honest environment: TensorFlow not installed "
        "and edgerec imported from an installed wheel, not a source checkout",
    )


def pytest_configure(config: pytest.Config) -> None:
    profile = PROFILES[config.getoption("--profile")]
    bundle = config.getoption("--bundle")
    if config.getoption("--latency-runs") < 1:
        raise pytest.UsageError("--latency-runs must be at least 1")
    informational = config.getoption("help") or config.getoption("collectonly")
    if not informational:
        if not bundle:
            raise pytest.UsageError(
                "no bundle: pass --bundle PATH or set EDGEREC_BUNDLE (a directory written by "
                "`edgerec convert`; `make device-bundle` builds a tiny one)"
            )
        if not (Path(bundle) / "manifest.json").is_file():
            raise pytest.UsageError(f"{bundle}: not an edgerec bundle (no manifest.json)")
    config.stash[REPORT_KEY] = Report(profile, Path(bundle).resolve() if bundle else None)
    config.stash[OUTCOMES_KEY] = {}


def pytest_report_header(config: pytest.Config) -> list[str]:
    report = config.stash[REPORT_KEY].data
    plat = report["platform"]
    pk = report["packages"]
    return [
        f"edgerec device profile: {report['profile']} ({report['profile_info']['description']})",
        f"machine: {plat['machine']} {plat['cpu_model'] or ''} "
        f"board: {plat['device_model'] or '-'}; python {plat['python_version']}",
        f"edgerec {pk['edgerec']}, numpy {pk['numpy']}, ai-edge-litert {pk['ai-edge-litert']}, "
        f"onnxruntime {pk['onnxruntime'] or pk['onnxruntime-gpu']}",
        f"bundle: {report['bundle']['path']}",
    ]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not _SESSION_CONFIG:
        return
    outcomes = _SESSION_CONFIG[0].stash[OUTCOMES_KEY]
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            outcomes[report.nodeid] = "xfailed" if report.skipped else "xpassed"
        else:
            outcomes[report.nodeid] = report.outcome
    elif report.failed:  # setup or teardown error
        outcomes[report.nodeid] = "error"
    elif report.skipped:  # skipped in setup (skip marks, pytest.skip in fixtures)
        outcomes[report.nodeid] = "xfailed" if hasattr(report, "wasxfail") else "skipped"


_SESSION_CONFIG: list[pytest.Config] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    _SESSION_CONFIG[:] = [session.config]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    report = config.stash[REPORT_KEY]
    heavy = heavy_modules_loaded()
    report.finish(config.stash[OUTCOMES_KEY], heavy)
    if heavy:
        sys.stderr.write(
            f"\nERROR: the device suite loaded {', '.join(heavy)}; the on-device runtime "
            "must never import TensorFlow\n"
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    path = config.getoption("--report")
    if path and not config.getoption("--collect-only"):
        written = report.write(path)
        sys.stderr.write(f"\ndevice report written to {written}\n")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    from summarize import format_summary

    data = config.stash[REPORT_KEY].data
    if data.get("parity") or data["latency"]["series"]:
        terminalreporter.section("edgerec device summary")
        for line in format_summary(data):
            terminalreporter.write_line(line)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def profile(pytestconfig: pytest.Config) -> Profile:
    """The selected device profile."""
    return PROFILES[pytestconfig.getoption("--profile")]


@pytest.fixture(scope="session")
def device_report(pytestconfig: pytest.Config) -> Report:
    """The session's JSON report; tests write their measurements into sections."""
    return pytestconfig.stash[REPORT_KEY]


@pytest.fixture(scope="session")
def bundle_path(pytestconfig: pytest.Config) -> Path:
    """The bundle under test (``--bundle`` or ``$EDGEREC_BUNDLE``)."""
    value = pytestconfig.getoption("--bundle")
    if not value:
        raise pytest.UsageError(
            "no bundle: pass --bundle PATH or set EDGEREC_BUNDLE (a directory written by "
            "`edgerec convert`; `make device-bundle` builds a tiny one)"
        )
    path = Path(value).resolve()
    if not (path / "manifest.json").is_file():
        raise pytest.UsageError(f"{path}: not a bundle (no manifest.json)")
    return path


@pytest.fixture(scope="session")
def manifest(bundle_path: Path, device_report: Report):
    """The verified manifest (``edgerec.bundle.open_bundle``: schema + every sha256)."""
    from edgerec.bundle import open_bundle

    m = open_bundle(bundle_path)
    spec = m.feature_spec
    device_report.section("bundle").update(
        {
            "model_id": m.model_id,
            "model_version": m.model_version,
            "edgerec_version": m.data.get("edgerec_version"),
            "schema_version": m.schema_version,
            "num_items": spec.num_items,
            "max_len": spec.max_len,
            "artifacts": [a.name for a in m.artifacts],
            "default_artifact": next((a.name for a in m.artifacts if a.is_default), None),
            "bytes": sum(int(f["bytes"]) for f in m.files.values()),
        }
    )
    return m


@pytest.fixture(scope="session")
def reference_inputs(manifest) -> np.ndarray:
    """``reference/inputs.npy``: encoded rows ``[R, L]`` the converter ran every artifact on."""
    rel = (manifest.data.get("reference") or {}).get("inputs", "reference/inputs.npy")
    return np.load(manifest.path(rel))


@pytest.fixture(scope="session")
def reference_histories(manifest, reference_inputs) -> list[list[str]]:
    """The reference rows decoded back to raw item ids (oldest first)."""
    from devicekit import decode_row

    from edgerec.vocab import Vocab

    vocab = Vocab.load(manifest.path("vocab.json"))
    n = manifest.feature_spec.num_items
    return [decode_row(row, vocab.item_ids, n) for row in reference_inputs]


def _bundle_artifacts(config: pytest.Config) -> list[str]:
    """Artifact names for parametrization (read without hashing, at collection)."""
    import json

    value = config.getoption("--bundle")
    if not value:
        return []
    try:
        data = json.loads((Path(value) / "manifest.json").read_text())
        return [str(a["name"]) for a in data.get("artifacts", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "artifact_name" in metafunc.fixturenames:
        names = _bundle_artifacts(metafunc.config)
        metafunc.parametrize("artifact_name", names or ["<no bundle>"], ids=names or None)
