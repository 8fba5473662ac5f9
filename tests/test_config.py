"""The shared config loader: typed keys, layering, and errors that say where."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from edgerec.config import Source, load, load_toml, parse_with, read_toml, toml_key
from edgerec.errors import InputError


class Mode(Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclass(frozen=True)
class Inner:
    size: int = 4
    rate: float = 0.5
    on: bool = False
    name: str = "x"
    limit: int | None = None
    mode: Mode = Mode.FAST
    sizes: tuple[int, ...] = (1, 2)
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.size < 1:
            raise InputError(f"inner.size must be >= 1 (got {self.size})")


def _upper(value: Any, current: Any, source: Source, path: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise InputError(f"{source.where(path)} must be a word")
    return value.upper()


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    other: Inner = field(default_factory=lambda: Inner(size=9), metadata=toml_key("second"))
    label: str = field(default="a", metadata=parse_with(_upper))

    def validate(self) -> None:
        self.inner.validate()


@dataclass(frozen=True)
class Required:
    count: int
    scale: float = 1.0


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_typed_keys_are_converted() -> None:
    cfg = load(
        Inner,
        {
            "size": 8.0,
            "rate": 1,
            "on": True,
            "limit": 3,
            "mode": "SLOW",
            "sizes": [3],
            "extra": {"a": 1},
        },
        "test",
    )
    assert cfg.size == 8 and isinstance(cfg.size, int)
    assert cfg.rate == 1.0 and isinstance(cfg.rate, float)
    assert cfg.on is True and cfg.limit == 3 and cfg.mode is Mode.SLOW
    assert cfg.sizes == (3,) and cfg.extra == {"a": 1}
    assert load(Inner, {"limit": None}, "test").limit is None


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"size": 2.5}, "test: size must be int (got 2.5)"),
        ({"size": True}, "test: size must be int (got True)"),
        ({"rate": False}, "test: rate must be float (got False)"),
        ({"on": 1}, "test: on must be bool (got 1)"),
        ({"name": 3}, "test: name must be str (got 3)"),
        ({"limit": "3"}, "test: limit must be int (got '3')"),
        ({"mode": "medium"}, "test: mode must be one of fast, slow (got 'medium')"),
        ({"sizes": 3}, "test: sizes must be a list (got 3)"),
        ({"extra": 3}, "test: extra must be a table (got 3)"),
        ({"sise": 3}, "test: unknown key 'sise' (known: size, rate,"),
        ({"size": 0}, "test: inner.size must be >= 1 (got 0)"),
    ],
)
def test_mapping_errors_name_the_key(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(InputError) as info:
        load(Inner, data, "test")
    assert str(info.value).startswith(needle)


def test_missing_required_keys() -> None:
    assert load(Required, {"count": 2}, "round").count == 2
    with pytest.raises(InputError, match=r"^round: missing key\(s\) count"):
        load(Required, {"scale": 2}, "round")


def test_file_errors_carry_the_line(tmp_path: Path) -> None:
    cases = {
        "[inner]\nsize = 2\nsise = 3\n": "c.toml:3: unknown key 'sise' in [inner] (known: size,",
        "label = 'b'\n\n[inenr]\nsize = 2\n": "c.toml:3: unknown table [inenr] (known: inner,",
        "[inner]\nrate = 'fast'\n": "c.toml:2: inner.rate must be float (got 'fast')",
        "[second]\non = 1\n": "c.toml:2: second.on must be bool (got 1)",
        "[inner]\nname = 'a'\nsize = 0\n": "c.toml:3: inner.size must be >= 1 (got 0)",
        "inner = { size = 2, sise = 1 }\n": "c.toml:1: unknown key 'sise' in [inner]",
        "label = 3\n": "c.toml:1: label must be a word",
        "inner = 3\n": "c.toml:1: inner must be a table (got 3)",
    }
    for text, needle in cases.items():
        path = _write(tmp_path, text)
        with pytest.raises(InputError) as info:
            load_toml(Outer, path)
        message = str(info.value).replace(str(path), "c.toml")
        assert message.startswith(needle), (text, message)


def test_layers_keep_the_base(tmp_path: Path) -> None:
    base = load(Outer, {"inner": {"size": 5, "name": "base"}, "second": {"rate": 0.1}}, "defaults")
    cfg = load_toml(Outer, _write(tmp_path, "label = 'z'\n[inner]\nname = 'user'\n"), base)
    assert cfg.inner == Inner(size=5, name="user")
    assert cfg.other == Inner(size=9, rate=0.1)
    assert cfg.label == "Z"


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="config file not found"):
        read_toml(tmp_path / "missing.toml")
    with pytest.raises(InputError, match=r"invalid TOML \(.*line 1"):
        read_toml(_write(tmp_path, "[inner\n"))
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"name = '\xe9'\n")
    with pytest.raises(InputError, match="invalid TOML"):
        read_toml(bad)


def test_teacher_converter_and_coordinator_speak_alike(tmp_path: Path) -> None:
    from edgerec.converters.config import ConvertConfig
    from edgerec.coordinator.config import RoundConfig
    from edgerec.teacher.config import TeacherConfig

    teacher = _write(tmp_path, "[model]\nd_model = 32\nwidth = 3\n")
    with pytest.raises(InputError, match=r"c\.toml:3: unknown key 'width' in \[model\]"):
        TeacherConfig.from_toml(teacher)
    student = _write(tmp_path, "[student]\nd_model = 32\nwidth = 3\n")
    with pytest.raises(InputError, match=r"c\.toml:3: unknown key 'width' in \[student\]"):
        ConvertConfig.from_toml(student)
    with pytest.raises(InputError, match="^round config: unknown key 'width'"):
        RoundConfig.from_json({"cohort_target": 5, "min_cohort": 2, "width": 3})
    with pytest.raises(InputError, match="^round config: cohort_target must be int"):
        RoundConfig.from_json({"cohort_target": "5", "min_cohort": 2})
