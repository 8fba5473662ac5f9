"""Streaming loaders: formats, chunking, and every malformed-input error."""

from __future__ import annotations

import csv
import gzip
import logging
import random

import numpy as np
import pytest

from edgerec.data.loaders import load_interactions, sniff_format
from edgerec.errors import InputError

ML_ROWS = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t1\t878887116\n"


def as_rows(inter):
    """(user id, item id, timestamp[, event]) tuples in file order."""
    rows = []
    for k in range(len(inter)):
        row = (
            inter.user_ids[inter.users[k]],
            inter.item_ids[inter.items[k]],
            int(inter.timestamps[k]),
        )
        if inter.events is not None:
            row += (inter.event_types[inter.events[k]],)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------- formats


def test_movielens_u_data(write):
    path = write("u.data", ML_ROWS)
    inter = load_interactions(path)
    assert len(inter) == 3
    assert inter.user_ids == ["196", "186"]  # first-seen order
    assert inter.item_ids == ["242", "302", "377"]
    assert inter.users.dtype == np.int32 and inter.items.dtype == np.int32
    assert inter.timestamps.dtype == np.int64
    assert inter.users.tolist() == [0, 1, 0]
    assert inter.timestamps.tolist() == [881250949, 891717742, 878887116]
    assert inter.events is None and inter.source == str(path)


def test_recbole_inter_float_timestamps_and_column_order(write):
    text = (
        "item_id:token\tuser_id:token\ttimestamp:float\trating:float\n"
        "242\t196\t881250949.0\t3\n"
        "302\t186\t891717742.000\t3\n"
        "377\t196\t878887116\t1\n"
    )
    inter = load_interactions(write("ml.inter", text))
    assert as_rows(inter) == [
        ("196", "242", 881250949),
        ("186", "302", 891717742),
        ("196", "377", 878887116),
    ]


def test_recbole_custom_column_names(write):
    text = "uid:token\tiid:token\tts:float\n1\t2\t3\n"
    inter = load_interactions(write("x.inter", text), user_col="uid", item_col="iid", time_col="ts")
    assert as_rows(inter) == [("1", "2", 3)]


@pytest.mark.parametrize("delim", [",", "\t", ";", "|"])
def test_csv_delimiter_autodetect(write, delim):
    lines = ["user", "item", "timestamp"], ["u1", "i1", "10"], ["u2", "i1", "5"]
    path = write("log.txt", "".join(delim.join(r) + "\n" for r in lines))
    assert sniff_format(path) == "csv"
    assert as_rows(load_interactions(path, format="csv")) == [("u1", "i1", 10), ("u2", "i1", 5)]


def test_csv_custom_columns_event_and_explicit_delimiter(write):
    text = "ts;who;what;kind;extra\n1;a;x;view;q\n2;b;y;buy;q\n3;a;y;view;q\n"
    inter = load_interactions(
        write("e.csv", text),
        user_col="who",
        item_col="what",
        time_col="ts",
        event_col="kind",
        delimiter=";",
    )
    assert as_rows(inter) == [("a", "x", 1, "view"), ("b", "y", 2, "buy"), ("a", "y", 3, "view")]
    assert inter.event_types == ["view", "buy"] and inter.events.dtype == np.int16


def test_csv_event_column_optional_by_default(write):
    inter = load_interactions(write("a.csv", "user,item,timestamp\n1,2,3\n"))
    assert inter.events is None and inter.event_types == []


def test_csv_quoted_fields(write):
    text = 'user,item,timestamp\n"a,b",x,1\n"c ""q""",y,2\n'
    inter = load_interactions(write("q.csv", text))
    assert as_rows(inter) == [("a,b", "x", 1), ('c "q"', "y", 2)]
    quoted_header = '"user","item","timestamp"\nu,i,1\n'
    assert as_rows(load_interactions(write("qh.csv", quoted_header))) == [("u", "i", 1)]
    with pytest.raises(InputError, match="duplicate header"):
        load_interactions(write("qd.csv", quoted_header + quoted_header))


def test_crlf_bom_no_trailing_newline_and_gzip(tmp_path, write):
    text = "\ufeffuser,item,timestamp\r\nu,i,1\r\nv,j,2"
    inter = load_interactions(write("w.csv", text))
    assert as_rows(inter) == [("u", "i", 1), ("v", "j", 2)]
    gz = tmp_path / "w.csv.gz"
    gz.write_bytes(gzip.compress(b"user,item,timestamp\nu,i,1\n"))
    assert as_rows(load_interactions(gz)) == [("u", "i", 1)]


def test_ids_are_verbatim_leading_zeros_stay_distinct(write):
    text = "user,item,timestamp\n7,007,1\n07,7,2\n7,7,3\n"
    inter = load_interactions(write("z.csv", text))
    assert inter.user_ids == ["7", "07"] and inter.item_ids == ["007", "7"]
    assert as_rows(inter) == [("7", "007", 1), ("07", "7", 2), ("7", "7", 3)]


def test_blank_lines_skipped_counted_and_logged(write, caplog):
    text = "user,item,timestamp\n\na,x,1\n\n\nb,y,2\n"
    with caplog.at_level(logging.WARNING, logger="edgerec.data.loaders"):
        inter = load_interactions(write("b.csv", text))
    assert as_rows(inter) == [("a", "x", 1), ("b", "y", 2)]
    assert "skipped 3 blank line(s)" in caplog.text


def test_auto_format_detection(write):
    assert sniff_format(write("u.data", ML_ROWS)) == "movielens"
    assert sniff_format(write("x.inter", "user_id:token\titem_id:token\n")) == "recbole"
    assert sniff_format(write("noext", ML_ROWS)) == "movielens"
    assert sniff_format(write("noext2", "user_id:token\titem_id:token\ttimestamp:float\n")) == (
        "recbole"
    )
    assert sniff_format(write("noext3", "user,item,timestamp\n")) == "csv"


def _reference(path, delim=","):
    """Straightforward csv-module reader to compare the fast path against."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=delim)
        next(reader)
        return [(r[0], r[1], int(r[2])) for r in reader if r]


def test_chunked_matches_reference_with_mixed_id_kinds(tmp_path):
    rng = random.Random(3)
    ids = [str(i) for i in range(1, 300)] + [
        "007",
        "a1",
        "é",
        "x" * 70,
        "0",
        "abcdefghij",
        "ü" * 20,
    ]
    path = tmp_path / "mixed.csv"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("user,item,timestamp\n")
        for k in range(6000):
            # Numeric-only stretches and mixed stretches, so blocks take different paths.
            pool = ids[:299] if (k // 700) % 2 == 0 else ids
            fh.write(f"{rng.choice(pool)},{rng.choice(pool)},{rng.randrange(10**9)}\n")
    expected = _reference(path)
    small = load_interactions(path, chunk_bytes=1024)
    big = load_interactions(path)
    assert as_rows(small) == expected
    assert as_rows(big) == expected
    # first-seen order of raw ids
    seen = list(dict.fromkeys(r[1] for r in expected))
    assert small.item_ids == seen and big.item_ids == seen


# ---------------------------------------------------------------------------- errors


def raises_with(path, *fragments, **kwargs):
    with pytest.raises(InputError) as info:
        load_interactions(path, **kwargs)
    message = str(info.value)
    for fragment in (str(path), *fragments):
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_error_missing_column(write):
    # "moment" is no common spelling of a time column (a "time" column is recognised)
    path = write("m.csv", "user,item,moment\n1,2,3\n")
    msg = raises_with(path, ":1:", "'timestamp'")
    assert "user, item, moment" in msg  # lists what the header has


def test_error_missing_recbole_column(write):
    raises_with(write("m.inter", "user_id:token\titem_id:token\n1\t2\n"), ":1:", "'timestamp'")


def test_error_explicit_event_column_missing(write):
    raises_with(write("m.csv", "user,item,timestamp\n1,2,3\n"), ":1:", "'kind'", event_col="kind")


@pytest.mark.parametrize(
    "value, problem",
    [
        ("abc", "is not a number"),
        ("nan", "is not finite"),
        ("inf", "is not finite"),
        ("-inf", "is not finite"),
        ("12.5", "is not an integer"),
        ("", "is not a number"),
        ("99999999999999999999999", "out of the int64 range"),
    ],
)
def test_error_bad_timestamp(write, value, problem):
    path = write("t.csv", f"user,item,timestamp\na,x,1\nb,y,{value}\n")
    raises_with(path, ":3:", "field 'timestamp'", problem)


def test_error_bad_timestamp_recbole_and_movielens(write):
    raises_with(
        write("t.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\tNaN\n"),
        ":2:",
        "'timestamp'",
        "not finite",
    )
    raises_with(write("u.data", "1\t2\t3\t4\n1\t2\t3\tlater\n"), ":2:", "'timestamp'")


def test_error_movielens_with_header_hints_csv(write):
    raises_with(write("u.data", "user\titem\trating\ttimestamp\n1\t2\t3\t4\n"), ":1:", "no header")


def test_error_empty_file(write):
    raises_with(write("e.csv", b""), "empty")
    raises_with(write("u.data", b""), "empty")


def test_error_header_only(write):
    raises_with(write("h.csv", "user,item,timestamp\n"), "no data rows")
    raises_with(write("h2.csv", "user,item,timestamp\n\n\n"), "no data rows")


def test_error_duplicate_header_row(write):
    text = "user,item,timestamp\na,x,1\nuser,item,timestamp\nb,y,2\n"
    raises_with(write("d.csv", text), ":3:", "duplicate header")


def test_error_duplicate_header_row_across_chunks(tmp_path):
    path = tmp_path / "cat.inter"
    header = "user_id:token\titem_id:token\ttimestamp:float\n"
    body = "".join(f"{k}\t{k % 7}\t{1000 + k}\n" for k in range(400))
    path.write_text(header + body + header + body, encoding="utf-8")
    raises_with(path, ":402:", "duplicate header", chunk_bytes=1024)


def test_error_duplicate_column_names(write):
    raises_with(write("d.csv", "user,item,timestamp,item\n1,2,3,4\n"), ":1:", "duplicate column")
    raises_with(
        write("d.inter", "user_id:token\titem_id:token\titem_id:float\ttimestamp:float\n"),
        ":1:",
        "duplicate column",
    )


def test_error_non_utf8_reports_line(write):
    data = b"user,item,timestamp\na,x,1\nb,caf\xe9,2\n"
    raises_with(write("l.csv", data), ":3:", "UTF-8")


def test_error_non_utf8_in_later_chunk(tmp_path):
    path = tmp_path / "late.csv"
    rows = b"".join(b"u%d,i%d,%d\n" % (k, k, k) for k in range(500))
    path.write_bytes(b"user,item,timestamp\n" + rows + b"bad,\xff\xfe,1\n")
    raises_with(path, ":502:", "UTF-8", chunk_bytes=1024)


def test_error_wrong_field_count(write):
    raises_with(write("f.csv", "user,item,timestamp\na,x,1\nb,y\n"), ":3:", "expected 3 fields")
    raises_with(write("u.data", "1\t2\t3\t4\n1\t2\t3\t4\t5\n"), ":2:", "expected 4 fields")
    raises_with(write("q.csv", 'user,item,timestamp\n"a",x,1\n"b",y,2,3\n'), ":3:", "fields")


def test_error_line_numbers_account_for_blank_lines_and_chunks(tmp_path):
    path = tmp_path / "n.csv"
    lines = ["user,item,timestamp"] + [f"u{k},i{k},{k}" for k in range(300)]
    lines[150] = ""  # a blank line in the middle
    lines.append("zz,yy,notatime")  # file line 302
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    raises_with(path, ":302:", "'timestamp'", "notatime", chunk_bytes=1024)


def test_error_empty_id(write):
    raises_with(
        write("i.csv", "user,item,timestamp\na,x,1\n,y,2\n"), ":3:", "field 'user'", "empty"
    )
    raises_with(write("j.csv", "user,item,timestamp\na,,1\n"), ":2:", "field 'item'", "empty")


def test_error_bad_options(write):
    path = write("o.csv", "user,item,timestamp\na,x,1\n")
    with pytest.raises(InputError, match="unknown format"):
        load_interactions(path, format="parquet")
    with pytest.raises(InputError, match="single ASCII character"):
        load_interactions(path, delimiter="::")
    with pytest.raises(InputError, match="not found"):
        load_interactions(path.with_name("missing.csv"))
    with pytest.raises(InputError, match="movielens"):
        load_interactions(write("u.data", ML_ROWS), user_col="x")


def test_progress_bar_option(write, capsys):
    inter = load_interactions(write("p.csv", "user,item,timestamp\na,x,1\n"), progress=True)
    assert len(inter) == 1


def test_data_package_import_is_lazy():
    import subprocess
    import sys

    code = (
        "import sys, edgerec.data, edgerec.data.cli; "
        "print(any(m == 'numpy' or m.startswith('tensorflow') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
