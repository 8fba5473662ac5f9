"""Streaming readers that turn interaction logs into :class:`Interactions`.

Three formats are understood:

* ``movielens`` — MovieLens-100K ``u.data``: ``user<TAB>item<TAB>rating<TAB>timestamp``,
  no header. Ratings are ignored (every rating is an implicit interaction).
* ``recbole`` — RecBole atomic ``.inter`` files: tab-separated with a typed header
  such as ``user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float``.
  Columns are found by the name before the ``:``.
* ``csv`` — a generic delimited file with a header naming at least a user, an
  item and a timestamp column (default names ``user``, ``item``, ``timestamp``)
  and optionally an ``event`` column. The delimiter is detected from the header
  (``,``, ``\\t``, ``;`` or ``|``) unless given. RecBole type suffixes
  (``user_id:token``) are dropped from csv header names.

Columns not named explicitly are recognised by common spellings, case and ``_``/``-``
ignored (:data:`COLUMN_ALIASES`): ``user_id``, ``userId``, ``uid``, ``session_id``...
for the user, ``item_id``, ``movieId``, ``product_id``, ``sku``... for the item,
``timestamp``, ``ts``, ``time``... for the time. Two columns matching one role is an
error asking for the option.

Files are read in blocks of whole lines (``chunk_bytes``, default 4 MiB): each
block is validated (UTF-8, field count), split into columns, and its user/item
strings are interned into integer codes, so memory is the output arrays
(16-18 bytes per row) plus one block of Python strings, whatever the file size.
Raw ids are kept verbatim (no whitespace stripping). Timestamps must be integers;
integral floats such as ``874965758.0`` are accepted, NaN, infinities, fractions
and text are not. ``.gz`` files are decompressed on the fly.

Every malformed input raises :class:`~edgerec.errors.InputError` naming the file,
the line and the field. The only rows ever skipped are blank lines; they are
counted and logged.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edgerec.data.dataset import Interactions
from edgerec.errors import InputError

log = logging.getLogger(__name__)

FORMATS = ("auto", "movielens", "recbole", "csv")
DEFAULT_CHUNK_BYTES = 4 << 20
CSV_DELIMITERS = (",", "\t", ";", "|")
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")

# Default column names per format (user, item, timestamp, event).
CSV_DEFAULTS = ("user", "item", "timestamp", "event")
RECBOLE_DEFAULTS = ("user_id", "item_id", "timestamp", None)

_MAX_EXACT_FLOAT = 2.0**53

#: spellings recognised per role when no column name is given, compared after
#: :func:`_normalise` (lower case, ``_``, ``-``, ``.`` and spaces removed)
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "user": (
        "user",
        "userid",
        "uid",
        "customerid",
        "customer",
        "visitorid",
        "sessionid",
        "session",
        "clientid",
        "memberid",
        "accountid",
    ),
    "item": (
        "item",
        "itemid",
        "iid",
        "movieid",
        "productid",
        "product",
        "sku",
        "articleid",
        "trackid",
        "songid",
        "bookid",
        "isbn",
        "asin",
        "contentid",
        "videoid",
        "poiid",
    ),
    "time": (
        "timestamp",
        "ts",
        "time",
        "unixtime",
        "unixtimestamp",
        "eventtime",
        "epoch",
        "timestampms",
        "createdat",
    ),
    "event": ("event", "eventtype", "action", "behavior", "behaviour", "interaction"),
}


def _normalise(name: str) -> str:
    return "".join(c for c in name.lower() if c not in "_-. ")


@dataclass(frozen=True)
class _Layout:
    """Where the columns are in a file of a given format."""

    format: str
    delimiter: str
    ncols: int
    user: int
    item: int
    time: int
    event: int | None
    names: tuple[str, ...]  # field names for messages (header names or positional)
    header: str | None  # the header line as written, None for header-less formats

    @property
    def data_starts_at(self) -> int:
        return 2 if self.header is not None else 1


def load_interactions(
    path: str | Path,
    format: str = "auto",
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    event_col: str | None = None,
    delimiter: str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: bool = False,
) -> Interactions:
    """Read an interaction log into columnar :class:`Interactions`.

    Args:
        path: the file (``.gz`` is decompressed transparently).
        format: ``"movielens"``, ``"recbole"``, ``"csv"`` or ``"auto"`` (by file
            name: ``u.data``/``*.data`` -> movielens, ``*.inter`` -> recbole,
            ``*.csv``/``*.tsv`` -> csv; otherwise by sniffing the first line).
        user_col, item_col, time_col, event_col: column names (csv and recbole
            only). Defaults: ``user``/``item``/``timestamp``/``event`` for csv
            (``event`` is optional unless named), ``user_id``/``item_id``/
            ``timestamp`` for recbole.
        delimiter: csv only; a single character, detected from the header if None.
        chunk_bytes: block size of the streaming reader.
        progress: show a tqdm progress bar over the file's bytes.

    Returns:
        Rows in file order; ``user_ids``/``item_ids`` in first-seen order.

    Raises:
        InputError: missing file or column, empty file, bad UTF-8, wrong field
            count, duplicate header, empty id or non-integer timestamp.
    """
    path = Path(path)
    if format not in FORMATS:
        raise InputError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if delimiter is not None and (len(delimiter) != 1 or not delimiter.isascii()):
        raise InputError(f"delimiter must be a single ASCII character (got {delimiter!r})")
    if chunk_bytes < 1024:
        raise InputError(f"chunk_bytes must be at least 1024 (got {chunk_bytes})")
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    started = time.perf_counter()
    with _open(path) as fh:
        blocks = _iter_blocks(fh, path, chunk_bytes, progress)
        first = next(blocks, None)
        if first is None:
            raise InputError(f"{path}: file is empty; expected an interaction log")
        block, first_line = first
        header_line, rest = _first_line(block, path)
        if format == "auto":
            format = _detect_format(path, header_line)
            log.debug("%s: detected format %s", path, format)
        layout = _make_layout(
            path, format, header_line, user_col, item_col, time_col, event_col, delimiter
        )
        reader = _BlockReader(path, layout)
        if layout.header is None:
            reader.feed(block, first_line)
        elif rest:
            reader.feed(rest, first_line + 1)
        for block, first_line in blocks:
            reader.feed(block, first_line)
    result = reader.finish()
    elapsed = time.perf_counter() - started
    log.info(
        "%s: loaded %d interactions (%d users, %d items) as %s in %.2f s",
        path,
        len(result),
        len(result.user_ids),
        len(result.item_ids),
        layout.format,
        elapsed,
    )
    return result


# --------------------------------------------------------------------------- file access


def _open(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")  # noqa: SIM115 - closed by the caller's with-block


def _iter_blocks(
    fh: BinaryIO, path: Path, chunk_bytes: int, progress: bool
) -> Iterator[tuple[bytes, int]]:
    """Yield ``(block, first_line_number)`` with every block ending on a line break.

    A UTF-8 byte-order mark at the start of the file is dropped; ``\\r\\n`` line
    ends are normalised to ``\\n``.
    """
    bar = None
    if progress:
        from tqdm import tqdm

        total = path.stat().st_size if path.suffix != ".gz" else None
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=path.name, leave=False)
    line = 1
    carry = b""
    first = True
    try:
        while True:
            data = fh.read(chunk_bytes)
            if bar is not None:
                bar.update(len(data))
            if not data:
                break
            if first:
                first = False
                if data.startswith(b"\xef\xbb\xbf"):
                    data = data[3:]
            data = carry + data if carry else data
            cut = data.rfind(b"\n")
            if cut < 0:  # a single line longer than the block: keep reading
                carry = data
                continue
            block, carry = data[: cut + 1], data[cut + 1 :]
            if b"\r" in block:
                block = block.replace(b"\r\n", b"\n")
            yield block, line
            line += block.count(b"\n")
        if carry:
            if b"\r" in carry:
                carry = carry.replace(b"\r\n", b"\n")
            yield carry + b"\n", line
    finally:
        if bar is not None:
            bar.close()


def _decode(block: bytes, path: Path, first_line: int) -> str:
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + block.count(b"\n", 0, exc.start)
        col = exc.start - (block.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = block[exc.start : exc.start + 4]
        raise InputError(
            f"{path}:{line}: byte {col} is not valid UTF-8 ({bad!r}); "
            "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _first_line(block: bytes, path: Path) -> tuple[str, bytes]:
    """The first line of the file (decoded) and the rest of the first block."""
    cut = block.index(b"\n")
    text = _decode(block[: cut + 1], path, 1)[:-1]
    return text, block[cut + 1 :]


# --------------------------------------------------------------------------- layout


def _detect_format(path: Path, first_line: str) -> str:
    name = path.name[:-3] if path.suffix == ".gz" else path.name
    suffix = Path(name).suffix.lower()
    if name == "u.data" or suffix == ".data":
        return "movielens"
    if suffix == ".inter":
        return "recbole"
    if suffix in (".csv", ".tsv"):
        return "csv"
    fields = first_line.split("\t")
    if len(fields) > 1 and all(f.rpartition(":")[2] in RECBOLE_TYPES for f in fields):
        return "recbole"
    if len(fields) == 4 and all(f.strip().lstrip("-").isdigit() for f in fields):
        return "movielens"
    return "csv"


def _make_layout(
    path: Path,
    format: str,
    first_line: str,
    user_col: str | None,
    item_col: str | None,
    time_col: str | None,
    event_col: str | None,
    delimiter: str | None,
) -> _Layout:
    if format == "movielens":
        if any(c is not None for c in (user_col, item_col, time_col, event_col)):
            raise InputError("column names cannot be set for the movielens format (fixed layout)")
        if delimiter not in (None, "\t"):
            raise InputError("the movielens format is tab-separated; do not set a delimiter")
        names = ("user", "item", "rating", "timestamp")
        return _Layout("movielens", "\t", 4, 0, 1, 3, None, names, None)

    if format == "recbole":
        if delimiter not in (None, "\t"):
            raise InputError("RecBole atomic files are tab-separated; do not set a delimiter")
        header = tuple(first_line.split("\t"))
        names = tuple(h.partition(":")[0].strip() for h in header)
        defaults = RECBOLE_DEFAULTS
        delim = "\t"
        hint = "RecBole headers look like 'user_id:token<TAB>item_id:token<TAB>timestamp:float'"
    else:
        delim = delimiter or _sniff_delimiter(path, first_line)
        if '"' in first_line:
            header = tuple(next(csv.reader([first_line], delimiter=delim)))
        else:
            header = tuple(first_line.split(delim))
        names = tuple(_drop_recbole_type(h.strip()) for h in header)
        defaults = CSV_DEFAULTS
        hint = "the first line must be a header naming the columns"

    _check_header(path, names, hint)
    columns = dict(zip(names, range(len(names)), strict=True))

    def find(wanted: str | None, default: str | None, role: str, required: bool) -> int | None:
        name = wanted if wanted is not None else default
        if name is None:
            return None
        if name in columns:
            return columns[name]
        if wanted is None:
            aliases = COLUMN_ALIASES[role]
            found = [n for n in names if _normalise(n) in aliases]
            if len(found) == 1:
                log.info("%s: using column %r as the %s column", path, found[0], role)
                return columns[found[0]]
            if len(found) > 1:
                raise InputError(
                    f"{path}:1: several columns could be the {role} column "
                    f"({', '.join(found)}); name it with --{role}-col / {role}_col="
                )
        if required or wanted is not None:
            raise InputError(
                f"{path}:1: missing {role} column {name!r} (header has: {', '.join(names)}); "
                f"pass the right name with --{role}-col / {role}_col=. {hint}"
            )
        return None

    user = find(user_col, defaults[0], "user", True)
    item = find(item_col, defaults[1], "item", True)
    ts = find(time_col, defaults[2], "time", True)
    event = find(event_col, defaults[3], "event", False)
    assert user is not None and item is not None and ts is not None
    if len({user, item, ts}) < 3:
        raise InputError(f"{path}:1: user, item and time columns must be different columns")
    return _Layout(format, delim, len(header), user, item, ts, event, names, first_line)


def _drop_recbole_type(name: str) -> str:
    """``user_id:token`` -> ``user_id`` (RecBole's typed header); other names unchanged."""
    base, sep, kind = name.rpartition(":")
    return base.strip() if sep and base and kind in RECBOLE_TYPES else name


def _sniff_delimiter(path: Path, header_line: str) -> str:
    if path.suffix.lower() == ".tsv" or path.name.lower().endswith(".tsv.gz"):
        return "\t"
    counts = {d: header_line.count(d) for d in CSV_DELIMITERS}
    best = max(CSV_DELIMITERS, key=lambda d: counts[d])
    if counts[best] == 0:
        raise InputError(
            f"{path}:1: cannot detect the delimiter from the header {header_line!r}; "
            "the header needs at least user, item and timestamp columns separated by "
            "',', TAB, ';' or '|' (or pass delimiter=)"
        )
    return best


def _check_header(path: Path, names: tuple[str, ...], hint: str) -> None:
    if not any(names):
        raise InputError(f"{path}:1: the header line is empty; {hint}")
    for pos, name in enumerate(names):
        if not name:
            raise InputError(f"{path}:1: header field {pos + 1} has no name; {hint}")
    seen: dict[str, int] = {}
    for pos, name in enumerate(names):
        if name in seen:
            raise InputError(
                f"{path}:1: duplicate column name {name!r} in the header "
                f"(fields {seen[name] + 1} and {pos + 1}); column names must be unique"
            )
        seen[name] = pos


# --------------------------------------------------------------------------- parsing


class _Interner:
    """Maps raw id strings to dense integer codes in first-seen order.

    Canonical non-negative integer ids (ASCII digits, no leading zero, at most 18
    digits) are kept in a sorted ``int64`` key array, so blocks of numeric ids are
    coded with ``np.unique`` and ``np.searchsorted`` instead of one dict lookup per
    row. The ``str -> code`` dict is only built once a block needs it.
    """

    def __init__(self, dtype: type[np.integer]) -> None:
        self.ids: list[str] = []
        self.dtype = dtype
        self.limit = int(np.iinfo(dtype).max) + 1
        self.num_keys = np.empty(0, dtype=np.int64)
        self.num_codes = np.empty(0, dtype=np.int64)
        self._index: dict[str, int] | None = None

    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {s: i for i, s in enumerate(self.ids)}
        return self._index

    def _add(self, new: list[str]) -> int:
        start = len(self.ids)
        if start + len(new) > self.limit:
            raise OverflowError
        if self._index is not None:
            self._index.update(zip(new, range(start, start + len(new)), strict=True))
        self.ids.extend(new)
        return start

    def _add_numeric(self, keys: np.ndarray, codes: np.ndarray) -> None:
        order = np.argsort(keys)
        keys, codes = keys[order], codes[order]
        pos = np.searchsorted(self.num_keys, keys)
        self.num_keys = np.insert(self.num_keys, pos, keys)
        self.num_codes = np.insert(self.num_codes, pos, codes)

    def _register(self, new: list[str]) -> None:
        start = self._add(new)
        numeric = [
            (int(s), start + pos)
            for pos, s in enumerate(new)
            if s.isascii() and s.isdigit() and len(s) <= 18 and (len(s) == 1 or s[0] != "0")
        ]
        if numeric:
            pairs = np.array(numeric, dtype=np.int64).reshape(-1, 2)
            self._add_numeric(pairs[:, 0], pairs[:, 1])

    def from_strings(self, values: list[str]) -> np.ndarray:
        """Codes of ``values`` (one dict lookup per row)."""
        index = self.index
        new = [v for v in dict.fromkeys(values) if v not in index]
        if new:
            self._register(new)
        return np.fromiter(map(index.__getitem__, values), dtype=self.dtype, count=len(values))

    def from_uniques(self, uniques: list[str], inverse: np.ndarray) -> np.ndarray:
        """Codes of a column given its distinct values and ``np.unique``'s inverse."""
        index = self.index
        first = _first_rows(len(uniques), inverse)
        new = [uniques[i] for i in np.argsort(first).tolist()]
        new = [v for v in new if v not in index]
        if new:
            self._register(new)
        ucodes = np.fromiter(map(index.__getitem__, uniques), dtype=np.int64, count=len(uniques))
        return ucodes.astype(self.dtype)[inverse]

    def from_ints(self, values: np.ndarray) -> np.ndarray:
        """Codes of canonical integer ids given as an ``int64`` array."""
        uniq, inverse = _unique_inverse(values)
        if uniq.size > 1 and not np.all(uniq[1:] > uniq[:-1]):
            order = np.argsort(uniq)
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
            uniq, inverse = uniq[order], rank[inverse]
        keys = self.num_keys
        pos = np.searchsorted(keys, uniq)
        hit = pos < keys.size
        hit[hit] = keys[pos[hit]] == uniq[hit]
        ucodes = np.empty(uniq.size, dtype=np.int64)
        ucodes[hit] = self.num_codes[pos[hit]]
        new = np.flatnonzero(~hit)
        if new.size:
            first = _first_rows(uniq.size, inverse)
            new = new[np.argsort(first[new])]  # first-seen order (rows are distinct)
            start = self._add(list(map(str, uniq[new].tolist())))
            ucodes[new] = np.arange(start, start + new.size)
            # uniq is sorted and ~hit keeps that order: insert without re-sorting.
            ins = np.flatnonzero(~hit)
            self.num_keys = np.insert(keys, pos[ins], uniq[ins])
            self.num_codes = np.insert(self.num_codes, pos[ins], ucodes[ins])
        return ucodes.astype(self.dtype)[inverse]


def _first_rows(num_uniques: int, inverse: np.ndarray) -> np.ndarray:
    """Row of the first occurrence of each distinct value."""
    first = np.full(num_uniques, inverse.size, dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(inverse.size))
    return first


def _unique_inverse(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)``, faster for small ranges and few values.

    The distinct values may come in any order (callers only need the inverse).
    """
    n = keys.size
    if keys.dtype.kind in "iu" and n:
        lo, hi = int(keys.min()), int(keys.max())
        if lo >= 0 and hi < 4 * n + 65536:  # dense table, no sort
            present = np.zeros(hi + 1, dtype=bool)
            present[keys] = True
            rank = np.cumsum(present, dtype=np.int64) - 1
            return np.flatnonzero(present), rank[keys]
    sample = keys[:: max(1, n // 512)]
    if n and np.unique(sample).size <= 8:  # few distinct values: peel them off
        inverse = np.full(n, -1, dtype=np.int64)
        uniq = []
        for k in range(16):
            rest = np.flatnonzero(inverse < 0)
            if rest.size == 0:
                return np.array(uniq, dtype=keys.dtype), inverse
            value = keys[rest[0]]
            inverse[keys == value] = k
            uniq.append(value)
    uniq, inverse = np.unique(keys, return_inverse=True)
    return uniq, inverse.reshape(-1)


_POW_LIMIT = 18  # digits that always fit in int64
_PAD = 64  # zero bytes around a block, so field windows (<= 64 bytes) stay in bounds


class _Block:
    """One block of whole lines, validated, with the byte span of every field."""

    def __init__(self, text: str, data: bytes, first_line: int, line_no: np.ndarray | None):
        self.text = text
        self.arr = np.frombuffer(data, dtype=np.uint8)
        self.first_line = first_line
        self.line_no = line_no  # row -> file line when blank lines were removed
        self._lines: list[str] | None = None
        self.starts: np.ndarray | None = None
        self.ends: np.ndarray | None = None
        self._columns: list[list[str]] | None = None
        self._padded: np.ndarray | None = None

    def windows(self, width: int) -> np.ndarray:
        """``windows(w)[p + _PAD]`` is the ``w`` bytes starting at offset ``p`` (may be < 0)."""
        if self._padded is None:
            pad = np.zeros(_PAD, np.uint8)
            self._padded = np.concatenate([pad, self.arr, pad])
        return sliding_window_view(self._padded, width)

    def line_of(self, row: int) -> int:
        return int(self.line_no[row]) if self.line_no is not None else self.first_line + row

    def line_text(self, row: int) -> str:
        if self._lines is None:
            self._lines = self.text[:-1].split("\n")
        return self._lines[row]


class _BlockReader:
    """Parses blocks of whole lines and accumulates the column arrays."""

    def __init__(self, path: Path, layout: _Layout) -> None:
        self.path = path
        self.layout = layout
        self.delim_byte = ord(layout.delimiter)
        self.users = _Interner(np.int32)
        self.items = _Interner(np.int32)
        self.events = _Interner(np.int16)
        self.chunks: dict[str, list[np.ndarray]] = {"u": [], "i": [], "t": [], "e": []}
        self.blank_lines = 0
        self.rows = 0

    # -- one block ------------------------------------------------------------------------

    def feed(self, data: bytes, first_line: int) -> None:
        text = _decode(data, self.path, first_line)
        arr = np.frombuffer(data, dtype=np.uint8)
        newlines = np.flatnonzero(arr == 10)
        line_no = None
        blank = np.diff(newlines, prepend=-1) == 1
        if blank.any():
            self.blank_lines += int(blank.sum())
            kept = np.flatnonzero(~blank)
            if kept.size == 0:
                return
            line_no = first_line + kept
            text = "\n".join(s for s in text.split("\n") if s) + "\n"
            data = text.encode("utf-8")
            arr = np.frombuffer(data, dtype=np.uint8)
            newlines = np.flatnonzero(arr == 10)
        block = _Block(text, data, first_line, line_no)
        layout = self.layout
        n = newlines.size

        if layout.format == "csv" and '"' in text:
            block._columns = self._split_quoted(block)
        else:
            delims = np.flatnonzero(arr == self.delim_byte)
            per_line = np.diff(np.searchsorted(delims, newlines), prepend=0)
            bad = np.flatnonzero(per_line != layout.ncols - 1)
            if bad.size:
                row = int(bad[0])
                self._field_count_error(block, row, int(per_line[row]) + 1)
            k = layout.ncols
            inner = delims.reshape(n, k - 1)
            block.ends = np.column_stack([inner, newlines])
            line_starts = np.concatenate([[0], newlines[:-1] + 1])
            block.starts = np.column_stack([line_starts, inner + 1])

        times = self._times(block)
        self.chunks["t"].append(times)
        self.chunks["u"].append(self._ids(block, self.users, layout.user, "user"))
        self.chunks["i"].append(self._ids(block, self.items, layout.item, "item"))
        if layout.event is not None:
            self.chunks["e"].append(self._ids(block, self.events, layout.event, "event"))
        self.rows += n

    def _split_quoted(self, block: _Block) -> list[list[str]]:
        lines = block.text[:-1].split("\n")
        reader = csv.reader(lines, delimiter=self.layout.delimiter, strict=True)
        rows: list[list[str]] = []
        try:
            for row in reader:
                rows.append(row)
                if reader.line_num != len(rows):
                    raise csv.Error("a quoted field spans several lines, which is not supported")
                if len(row) != self.layout.ncols:
                    self._field_count_error(block, len(rows) - 1, len(row))
        except csv.Error as exc:
            line = block.line_of(max(len(rows) - 1, 0))
            raise InputError(f"{self.path}:{line}: malformed quoting ({exc})") from None
        return [list(col) for col in zip(*rows, strict=True)]

    # -- columns --------------------------------------------------------------------------

    def _strings(self, block: _Block, field: int) -> list[str]:
        """The values of one column as Python strings (slow path)."""
        if block._columns is None:
            d = self.layout.delimiter
            flat = block.text[:-1].replace("\n", d).split(d)
            k = self.layout.ncols
            block._columns = [flat[j::k] for j in range(k)]
        return block._columns[field]

    def _spans(self, block: _Block, field: int) -> tuple[np.ndarray, np.ndarray] | None:
        if block.starts is None or block.ends is None:
            return None
        return block.starts[:, field], block.ends[:, field]

    def _check_not_empty(self, block: _Block, field: int, role: str) -> None:
        spans = self._spans(block, field)
        if spans is not None:
            empty = np.flatnonzero(spans[1] == spans[0])
            row = int(empty[0]) if empty.size else -1
        else:
            values = self._strings(block, field)
            row = values.index("") if "" in values else -1
        if row >= 0:
            raise InputError(f"{self._where(block, row, field)}: empty {role} value")

    def _digits(self, block: _Block, field: int, canonical: bool) -> np.ndarray | None:
        """Vectorised parse of a column of plain ASCII decimal integers, else None."""
        spans = self._spans(block, field)
        if spans is None:
            return None
        starts, ends = spans
        lengths = ends - starts
        width = int(lengths.max())
        if width == 0 or width > _POW_LIMIT or int(lengths.min()) == 0:
            return None
        # Each field right-aligned in a (rows, width) byte matrix, zeros on the left.
        mat = block.windows(width)[ends - width + _PAD] - np.uint8(48)
        mat[np.arange(width) < (width - lengths)[:, None]] = 0
        if mat.max() > 9:
            return None
        if canonical and np.any((lengths > 1) & (block.arr[starts] == 48)):
            return None  # leading zeros: "007" and "7" must stay different ids
        value = mat[:, 0].astype(np.int64)
        for c in range(1, width):
            value *= 10
            value += mat[:, c]
        return value

    def _ids(self, block: _Block, interner: _Interner, field: int, role: str) -> np.ndarray:
        self._check_not_empty(block, field, role)
        try:
            numbers = self._digits(block, field, canonical=True)
            if numbers is not None:
                return interner.from_ints(numbers)
            spans = self._spans(block, field)
            if spans is not None:
                width = int((spans[1] - spans[0]).max())
                if width <= 64:
                    uniques, inverse = self._unique_bytes(block, spans, width)
                    return interner.from_uniques(uniques, inverse)
            return interner.from_strings(self._strings(block, field))
        except OverflowError:
            raise InputError(
                f"{self.path}: too many distinct {role} values (at most {interner.limit})"
            ) from None

    @staticmethod
    def _unique_bytes(
        block: _Block, spans: tuple[np.ndarray, np.ndarray], width: int
    ) -> tuple[list[str], np.ndarray]:
        starts, ends = spans
        padded = -(-width // 8) * 8  # whole uint64 words
        mat = block.windows(padded)[starts + _PAD].copy()
        mat[np.arange(padded) >= (ends - starts)[:, None]] = 0
        if padded == 8:
            keys = mat.view(np.uint64).reshape(-1)
            uniq, inverse = _unique_inverse(keys)
            raw = uniq.astype(np.uint64).tobytes()
            values = [raw[k : k + 8].rstrip(b"\0") for k in range(0, len(raw), 8)]
        else:
            fixed = mat.view(f"S{padded}").reshape(-1)
            uniq, inverse = _unique_inverse(fixed)
            values = uniq.tolist()
        return [v.decode("utf-8") for v in values], inverse

    def _times(self, block: _Block) -> np.ndarray:
        field = self.layout.time
        numbers = self._digits(block, field, canonical=False)
        if numbers is not None:
            return numbers
        values = self._strings(block, field)
        n = len(values)
        try:
            return np.fromiter(map(int, values), dtype=np.int64, count=n)
        except (ValueError, OverflowError):
            pass
        # Slow path: integral floats ("874965758.0"), or find the offending value.
        out: list[int] = []
        for row, value in enumerate(values):
            try:
                out.append(int(value))
                continue
            except ValueError:
                pass
            try:
                number = float(value)
            except ValueError:
                self._time_error(block, row, value, "is not a number")
            if not math.isfinite(number):
                self._time_error(block, row, value, "is not finite")
            if not number.is_integer():
                self._time_error(block, row, value, "is not an integer")
            if abs(number) >= _MAX_EXACT_FLOAT:
                self._time_error(block, row, value, "is too large to be exact")
            out.append(int(number))
        try:
            return np.array(out, dtype=np.int64)
        except OverflowError:
            row = next(r for r, v in enumerate(out) if not -(2**63) <= v < 2**63)
            self._time_error(block, row, values[row], "is out of the int64 range")

    # -- errors ---------------------------------------------------------------------------

    def _where(self, block: _Block, row: int, field: int) -> str:
        name = self.layout.names[field]
        return f"{self.path}:{block.line_of(row)}: field {name!r} (column {field + 1})"

    def _field_count_error(self, block: _Block, row: int, found: int) -> NoReturn:
        layout = self.layout
        raise InputError(
            f"{self.path}:{block.line_of(row)}: expected {layout.ncols} fields separated by "
            f"{layout.delimiter!r}, found {found} in {block.line_text(row)[:80]!r}"
        )

    def _time_error(self, block: _Block, row: int, value: str, problem: str) -> NoReturn:
        layout = self.layout
        line = block.line_of(row)
        if layout.header is not None and block.line_text(row) == layout.header:
            raise InputError(
                f"{self.path}:{line}: duplicate header row (the header of line 1 appears "
                "again inside the file, e.g. from concatenating files); remove it"
            )
        hint = "timestamps must be integers (e.g. Unix seconds)"
        if layout.format == "movielens" and line == 1:
            hint += "; u.data has no header line — use format='csv' for files with a header"
        where = self._where(block, row, layout.time)
        raise InputError(f"{where}: value {value!r} {problem}; {hint}")

    # -- result ---------------------------------------------------------------------------

    def finish(self) -> Interactions:
        if self.blank_lines:
            log.warning("%s: skipped %d blank line(s)", self.path, self.blank_lines)
        if self.rows == 0:
            what = "a header but no data rows" if self.layout.header else "no data rows"
            raise InputError(f"{self.path}: file has {what}; expected at least one interaction")

        def concat(key: str, dtype: type[np.integer]) -> np.ndarray | None:
            parts = self.chunks.pop(key)
            out = np.concatenate(parts).astype(dtype, copy=False) if parts else None
            parts.clear()
            return out

        users = concat("u", np.int32)
        items = concat("i", np.int32)
        times = concat("t", np.int64)
        events = concat("e", np.int16)
        return Interactions(
            users=users,
            items=items,
            timestamps=times,
            user_ids=self.users.ids,
            item_ids=self.items.ids,
            events=events,
            event_types=self.events.ids if events is not None else [],
            source=str(self.path),
        )


def sniff_format(path: str | Path) -> str:
    """The format :func:`load_interactions` would pick for ``path`` with ``format="auto"``."""
    path = Path(path)
    try:
        with _open(path) as fh:
            head = fh.read(64 * 1024)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    first = io.BytesIO(head).readline().decode("utf-8", errors="replace").rstrip("\r\n")
    return _detect_format(path, first.lstrip("\ufeff"))
