"""Common headers are recognised without column options; train/eval/convert share them."""

from __future__ import annotations

import pytest

from edgerec.data import load_interactions
from edgerec.errors import InputError

ROWS = "1,10,100\n1,11,101\n2,10,102\n"


@pytest.mark.parametrize(
    ("header", "expected_users"),
    [
        ("user_id,item_id,timestamp", ["1", "2"]),
        ("userId,movieId,timestamp", ["1", "2"]),
        ("UID,SKU,ts", ["1", "2"]),
        ("session_id,product_id,Time", ["1", "2"]),
    ],
)
def test_common_headers_need_no_options(write, header: str, expected_users) -> None:
    path = write("log.csv", f"{header}\n{ROWS}")
    raw = load_interactions(path)
    assert raw.user_ids == expected_users
    assert raw.item_ids == ["10", "11"]
    assert raw.timestamps.tolist() == [100, 101, 102]


def test_movielens_latest_ratings_csv(write) -> None:
    path = write("ratings.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n")
    raw = load_interactions(path)
    assert raw.item_ids == ["31"] and raw.timestamps.tolist() == [1260759144]


def test_recbole_typed_header_in_a_csv_file(write) -> None:
    text = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t5\t3\t7\n"
    raw = load_interactions(write("ml.csv", text))
    assert raw.user_ids == ["1"] and raw.item_ids == ["5"] and raw.timestamps.tolist() == [7]


def test_explicit_option_wins_and_ambiguity_is_an_error(write) -> None:
    path = write("log.csv", "user_id,uid,item,timestamp\n1,9,10,100\n")
    with pytest.raises(InputError, match="several columns could be the user column"):
        load_interactions(path)
    assert load_interactions(path, user_col="uid").user_ids == ["9"]


def test_unrecognised_header_still_names_the_option(write) -> None:
    path = write("log.csv", "who,what,when\n1,2,3\n")
    with pytest.raises(InputError, match="--user-col"):
        load_interactions(path)


def test_train_eval_convert_take_the_data_column_options() -> None:
    from edgerec.cli import build_parser

    parser = build_parser()
    common = ["--user-col", "uid", "--item-col", "sku", "--time-col", "ts", "--delimiter", ";"]
    for argv in (
        ["train", "--data", "x.csv", "--out", "o", *common, "--allow-weak-teacher"],
        ["eval", "t", "--data", "x.csv", *common],
        ["convert", "--teacher", "t", "--data", "x.csv", "--out", "o", *common],
    ):
        args = parser.parse_args(argv)
        assert (args.user_col, args.item_col, args.time_col, args.delimiter) == (
            "uid",
            "sku",
            "ts",
            ";",
        )
    from edgerec.data.cli import load_options

    options = load_options(parser.parse_args(["eval", "t", "--data", "x.csv", *common]))
    assert options["user_col"] == "uid" and options["format"] == "auto"
