"""Typed configuration: TOML files (or JSON mappings) loaded into frozen dataclasses.

Every configurable part of edgerec (teacher, converter, coordinator rounds, simulation)
describes its settings as frozen dataclasses and loads them here, so that the same
input mistakes get the same answer everywhere:

- a table is a dataclass field whose type is a dataclass; its TOML name is the field
  name unless ``field(metadata=toml_key("..."))`` says otherwise;
- keys are typed by their annotation: ``bool`` takes only ``true``/``false``; ``int``
  takes integers (a whole float like ``32.0`` too) but not booleans; ``float`` takes
  any number but not booleans; ``str`` takes strings; ``X | None`` also takes ``None``
  (JSON ``null``; TOML has none); an :class:`~enum.Enum` takes one of its values (any case);
  ``tuple[X, ...]`` takes a list; ``dict`` takes a table as it is;
- a field may bring its own parser (``field(metadata=parse_with(fn))``) for values with
  a grammar of their own;
- unknown tables and keys are errors, never ignored;
- every error is an :class:`~edgerec.errors.InputError` whose message starts with where
  the problem is: the file, its line when the value came from a TOML file, and the
  table and key, in the same words everywhere (``bad.toml:3: unknown key 'd_modle' in
  [model] (known: ...)``, ``bad.toml:2: model.d_model must be int (got 'big')``).

Loading is layered: :func:`load` applies a mapping over a ``base`` object (the
dataclass defaults when there is none), so a user file goes over the documented
``default.toml`` without merging dictionaries, and each key keeps the file it came
from for its error message. Value rules (ranges, divisibility) stay with each
dataclass, in a ``validate()`` method or ``__post_init__``; their errors get the
source's name in front, and the line of the key when the message starts with it
(``model.max_len must be ...``).
"""

from __future__ import annotations

import dataclasses
import enum
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from edgerec.errors import InputError

__all__ = [
    "Source",
    "TomlConfig",
    "build",
    "load",
    "load_package_defaults",
    "load_toml",
    "parse_with",
    "read_toml",
    "scalar",
    "toml_key",
]

T = TypeVar("T")

_PARSER = "edgerec.config.parse"
_KEY = "edgerec.config.key"


def toml_key(name: str) -> dict[str, Any]:
    """Field metadata: the table or key is spelled ``name`` in files (not the field name)."""
    return {_KEY: name}


def parse_with(parser: Callable[[Any, Any, Source, tuple[str, ...]], Any]) -> dict[str, Any]:
    """Field metadata: the value is parsed by ``parser(value, current, source, path)``.

    ``current`` is the value it replaces (the base's), ``path`` the table/key it sits at
    (``source.where(path)`` names it in an error); the parser returns the new value.
    """
    return {_PARSER: parser}


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a mapping came from: a name for messages and, for a TOML file, its text.

    With the text, locations carry the line of the table or key they name.
    """

    name: str
    text: str | None = None

    def at(self, path: tuple[str, ...] = ()) -> str:
        """``name`` or ``name:line``: the line of the table/key ``path`` when known."""
        line = _line_of(self.text, path) if self.text is not None and path else None
        return self.name if line is None else f"{self.name}:{line}"

    def where(self, path: tuple[str, ...]) -> str:
        """``name[:line]: table.key``, how a message names the value at ``path``."""
        return f"{self.at(path)}: {'.'.join(path)}" if path else self.name


def read_toml(path: str | Path) -> tuple[dict[str, Any], Source]:
    """Parse the TOML file at ``path``; returns its tables and a :class:`Source`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: invalid TOML ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML ({exc})") from None
    return data, Source(str(path), text)


def load(
    cls: type[T],
    data: Mapping[str, Any],
    source: Source | str,
    base: T | None = None,
    *,
    path: tuple[str, ...] = (),
) -> T:
    """An instance of the dataclass ``cls``: ``base`` (or the defaults) with ``data`` over it.

    Nested dataclass fields are tables and load recursively over the base's table.
    The object is validated (its ``validate()`` when it has one, and ``__post_init__``)
    and returned; every problem is an :class:`InputError` naming ``source``.
    """
    source = source if isinstance(source, Source) else Source(source)
    try:
        obj = build(cls, data, source, base, path)
        validate = getattr(obj, "validate", None)
        if callable(validate):
            validate()
    except InputError as exc:
        message = str(exc)
        if message.startswith(source.name):
            raise
        named = _NAMED_KEY.match(message)  # value rules name their key: "model.max_len ..."
        at = source.at(tuple(named.group(1).split("."))) if named else source.name
        raise InputError(f"{at}: {message}") from None
    return obj


def load_toml(cls: type[T], path: str | Path, base: T | None = None) -> T:
    """:func:`load` of the TOML file at ``path`` (over ``base``)."""
    data, source = read_toml(path)
    return load(cls, data, source, base)


def load_package_defaults(cls: type[T], package: str) -> T:
    """:func:`load` of the ``default.toml`` shipped inside ``package``."""
    text = resources.files(package).joinpath("default.toml").read_text(encoding="utf-8")
    return load(cls, tomllib.loads(text), Source("default.toml", text))


class TomlConfig:
    """Mixin of a top-level config dataclass documented by a ``default.toml``.

    ``defaults_package`` names the package that ships the ``default.toml``; a user
    file goes over those defaults, a JSON mapping (a recorded config) over the
    dataclass defaults. The dataclass validates itself in ``validate()``.
    """

    defaults_package: ClassVar[str]

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "config") -> Self:
        """Build from a mapping of tables, over the dataclass defaults."""
        return load(cls, data, source)

    @classmethod
    def defaults(cls) -> Self:
        """The documented defaults of the package's ``default.toml``."""
        return load_package_defaults(cls, cls.defaults_package)

    @classmethod
    def from_toml(cls, path: str | Path | None) -> Self:
        """The defaults overridden by the TOML file at ``path`` (None: defaults only)."""
        if path is None:
            return cls.defaults()
        return load_toml(cls, path, base=cls.defaults())


# ---------------------------------------------------------------------- building
def build(
    cls: type[T],
    data: Any,
    source: Source,
    base: T | None = None,
    path: tuple[str, ...] = (),
) -> T:
    """:func:`load` without the validation: for parsers of one table (see :func:`parse_with`)."""
    if not isinstance(data, Mapping):
        raise InputError(f"{source.where(path)} must be a table (got {data!r})")
    hints = typing.get_type_hints(cls)
    by_key = {f.metadata.get(_KEY, f.name): f for f in dataclasses.fields(cls) if f.init}
    tables = [k for k, f in by_key.items() if _is_table(hints[f.name])]
    values: dict[str, Any] = {}
    for key, value in data.items():
        where = path + (str(key),)
        if key not in by_key:
            known = ", ".join(by_key)
            if not path and tables and isinstance(value, Mapping):
                raise InputError(f"{source.at(where)}: unknown table [{key}] (known: {known})")
            table = f" in [{'.'.join(path)}]" if path else ""
            raise InputError(f"{source.at(where)}: unknown key '{key}'{table} (known: {known})")
        f = by_key[key]
        current = getattr(base, f.name) if base is not None else _default(f)
        parser = f.metadata.get(_PARSER)
        if parser is not None:
            values[f.name] = parser(value, current, source, where)
        else:
            values[f.name] = _convert(hints[f.name], value, current, source, where)
    if base is not None:
        return dataclasses.replace(base, **values)
    missing = [
        f.metadata.get(_KEY, f.name)
        for f in dataclasses.fields(cls)
        if f.init and f.name not in values and _default(f) is dataclasses.MISSING
    ]
    if missing:
        table = f" in [{'.'.join(path)}]" if path else ""
        raise InputError(f"{source.at(path)}: missing key(s) {', '.join(missing)}{table}")
    return cls(**values)


def _convert(hint: Any, value: Any, current: Any, source: Source, path: tuple[str, ...]) -> Any:
    """``value`` as the type ``hint`` says, or an InputError naming ``path``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if _is_union(hint):
        if value is None and type(None) in typing.get_args(hint):
            return None
        if len(args) != 1:  # no union but ``X | None`` is part of any config
            raise TypeError(f"unsupported config type {hint!r}")
        return _convert(args[0], value, current, source, path)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, source, current, path)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum(hint, value, source.where(path))
    origin = typing.get_origin(hint) or hint
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _wrong_type(source.where(path), "a list", value)
        return tuple(_convert(args[0], v, None, source, path) for v in value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _wrong_type(source.where(path), "a table", value)
        return dict(value)
    if hint is Any:
        return value
    return scalar(hint, value, source.where(path))


def scalar(kind: type, value: Any, where: str) -> Any:
    """``value`` as a ``bool``, ``int``, ``float`` or ``str`` by the rules above."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported config type {kind!r}")
    raise _wrong_type(where, kind.__name__, value)


def _enum(kind: type[enum.Enum], value: Any, where: str) -> enum.Enum:
    for candidate in (value, str(value).strip().lower()):
        try:
            return kind(candidate)
        except ValueError:
            continue
    known = ", ".join(str(m.value) for m in kind)
    raise InputError(f"{where} must be one of {known} (got {value!r})")


def _wrong_type(where: str, kind: str, value: Any) -> InputError:
    return InputError(f"{where} must be {kind} (got {value!r})")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _is_table(hint: Any) -> bool:
    if _is_union(hint):
        return any(_is_table(a) for a in typing.get_args(hint))
    return dataclasses.is_dataclass(hint) or typing.get_origin(hint) is dict


# ---------------------------------------------------------------------- line numbers
_BARE_OR_QUOTED = r"""(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)"""
_KEY_LINE = re.compile(rf"\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")
_NAMED_KEY = re.compile(r"([A-Za-z_][\w-]*(?:\.[\w/-]+)+)")
_PART = re.compile(rf"\s*({_BARE_OR_QUOTED})\s*(?:\.|$)")


def _dotted(text: str) -> tuple[str, ...]:
    """The parts of a dotted TOML key (``a."b.c"`` -> ``("a", "b.c")``)."""
    return tuple(p.strip("\"'") for p in _PART.findall(text))


def _line_of(text: str, path: tuple[str, ...]) -> int | None:
    """1-based line of the table or key ``path`` in the TOML ``text`` (best effort).

    The first line whose table header equals ``path`` or whose key (under the current
    header) is ``path`` or a prefix of it (an inline table holding it); else the line
    of the nearest enclosing table header; None when nothing matches.
    """
    header: tuple[str, ...] = ()
    enclosing = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("["):
            header = _dotted(line.strip("[] \t").split("]")[0])
            if header == path:
                return number
            if header == path[: len(header)] and header:
                enclosing = number
            continue
        match = _KEY_LINE.match(raw)
        if match:
            keys = header + _dotted(match.group(1))
            if len(keys) > len(header) and keys == path[: len(keys)]:
                return number
    return enclosing
