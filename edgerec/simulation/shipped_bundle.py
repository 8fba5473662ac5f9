"""The simulation's shipped model: teacher + converter on the pre-cut-off log.

:func:`build_bundle` trains a BERT4Rec teacher on the events before the cut-off
(:mod:`edgerec.teacher`) and converts it with the real release pipeline
(:func:`edgerec.converters.pipeline.convert`) into a bundle that the simulated devices
open with :class:`edgerec.runtime.Recommender`. TensorFlow is imported only here, and
only when a bundle has to be built.

To keep a simulation's CPU bounded the defaults are smaller than the product's
(``edgerec/teacher/default.toml``, ``edgerec/converters/default.toml``):
:data:`SIM_TEACHER` (d=64 teacher, at most 60 epochs) and :data:`SIM_CONVERT` (d=48
student, at most 60 distillation epochs, TFLite fp32 + int8-dynamic only, no GPU
variant, quality gate 0.9 of the teacher). Either can be overridden by a TOML file with
the same tables.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from edgerec.data.dataset import Interactions
from edgerec.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["SIM_CONVERT", "SIM_TEACHER", "build_bundle", "load_overrides"]

#: teacher config of the simulation (over edgerec/teacher/default.toml)
SIM_TEACHER: dict[str, Any] = {
    "model": {"d_model": 64, "num_heads": 2, "ffn_dim": 256},
    # min_steps 0: early stopping in epochs as the recorded simulation runs had it
    "train": {"epochs": 60, "patience": 10, "min_steps": 0},
}

#: converter config of the simulation (over edgerec/converters/default.toml)
SIM_CONVERT: dict[str, Any] = {
    "student": {"d_model": 48, "ffn_dim": 192},
    # at most 60 epochs (early stopping on validation): 20 left the ML-100K student
    # still improving and below the quality gate
    "distil": {"epochs": 60, "patience": 6},
    "export": {"targets": ["tflite"], "precisions": ["fp32", "int8-dynamic"], "gpu": False},
    "validate": {
        "num_sequences": 100,
        "latency_runs": 20,
        "max_eval_users": 0,
        "bootstrap_resamples": 200,
    },
    "gates": {"quality_min_ratio": 0.9},
}


def load_overrides(path: str | Path | None, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the tables of the TOML file at ``path`` merged over it."""
    out = copy.deepcopy(base)
    if path is None:
        return out
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML ({exc})") from None
    return _merge(out, data)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _defaults(package: str) -> dict[str, Any]:
    return tomllib.loads(resources.files(package).joinpath("default.toml").read_text())


def build_bundle(
    pre: Interactions,
    out_dir: str | Path,
    *,
    teacher: dict[str, Any] | None = None,
    convert: dict[str, Any] | None = None,
    seed: int = 42,
    progress: bool = True,
    name: str = "pre-cutoff",
) -> tuple[Path, dict[str, Any]]:
    """Train a teacher on ``pre`` and convert it; returns ``(bundle dir, summary)``.

    Writes ``out_dir/teacher``, ``out_dir/bundle`` and ``out_dir/build.json``.

    Args:
        pre: the pre-cut-off log.
        out_dir: where to write (replaced if it exists).
        teacher: teacher config tables over ``edgerec/teacher/default.toml``
            (default :data:`SIM_TEACHER`).
        convert: converter config tables over ``edgerec/converters/default.toml``
            (default :data:`SIM_CONVERT`).
        seed: seed of the teacher and the distillation.
        progress: progress bars.
        name: dataset name recorded in the artifacts.
    """
    from edgerec._deps import require

    for module in ("tensorflow", "ai_edge_litert"):
        require(module, "convert")
    from edgerec.converters.config import ConvertConfig
    from edgerec.converters.pipeline import convert as run_convert
    from edgerec.data.preprocess import build_sequences, leave_one_out
    from edgerec.teacher.artifacts import save_teacher
    from edgerec.teacher.config import TeacherConfig
    from edgerec.teacher.train import train_teacher

    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tables = _merge(_defaults("edgerec.teacher"), copy.deepcopy(teacher or SIM_TEACHER))
    tables["train"]["seed"] = seed
    tcfg = TeacherConfig.from_json(tables, "simulation teacher config")
    ctables = _merge(_defaults("edgerec.converters"), copy.deepcopy(convert or SIM_CONVERT))
    ctables["distil"]["seed"] = seed
    ccfg = ConvertConfig.from_json(ctables, "simulation converter config")

    dataset = build_sequences(pre, min_user_interactions=3, name=name)
    split = leave_one_out(dataset)
    log.info(
        "shipped model: teacher on %d users, %d items, %d pre-cut-off interactions",
        dataset.num_users,
        dataset.num_items,
        dataset.num_interactions,
    )
    t0 = time.perf_counter()
    result = train_teacher(split, tcfg, progress=progress)
    teacher_dir = out / "teacher"
    meta = {
        "dataset": {
            "name": name,
            "num_users": dataset.num_users,
            "num_items": dataset.num_items,
            "num_interactions": dataset.num_interactions,
        },
        "seed": seed,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "best_valid": result.best_valid,
        "train_seconds": round(result.seconds, 1),
    }
    save_teacher(teacher_dir, result.model, split.vocab, tcfg, meta, [])
    teacher_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    # allow_weak_teacher: the simulation's small teacher need not beat counting baselines
    converted = run_convert(
        teacher_dir, split, out / "bundle", ccfg, progress=progress, allow_weak_teacher=True
    )
    summary = {
        "teacher_config": tcfg.to_json(),
        "convert_config": ccfg.to_json(),
        "teacher": meta,
        "teacher_seconds": round(teacher_s, 1),
        "convert_seconds": round(time.perf_counter() - t1, 1),
        "quality": converted.summary.get("quality", {}),
        "status": converted.status,
    }
    (out / "build.json").write_text(json.dumps(summary, indent=2, default=str))
    return out / "bundle", summary
