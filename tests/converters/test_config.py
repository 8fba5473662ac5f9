"""Converter configuration: defaults, TOML overrides, CLI overrides, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgerec.converters.config import STUDENT_DEFAULTS, ConvertConfig, Gate, Precision, Target
from edgerec.errors import InputError
from edgerec.teacher.config import ModelConfig


def test_defaults_match_the_issue() -> None:
    cfg = ConvertConfig.defaults()
    assert cfg.student.d_model == 64 and cfg.student.num_blocks == 2
    assert cfg.student.max_len is None and cfg.student.mask_value == -16.0
    assert cfg.export.targets == (Target.TFLITE, Target.ONNX)
    assert set(cfg.export.precisions) == set(Precision)
    assert cfg.export.onnx_opset >= 17
    g = cfg.gates
    assert g.gate_for("tflite", "fp32") == Gate(1e-4, 1.0)
    assert g.gate_for("tflite", "fp16") == Gate(1e-2, 0.995)
    assert g.gate_for("tflite", "int8-dynamic").min_overlap == 0.95
    assert g.gate_for("tflite", "int8").experimental
    assert g.gate_for("onnx", "fp16").max_abs_err == 5e-2  # format/precision override
    assert g.quality_min_ratio == 0.97
    assert cfg.validation.num_sequences >= 200


def test_student_is_the_teacher_model_config_with_student_defaults() -> None:
    cfg = ConvertConfig.defaults()
    assert isinstance(cfg.student, ModelConfig) and cfg.student == STUDENT_DEFAULTS
    assert cfg.student.max_len is None  # the teacher's length
    assert cfg.student.d_model < ModelConfig().d_model


def test_fp32_is_always_built() -> None:
    cfg = ConvertConfig.defaults().with_overrides(precisions="int8-dynamic")
    assert cfg.export.all_precisions == (Precision.FP32, Precision.INT8_DYNAMIC)


def test_toml_overrides_a_subset(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[student]\nd_model = 32\nmax_len = 20\n[export]\ntargets = ["onnx"]\n'
        'precisions = ["fp32", "fp16"]\n[gates]\nquality_min_ratio = 0.9\n'
        '"tflite/int8" = { min_overlap = 0.8 }\n'
    )
    cfg = ConvertConfig.from_toml(path)
    assert cfg.student.d_model == 32 and cfg.student.max_len == 20
    assert cfg.student.num_blocks == 2  # default kept
    assert cfg.export.targets == (Target.ONNX,)
    assert cfg.gates.quality_min_ratio == 0.9
    assert cfg.gates.gate_for("tflite", "int8") == Gate(None, 0.8)
    assert cfg.gates.gate_for("tflite", "fp32") == Gate(1e-4, 1.0)
    assert ConvertConfig.from_json(cfg.to_json()) == cfg  # JSON round trip


@pytest.mark.parametrize(
    "text, match",
    [
        ("[student]\nwidth = 3\n", "unknown key 'width'"),
        ("[bogus]\nx = 1\n", "unknown table"),
        ('[export]\nprecisions = ["int4"]\n', "unknown precision 'int4'"),
        ('[export]\ntargets = ["coreml"]\n', "unknown target 'coreml'"),
        ("[student]\nmax_len = 0\n", "max_len must be at least 2"),
        ("[student]\nd_model = 30\nnum_heads = 4\n", "divisible"),
        ("[student]\nmask_value = -1e9\n", "finite negative"),
        ("[distil]\nalpha = 1.5\n", "alpha"),
        ("[distil]\nsampled_negatives = -1\n", "sampled_negatives"),
        ("[distil]\nteacher_top_k = 0\n", "teacher_top_k"),
        ("[distil]\nnegative_distortion = 2.0\n", "negative_distortion"),
        ("[distil]\ninit_from_teacher = 1\n", "must be bool"),
        ("[distil]\nema_momentum = 1.0\n", "ema_momentum must be in"),
        ("[student]\ngelu_approximate = false\n", "gelu_approximate must be true"),
        ("[student]\nd_model = 32\nwidth = 3\n", "bad.toml:3: unknown key 'width' in"),
        ("[gates]\nint8 = { min_overlap = 1.5 }\n", "min_overlap"),
        ('[gates]\n"tflite/int3" = { min_overlap = 0.5 }\n', "unknown precision"),
        ('[student]\nd_model = "big"\n', "must be int"),
        ("not toml [", "invalid TOML"),
    ],
)
def test_bad_config_is_an_input_error(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        ConvertConfig.from_toml(path)


def test_cli_style_overrides() -> None:
    cfg = ConvertConfig.defaults().with_overrides(
        seed=5, epochs=3, targets="tflite", precisions="fp32,fp16", gpu=False, max_len=20
    )
    assert cfg.distil.seed == 5 and cfg.distil.epochs == 3
    assert cfg.export.targets == (Target.TFLITE,) and not cfg.export.gpu
    assert cfg.student.max_len == 20
    assert (
        ConvertConfig.defaults().with_overrides(sampled_negatives=512).distil.sampled_negatives
        == 512
    )
    with pytest.raises(InputError, match="sampled_negatives"):
        ConvertConfig.defaults().with_overrides(sampled_negatives=-5)
    with pytest.raises(InputError, match="unknown precision"):
        ConvertConfig.defaults().with_overrides(precisions="fp32,fp8")
    with pytest.raises(InputError, match="unknown target"):
        ConvertConfig.defaults().with_overrides(targets="tflite,tfjs")
    with pytest.raises(InputError, match="max_len"):
        ConvertConfig.defaults().with_overrides(max_len=0)
    with pytest.raises(InputError, match="config file not found"):
        ConvertConfig.from_toml("/nonexistent/convert.toml")


def test_config_import_is_tensorflow_free() -> None:
    import subprocess
    import sys

    code = (
        "import sys, edgerec.converters, edgerec.converters.config,"
        " edgerec.converters.passes.gpu_ops,"
        " edgerec.runtime.tflite_schema,"
        " edgerec.converters.passes.validate, edgerec.converters.report, edgerec.converters.cli;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('tensorflow', 'keras', 'tf2onnx', 'onnx')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
