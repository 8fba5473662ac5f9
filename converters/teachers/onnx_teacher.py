"""``kind = "onnx"``: an ONNX file (what PyTorch, RecBole and tf2onnx export), in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgerec._hashing import sha256_file
from edgerec.errors import InputError

from .contract import TeacherContract

_ONNX_DTYPES = {"tensor(int32)": "int32", "tensor(int64)": "int64"}


class OnnxTeacher:
    """A :class:`~.base.TeacherRuntime` over an ``onnxruntime.InferenceSession`` (CPU)."""

    def __init__(self, contract: TeacherContract, threads: int = 0) -> None:
        import onnxruntime as ort

        self.path = contract.model_path
        if not self.path.is_file():
            raise InputError(f"{self.path}: ONNX teacher file not found (key 'path')")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InputError(f"{self.path}: ONNX Runtime cannot load the teacher ({exc})") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        wanted = [contract.input.name, *(e.name for e in contract.extra_inputs)]
        for name in wanted:
            if name not in inputs:
                raise InputError(
                    f"{self.path}: the model has no input {name!r} (inputs: {', '.join(inputs)}); "
                    "fix input.name / extra_inputs"
                )
        extra = sorted(set(inputs) - set(wanted))
        if extra:
            raise InputError(
                f"{self.path}: the model also needs input(s) {extra}; describe them in "
                "[[extra_inputs]]"
            )
        onnx_type = inputs[contract.input.name].type
        declared = _ONNX_DTYPES.get(onnx_type)
        if declared is None or declared != contract.input.dtype:
            raise InputError(
                f"{self.path}: input {contract.input.name!r} is {onnx_type}, "
                f"input.dtype says {contract.input.dtype!r}"
            )
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = contract.output.name or outputs[0]
        if self.output not in outputs:
            raise InputError(
                f"{self.path}: the model has no output {self.output!r} "
                f"(outputs: {', '.join(outputs)}); fix output.name"
            )
        self._shape = tuple(
            d if isinstance(d, int) else None for d in inputs[contract.input.name].shape
        )

    def input_shape(self) -> tuple[int | None, ...]:
        return self._shape

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            return self.session.run([self.output], feeds)[0]
        except Exception as exc:
            raise InputError(
                f"{self.path}: ONNX Runtime failed on a teacher batch ({exc})"
            ) from None

    def fingerprint(self) -> str:
        return sha256_file(Path(self.path))
