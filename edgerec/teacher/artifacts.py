"""The teacher directory that ``edgerec train`` writes and the converter reads.

Layout::

    runs/teacher/
      teacher.json     format, config, dataset summary, best epoch, fingerprint
      vocab.json       item id <-> index (edgerec.vocab)
      model.keras      the best-epoch Keras model
      saved_model/     TF SavedModel with a static [1, L] int32 signature
      history.json     per-epoch loss and validation metrics
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgerec import __version__
from edgerec._hashing import sha256_file as file_sha256
from edgerec.errors import InputError
from edgerec.features import FeatureSpec
from edgerec.teacher.config import TeacherConfig
from edgerec.vocab import Vocab

TEACHER_FORMAT = "edgerec-teacher/1"
REQUIRED_FILES = ("teacher.json", "vocab.json", "model.keras")


@dataclass
class TeacherInfo:
    """Everything in ``teacher.json`` plus the directory it came from."""

    path: Path
    config: TeacherConfig
    vocab: Vocab
    meta: dict[str, Any]

    @property
    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec(max_len=self.config.model.max_len, num_items=self.vocab.num_items)

    @property
    def fingerprint(self) -> str:
        """sha256 of the best-epoch ``model.keras``."""
        return str(self.meta["fingerprint"])


def save_teacher(
    out_dir: str | Path,
    model: Any,
    vocab: Vocab,
    config: TeacherConfig,
    meta: dict[str, Any],
    history: list[dict[str, Any]],
    export_saved_model: bool = True,
) -> Path:
    """Write a teacher directory atomically (temp dir in the same parent, then rename)."""
    from edgerec.teacher.model import serving_signature

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save(tmp / "model.keras")
        if export_saved_model:
            model.export(
                str(tmp / "saved_model"),
                format="tf_saved_model",
                input_signature=serving_signature(config.model.max_len),
                verbose=False,
            )
        vocab.save(tmp / "vocab.json")
        (tmp / "history.json").write_text(json.dumps(history, indent=1))
        info = {
            "format": TEACHER_FORMAT,
            "edgerec_version": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "config": config.to_json(),
            "feature_spec": FeatureSpec(config.model.max_len, vocab.num_items).to_json(),
            "vocab_sha256": vocab.sha256(),
            "fingerprint": file_sha256(tmp / "model.keras"),
            **meta,
        }
        (tmp / "teacher.json").write_text(json.dumps(info, indent=2))
        if out.exists():
            backup = out.with_name(f".{out.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(out, backup)
            os.replace(tmp, out)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_teacher_info(path: str | Path) -> TeacherInfo:
    """Read and check a teacher directory without loading TensorFlow."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: teacher directory not found (run 'edgerec train' first)")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise InputError(f"{path}: not a teacher directory, missing {', '.join(missing)}")
    try:
        meta = json.loads((path / "teacher.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path / 'teacher.json'}: corrupt JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != TEACHER_FORMAT:
        raise InputError(f"{path / 'teacher.json'}: field 'format' must be {TEACHER_FORMAT!r}")
    vocab = Vocab.load(path / "vocab.json")
    if meta.get("vocab_sha256") != vocab.sha256():
        raise InputError(f"{path / 'vocab.json'}: does not match the hash in teacher.json")
    config = TeacherConfig.from_json(meta.get("config", {}), str(path / "teacher.json"))
    return TeacherInfo(path=path, config=config, vocab=vocab, meta=meta)


def load_teacher(path: str | Path, verify: bool = True) -> tuple[TeacherInfo, Any]:
    """Read a teacher directory and load its Keras model (imports TensorFlow).

    With ``verify`` the model file's sha256 must match the recorded fingerprint.
    """
    info = read_teacher_info(path)
    model_path = info.path / "model.keras"
    if verify and file_sha256(model_path) != info.fingerprint:
        raise InputError(f"{model_path}: sha256 does not match teacher.json (file changed?)")
    import keras

    import edgerec.teacher.model  # noqa: F401  (registers the custom layers)

    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as exc:  # keras raises many types for corrupt archives
        raise InputError(f"{model_path}: cannot load Keras model ({exc})") from None
    return info, model
