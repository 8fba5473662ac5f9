"""Helpers of the device_tests suite: profiles, the JSON report, parity metrics.

Only the standard library and numpy are imported at module level; edgerec and
the inference packages are imported by the tests themselves. Nothing here may
import TensorFlow: the suite runs on devices where it is not installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REPORT_SCHEMA = "edgerec-device-report/1"
HEAVY_MODULES = ("tensorflow", "keras", "tf2onnx")
#: distributions whose versions go into the report (absent ones are recorded as null)
DISTRIBUTIONS = (
    "edgerec",
    "numpy",
    "ai-edge-litert",
    "onnxruntime",
    "onnxruntime-gpu",
    "flatbuffers",
    "pytest",
    "tensorflow",
    "tensorflow-cpu",
)
GPU_ACCELERATORS = ("gpu", "cuda", "tensorrt")
TOP_K = 10


@dataclass(frozen=True)
class Profile:
    """What a device profile expects of the machine the suite runs on.

    Attributes:
        name: the ``--profile`` value.
        machine: required ``platform.machine()`` (``None``: any).
        model_hints: words one of which ``/proc/device-tree/model`` must contain
            (checked only where that file exists).
        gpu: ``"required"`` (a GPU path must work), ``"optional"`` (either outcome
            is fine, it is recorded) or ``"absent"`` (``accelerator="gpu"`` must
            raise ``AcceleratorUnavailable``). ``host`` is ``"detect"``: absent
            unless the machine shows signs of a GPU.
        emulated: latency numbers are meaningless (qemu-user).
        expected_p50_ms: rough ``recommend`` p50 of the ML-100K default artifact at
            1 thread, for the README; never asserted.
    """

    name: str
    machine: str | None
    model_hints: tuple[str, ...]
    gpu: str
    emulated: bool
    expected_p50_ms: float | None
    description: str


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("host", None, (), "detect", False, 0.1, "CI / developer machine (any CPU)"),
        Profile(
            "rpi4",
            "aarch64",
            ("Raspberry Pi 4", "Raspberry Pi Compute Module 4", "Raspberry Pi 400"),
            "optional",
            False,
            2.0,
            "Raspberry Pi 4 (Cortex-A72 @1.5-1.8 GHz), 64-bit Raspberry Pi OS bookworm",
        ),
        Profile(
            "rpi5",
            "aarch64",
            ("Raspberry Pi 5", "Raspberry Pi Compute Module 5", "Raspberry Pi 500"),
            "optional",
            False,
            0.8,
            "Raspberry Pi 5 (Cortex-A76 @2.4 GHz), 64-bit Raspberry Pi OS bookworm",
        ),
        Profile(
            "jetson-orin",
            "aarch64",
            ("Jetson", "Orin"),
            "required",
            False,
            0.5,
            "NVIDIA Jetson Orin (Nano/NX/AGX), JetPack 6 with onnxruntime-gpu",
        ),
        Profile(
            "qemu-aarch64",
            "aarch64",
            (),
            "absent",
            True,
            None,
            "aarch64 under qemu-user emulation (device_tests/emulate-aarch64.sh): parity only",
        ),
    )
}


# ----------------------------------------------------------------------------- report
class Report:
    """The JSON report of one session; tests add sections, the session writes it."""

    def __init__(self, profile: Profile, bundle: Path | None) -> None:
        self.data: dict[str, Any] = {
            "schema": REPORT_SCHEMA,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "profile": profile.name,
            "profile_info": asdict(profile),
            "platform": platform_info(),
            "packages": package_versions(),
            "bundle": {"path": str(bundle) if bundle else None},
            "integrity": {},
            "parity": {},
            "accelerator": {},
            "history_store": {},
            "latency": {"note": "recorded, never asserted", "series": {}},
            "tests": {},
        }
        self._t0 = time.perf_counter()

    def section(self, name: str) -> dict[str, Any]:
        """The dict of a top-level section (created on first use)."""
        return self.data.setdefault(name, {})

    def finish(self, outcomes: dict[str, str], heavy: list[str]) -> dict[str, Any]:
        """Add the test outcomes, TF check and resource use; return the data."""
        counts: dict[str, int] = {}
        for outcome in outcomes.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        self.data["tests"] = {"counts": counts, "outcomes": outcomes}
        self.data["tensorflow_imported"] = heavy
        # ru_maxrss is KiB on Linux
        self.data["peak_rss_mb"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        )
        self.data["duration_s"] = round(time.perf_counter() - self._t0, 2)
        return self.data

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=_json_default) + "\n")
        os.replace(tmp, path)
        return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


# --------------------------------------------------------------------------- platform
def device_model() -> str | None:
    """The board name from the device tree (Raspberry Pi, Jetson), if any."""
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            return Path(path).read_bytes().rstrip(b"\0").decode(errors="replace").strip()
        except OSError:
            continue
    return None


def cpu_model() -> str | None:
    """A short CPU description from /proc/cpuinfo (``model name`` or the ARM part)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    if "model name" in fields:
        return fields["model name"]
    arm_parts = {
        "0xd03": "Cortex-A53",
        "0xd08": "Cortex-A72",
        "0xd0b": "Cortex-A76",
        "0xd42": "Cortex-A78AE",
        "0xd0c": "Neoverse-N1",
    }
    part = fields.get("CPU part")
    if part:
        return arm_parts.get(part, f"ARM part {part}")
    return None


def platform_info() -> dict[str, Any]:
    """Machine, OS, Python and board of this process (JSON-able)."""
    libc = platform.libc_ver()
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "release": platform.release(),
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "libc": f"{libc[0]} {libc[1]}".strip() or None,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "device_model": device_model(),
    }


def package_versions() -> dict[str, str | None]:
    """Installed versions of the distributions that matter (``None``: not installed)."""
    out: dict[str, str | None] = {}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def heavy_modules_loaded() -> list[str]:
    """TensorFlow-family top-level modules present in ``sys.modules``."""
    return sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY_MODULES))


def gpu_hints() -> list[str]:
    """Signs that this machine has a usable GPU (device nodes, Vulkan, CUDA providers).

    Used by the ``host`` profile: with no hint at all, ``accelerator="gpu"`` must
    raise; with one, either outcome is accepted and recorded.
    """
    import ctypes.util

    hints = []
    for node in ("/dev/nvidia0", "/dev/nvhost-gpu", "/dev/dri/renderD128", "/dev/kfd"):
        if os.path.exists(node):
            hints.append(node)
    if ctypes.util.find_library("vulkan"):
        hints.append("libvulkan")
    if os.environ.get("EDGEREC_TFLITE_GPU_DELEGATE"):
        hints.append("EDGEREC_TFLITE_GPU_DELEGATE")
    try:
        import onnxruntime as ort

        hints += [
            p
            for p in ort.get_available_providers()
            if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        ]
    except ImportError:
        pass
    return hints


def filesystem_of(path: str | Path) -> dict[str, str] | None:
    """Mount point, device and type of the filesystem holding ``path``."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best: tuple[str, str, str] | None = None
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        dev, mnt, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
        inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
        if inside and (best is None or len(mnt) > len(best[1])):
            best = (dev, mnt, fstype)
    if best is None:
        return None
    return {"device": best[0], "mount": best[1], "type": best[2]}


# ----------------------------------------------------------------------------- bundle
def sha256_file(path: str | Path) -> str:
    """Hex sha256, computed here (not by edgerec) so the check is independent."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shadow_copy(src: Path, dst: Path) -> Path:
    """A copy of a bundle made of symlinks (cheap on an SD card); ``manifest.json``
    is a real copy. Replace a link with a real file to tamper with it."""
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        target = dst / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.as_posix() == "manifest.json":
            target.write_bytes(path.read_bytes())
        else:
            target.symlink_to(path.resolve())
    return dst


def materialize(path: Path) -> bytes:
    """Turn a symlink of a shadow copy into a real file; return its bytes."""
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    return data


def decode_row(row: np.ndarray, item_ids: tuple[str, ...], num_items: int) -> list[str]:
    """Raw item ids of an encoded input row (padding and ``[MASK]`` dropped)."""
    return [item_ids[int(i) - 1] for i in row if 1 <= int(i) <= num_items]


# ----------------------------------------------------------------------------- parity
#: device output vs the bundle's reference output *of the same artifact*
DEFAULT_TOLERANCE: dict[str, dict[str, float | None]] = {
    "fp32": {"max_abs_err": 1e-4, "min_overlap": 0.9},
    "fp16": {"max_abs_err": 1e-2, "min_overlap": 0.9},
    "int8-dynamic": {"max_abs_err": None, "min_overlap": 0.9},
    "int8": {"max_abs_err": None, "min_overlap": 0.9},
}


def gate_for(manifest_data: dict[str, Any], fmt: str, precision: str) -> dict[str, Any]:
    """The converter's quality gate of an artifact (``"<format>/<precision>"`` first)."""
    results = manifest_data.get("gates") or {}
    candidates = (
        results.get("config") if isinstance(results, dict) else None,  # converter's gate result
        (manifest_data.get("recipe") or {}).get("gates"),  # the recipe it ran with
        results,  # a bundle that stores the thresholds directly
    )
    for gates in candidates:
        if not isinstance(gates, dict):
            continue
        for key in (f"{fmt}/{precision}", precision):
            if isinstance(gates.get(key), dict):
                return dict(gates[key])
    return {}


def tolerance_for(
    manifest_data: dict[str, Any], fmt: str, precision: str, min_overlap: float | None = None
) -> dict[str, Any]:
    """Tolerance of a device run against the artifact's own reference output.

    ``max_abs_err``: the per-precision default (fp32 1e-4, fp16 1e-2, int8 modes:
    recorded only), loosened to the manifest's gate when that is wider (ONNX fp16
    has a 5e-2 gate). ``min_overlap``: mean top-10 overlap, default 0.9.
    """
    tol = dict(DEFAULT_TOLERANCE.get(precision, {"max_abs_err": None, "min_overlap": 0.9}))
    gate = gate_for(manifest_data, fmt, precision)
    source = "default"
    gate_err = gate.get("max_abs_err")
    if tol["max_abs_err"] is not None and gate_err is not None and gate_err > tol["max_abs_err"]:
        tol["max_abs_err"] = float(gate_err)
        source = "manifest gate"
    if min_overlap is not None:
        tol["min_overlap"] = min_overlap
    tol["source"] = source
    return tol


def topk_sets(scores: np.ndarray, k: int = TOP_K) -> list[set[int]]:
    """Column indices of the ``k`` best scores of each row."""
    k = min(k, scores.shape[-1])
    part = np.argpartition(-scores, k - 1, axis=-1)[:, :k]
    return [set(map(int, row)) for row in part]


def compare(device: np.ndarray, reference: np.ndarray, k: int = TOP_K) -> dict[str, Any]:
    """Max/mean abs error and top-k overlap (per row and mean) of two score arrays."""
    device = np.asarray(device, np.float64)
    reference = np.asarray(reference, np.float64)
    diff = np.abs(device - reference)
    a, b = topk_sets(device, k), topk_sets(reference, k)
    overlaps = [len(x & y) / len(y) for x, y in zip(a, b, strict=True)]
    return {
        "rows": int(device.shape[0]),
        "max_abs_err": float(diff.max()),
        "mean_abs_err": float(diff.mean()),
        "bit_exact": bool(np.array_equal(device, reference)),
        "top10_overlap": float(np.mean(overlaps)),
        "top10_overlap_min": float(np.min(overlaps)),
        "score_range": [float(reference.min()), float(reference.max())],
    }


# ---------------------------------------------------------------------------- latency
def latency_stats(samples_s: list[float]) -> dict[str, float]:
    """p50/p95/p99/mean/min/max in milliseconds of per-call wall times."""
    ms = np.asarray(samples_s, np.float64) * 1e3
    return {
        "calls": int(ms.size),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p95_ms": round(float(np.percentile(ms, 95)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "min_ms": round(float(ms.min()), 4),
        "max_ms": round(float(ms.max()), 4),
    }


def time_calls(fn, args_cycle: list[Any], runs: int, warmup: int = 5) -> list[float]:
    """Wall time of ``runs`` calls of ``fn(arg)`` cycling through ``args_cycle``."""
    for i in range(warmup):
        fn(args_cycle[i % len(args_cycle)])
    samples = []
    clock = time.perf_counter
    for i in range(runs):
        arg = args_cycle[i % len(args_cycle)]
        t0 = clock()
        fn(arg)
        samples.append(clock() - t0)
    return samples
