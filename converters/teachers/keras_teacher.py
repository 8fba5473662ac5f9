"""``kind = "keras"`` (a ``.keras`` file) and ``kind = "savedmodel"`` (a directory + signature).

Both load in TensorFlow, imported here only. A Keras file with custom layers needs
them importable (registered with ``keras.saving.register_keras_serializable``) —
or export it as a SavedModel, which needs no Python code to load.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgerec._hashing import sha256_file
from edgerec.errors import InputError

from .contract import TeacherContract


def directory_sha256(root: Path) -> str:
    """sha256 over the relative paths and bytes of every file under ``root``."""
    digest = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        digest.update(str(p.relative_to(root)).encode())
        digest.update(sha256_file(p).encode())
    return digest.hexdigest()


def _pick(outputs: object, name: str, where: Path) -> np.ndarray:
    if isinstance(outputs, dict):
        if not name:
            name = sorted(outputs)[0]
        if name not in outputs:
            raise InputError(f"{where}: no output {name!r} (outputs: {', '.join(outputs)})")
        return np.asarray(outputs[name])
    if isinstance(outputs, (list, tuple)):
        if name:
            raise InputError(f"{where}: outputs are unnamed; leave output.name empty")
        return np.asarray(outputs[0])
    return np.asarray(outputs)


class KerasTeacher:
    """A :class:`~.base.TeacherRuntime` over a Keras 3 ``.keras`` model."""

    def __init__(self, contract: TeacherContract) -> None:
        self.path = contract.model_path
        if not self.path.is_file():
            raise InputError(f"{self.path}: Keras teacher file not found (key 'path')")
        import keras

        try:
            self.model = keras.models.load_model(self.path, compile=False)
        except Exception as exc:  # keras raises many types for bad archives
            raise InputError(f"{self.path}: cannot load the Keras teacher ({exc})") from None
        self.contract = contract
        names = [t.name.split(":")[0] for t in self.model.inputs]
        wanted = [contract.input.name, *(e.name for e in contract.extra_inputs)]
        if len(names) == 1:
            self.names = None  # single input: fed positionally, whatever its name
        else:
            missing = [w for w in wanted if w not in names]
            if missing:
                raise InputError(f"{self.path}: no input(s) {missing} (inputs: {names})")
            self.names = names
        shape = tuple(self.model.inputs[0].shape)
        self._shape = tuple(None if d is None else int(d) for d in shape)

    def input_shape(self) -> tuple[int | None, ...]:
        return self._shape

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.names is None:
            args: object = feeds[self.contract.input.name]
        else:
            args = {n: feeds[n] for n in self.names}
        try:
            outputs = self.model(args, training=False)
        except Exception as exc:
            raise InputError(f"{self.path}: the Keras teacher failed on a batch ({exc})") from None
        return _pick(outputs, self.contract.output.name, self.path)

    def fingerprint(self) -> str:
        return sha256_file(self.path)


class SavedModelTeacher:
    """A :class:`~.base.TeacherRuntime` over a TF SavedModel signature."""

    def __init__(self, contract: TeacherContract) -> None:
        self.path = contract.model_path
        if not (self.path / "saved_model.pb").is_file():
            raise InputError(f"{self.path}: not a SavedModel directory (no saved_model.pb)")
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(self.path))
        except Exception as exc:
            raise InputError(f"{self.path}: cannot load the SavedModel ({exc})") from None
        if contract.signature not in loaded.signatures:
            raise InputError(
                f"{self.path}: no signature {contract.signature!r} "
                f"(signatures: {', '.join(loaded.signatures)}); fix 'signature'"
            )
        self._loaded = loaded  # keeps the variables alive
        self.fn = loaded.signatures[contract.signature]
        self.contract = contract
        specs = self.fn.structured_input_signature[1]
        wanted = [contract.input.name, *(e.name for e in contract.extra_inputs)]
        missing = [w for w in wanted if w not in specs]
        if missing or len(specs) != len(wanted):
            raise InputError(
                f"{self.path}: signature {contract.signature!r} takes {sorted(specs)}; the "
                f"contract feeds {wanted} (fix input.name / extra_inputs)"
            )
        main = specs[contract.input.name]
        if main.dtype.name != contract.input.dtype:
            raise InputError(
                f"{self.path}: input {contract.input.name!r} is {main.dtype.name}, "
                f"input.dtype says {contract.input.dtype!r}"
            )
        self._shape = tuple(main.shape.as_list()) if main.shape.rank is not None else None
        self._tf = tf

    def input_shape(self) -> tuple[int | None, ...] | None:
        return self._shape

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            outputs = self.fn(**{k: self._tf.constant(v) for k, v in feeds.items()})
        except Exception as exc:
            raise InputError(f"{self.path}: the SavedModel failed on a batch ({exc})") from None
        return _pick(
            {k: v.numpy() for k, v in outputs.items()}, self.contract.output.name, self.path
        )

    def fingerprint(self) -> str:
        return directory_sha256(self.path)
