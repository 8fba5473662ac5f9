"""A tiny teacher and a tiny converter-made bundle, for tests here and elsewhere.

The runtime tests consume converter-made bundles through :func:`build_tiny_bundle`::

    from tests.converters.tiny import build_tiny_bundle

    bundle_dir = build_tiny_bundle(tmp_path / "bundle")   # ~1-2 min on 2 cores

Everything is generated in the test session: a synthetic sequential log (users
walk the catalog in +1 steps, sometimes jumping), written as a CSV so that the
CLI's ``--data`` can load it, a tiny BERT4Rec teacher (d=32, 1 block, L=12) and a
tiny student config (d=16). Teachers and bundles are cached per process by
their arguments, so several tests share one build.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

TEACHER_CONFIG = {
    "model": {
        "max_len": 12,
        "d_model": 32,
        "num_blocks": 1,
        "num_heads": 2,
        "ffn_dim": 64,
        "dropout": 0.1,
        "attention_dropout": 0.1,
    },
    "train": {
        "epochs": 20,
        "batch_size": 64,
        "patience": 20,
        "seed": 3,
        "mask_prob": 0.3,
        "learning_rate": 0.003,
    },
}

#: converter config of the tiny bundle (every pass, every target and precision)
TINY_CONVERT = {
    "student": {
        "d_model": 16,
        "num_blocks": 1,
        "num_heads": 2,
        "ffn_dim": 32,
        "dropout": 0.1,
        "attention_dropout": 0.1,
    },
    "distil": {
        "epochs": 20,
        "patience": 20,
        "batch_size": 64,
        "seed": 7,
        "mask_prob": 0.3,
        "learning_rate": 0.005,
    },
    "export": {"calibration_samples": 100},
    "validate": {
        "num_sequences": 200,
        "latency_runs": 20,
        "reference_rows": 4,
        "bootstrap_resamples": 200,
    },
    "gates": {"quality_min_ratio": 0.8},
}

_CACHE: dict[str, Path] = {}
_ROOT: list[Path] = []


def _root() -> Path:
    if not _ROOT:
        _ROOT.append(Path(tempfile.mkdtemp(prefix="edgerec-tiny-")))
    return _ROOT[0]


def write_walk_log(
    path: Path, num_users: int = 300, num_items: int = 100, length: int = 20, seed: int = 0
) -> Path:
    """A CSV ``user,item,timestamp`` log of catalog walks (mostly +1 steps)."""
    rng = np.random.default_rng(seed)
    lines = ["user,item,timestamp"]
    for u in range(num_users):
        pos = int(rng.integers(num_items))
        for t in range(length):
            lines.append(f"u{u},i{pos},{1_000_000 + t}")
            pos = int(rng.integers(num_items)) if rng.random() < 0.1 else (pos + 1) % num_items
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_data() -> Path:
    """The tiny CSV log (cached)."""
    if "data" not in _CACHE:
        _CACHE["data"] = write_walk_log(_root() / "walk.csv")
    return _CACHE["data"]


def tiny_split():
    from edgerec.data import leave_one_out, load_dataset

    return leave_one_out(load_dataset(tiny_data()))


def build_tiny_teacher(out: Path | None = None) -> Path:
    """Train and save the tiny teacher on :func:`tiny_data` (cached per process)."""
    if "teacher" not in _CACHE:
        from edgerec.teacher.artifacts import save_teacher
        from edgerec.teacher.config import TeacherConfig
        from edgerec.teacher.train import train_teacher

        config = TeacherConfig.from_json(TEACHER_CONFIG, "tiny teacher")
        split = tiny_split()
        result = train_teacher(split, config, progress=False)
        meta = {"dataset": {"name": "walk"}, "seed": 3, "best_epoch": result.best_epoch}
        _CACHE["teacher"] = save_teacher(
            _root() / "teacher", result.model, split.vocab, config, meta, []
        )
    if out is None:
        return _CACHE["teacher"]
    shutil.copytree(_CACHE["teacher"], out, dirs_exist_ok=True)
    return Path(out)


def tiny_config(**tables):
    """The tiny :class:`ConvertConfig`, with tables merged over :data:`TINY_CONVERT`."""
    from edgerec.converters.config import ConvertConfig

    data = {k: dict(v) for k, v in TINY_CONVERT.items()}
    for table, values in tables.items():
        data.setdefault(table, {}).update(values)
    import tomllib
    from importlib import resources

    base = tomllib.loads(resources.files("edgerec.converters").joinpath("default.toml").read_text())
    for table, values in data.items():
        base.setdefault(table, {}).update(values)
    return ConvertConfig.from_json(base, "tiny config")


def build_tiny_bundle(out: Path, **config_tables) -> Path:
    """A complete converter-made bundle at ``out`` (copied from a per-process cache).

    ``config_tables`` override :data:`TINY_CONVERT` tables (e.g.
    ``export={"targets": ["tflite"]}``); each distinct override is built once.
    """
    import json

    key = "bundle:" + json.dumps(config_tables, sort_keys=True)
    if key not in _CACHE:
        from edgerec.converters.pipeline import convert

        target = _root() / f"bundle{len(_CACHE)}"
        # allow_weak_teacher: on a +1 walk the transition-count baseline beats this
        # 20-epoch teacher (the teacher gate is tested in tests/teacher/test_gate_cli.py)
        convert(
            build_tiny_teacher(),
            tiny_split(),
            target,
            tiny_config(**config_tables),
            progress=False,
            allow_weak_teacher=True,
        )
        _CACHE[key] = target
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(_CACHE[key], out)
    return out


def toml_text(tables: dict) -> str:
    """A TOML document for flat tables of scalars, lists and inline tables (test configs)."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return repr(v)

    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [
            f'"{k}" = {value(v)}' if "/" in k else f"{k} = {value(v)}" for k, v in values.items()
        ]
    return "\n".join(lines) + "\n"
