"""``edgerec data``: fetch, generate and inspect interaction datasets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgerec.cli_help import HelpFormatter

DATA_EPILOG = """\
examples:
  edgerec data fetch movielens-100k
  edgerec data synth --users 50000 --items 1000000 --mean-length 40 --out data/synth.csv
  edgerec data stats movielens-100k --json
"""

FETCH_EPILOG = """\
examples:
  edgerec data fetch movielens-100k
  edgerec data fetch movielens-100k --cache-dir /data/edgerec-cache
  edgerec data fetch movielens-100k --wheel recbole-1.2.1-py3-none-any.whl   # offline

The data comes from the recbole==1.2.1 wheel (downloaded with pip, never
installed), checked against pinned sha256 hashes, and cached in
$EDGEREC_CACHE/movielens-100k (default ~/.cache/edgerec/movielens-100k).
"""

SYNTH_EPILOG = """\
examples:
  edgerec data synth --users 5000 --items 2000 --out synth.csv
  edgerec data synth --users 50000 --items 1000000 --mean-length 40 --seed 7 --out big.csv

Writes user,item,timestamp,event rows: Zipf-like popularity, item clusters with
cluster-to-cluster Markov transitions and within-cluster item chains, and
per-user preferred clusters. The same arguments always give the same file.
"""

STATS_EPILOG = """\
examples:
  edgerec data stats movielens-100k
  edgerec data stats synth.csv --json
  edgerec data stats events.tsv --user-col uid --item-col sku --time-col ts
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` command and its actions to the top-level sub-parsers."""
    data = sub.add_parser(
        "data",
        help="fetch, generate and inspect interaction datasets",
        description="Fetch, generate and inspect interaction datasets.",
        epilog=DATA_EPILOG,
        formatter_class=HelpFormatter,
    )
    data.set_defaults(handler=lambda args: _print_help(data))
    actions = data.add_subparsers(dest="data_command", metavar="ACTION")

    fetch = actions.add_parser(
        "fetch",
        help="download a public dataset into the cache",
        description="Download a public dataset into the cache (verified by sha256).",
        epilog=FETCH_EPILOG,
        formatter_class=HelpFormatter,
    )
    fetch.add_argument("name", choices=["movielens-100k"], help="dataset to fetch")
    fetch.add_argument("--cache-dir", type=Path, help="cache root (default: $EDGEREC_CACHE)")
    fetch.add_argument("--wheel", type=Path, help="use this recbole-1.2.1 wheel (offline)")
    fetch.add_argument("--json", action="store_true", help="print a JSON summary")
    fetch.set_defaults(handler=_fetch)

    synth = actions.add_parser(
        "synth",
        help="generate a synthetic sequential interaction log",
        description="Generate a synthetic sequential interaction log (CSV).",
        epilog=SYNTH_EPILOG,
        formatter_class=HelpFormatter,
    )
    synth.add_argument("--users", type=int, required=True, help="number of users")
    synth.add_argument("--items", type=int, required=True, help="catalog size")
    synth.add_argument("--mean-length", type=float, default=20.0, help="mean events per user")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--clusters", type=int, help="item clusters (default items // 50)")
    synth.add_argument("--out", type=Path, required=True, help="CSV file to write")
    synth.add_argument("--json", action="store_true", help="print a JSON summary")
    synth.set_defaults(handler=_synth)

    stats = actions.add_parser(
        "stats",
        help="users, items, interactions and sequence-length statistics",
        description="Load a dataset (by name or file) as training would and describe it.",
        epilog=STATS_EPILOG,
        formatter_class=HelpFormatter,
    )
    stats.add_argument("dataset", metavar="PATH_OR_NAME", help="movielens-100k or a file")
    add_column_options(stats)
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(handler=_stats)


def add_column_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how to read a log file, shared by every command taking --data.

    Common headers (``user_id``/``item_id``, ``userId``/``movieId``, RecBole's typed
    ``user_id:token``) are recognised without them.
    """
    group = parser.add_argument_group("reading a log file")
    group.add_argument("--format", default="auto", choices=["auto", "movielens", "recbole", "csv"])
    group.add_argument("--user-col", help="user column name (csv/recbole; default: detected)")
    group.add_argument("--item-col", help="item column name (csv/recbole; default: detected)")
    group.add_argument("--time-col", help="timestamp column name (csv/recbole; default: detected)")
    group.add_argument("--delimiter", help="csv delimiter (default: detected)")
    group.add_argument("--min-user-interactions", type=int, default=3, help="default 3")
    group.add_argument("--min-item-interactions", type=int, default=1, help="default 1")
    group.add_argument("--cache-dir", type=Path, help="cache root for named datasets")


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`edgerec.data.load_dataset` from :func:`add_column_options`."""
    options: dict[str, Any] = {
        "min_user_interactions": args.min_user_interactions,
        "min_item_interactions": args.min_item_interactions,
        "format": args.format,
        "cache_dir": args.cache_dir,
    }
    for key in ("user_col", "item_col", "time_col", "delimiter"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    return options


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _fetch(args: argparse.Namespace) -> int:
    from edgerec.data.loaders import load_interactions
    from edgerec.data.movielens import fetch_movielens_100k

    path = fetch_movielens_100k(args.cache_dir, wheel=args.wheel)
    raw = load_interactions(path, format="recbole")
    summary = {
        "name": args.name,
        "path": str(path),
        "files": sorted(p.name for p in path.parent.iterdir()),
        "users": len(raw.user_ids),
        "items": len(raw.item_ids),
        "interactions": len(raw),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.name}: {path}")
        print(f"  users {summary['users']}, items {summary['items']}, ", end="")
        print(f"interactions {summary['interactions']}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from edgerec.data.synth import generate_synthetic

    options: dict[str, Any] = {}
    if args.clusters is not None:
        options["clusters"] = args.clusters
    with tqdm(total=args.users, unit="user", desc="synth", disable=args.json) as bar:
        result = generate_synthetic(
            args.users,
            args.items,
            args.mean_length,
            args.seed,
            out=args.out,
            progress=bar.update,
            **options,
        )
    size = args.out.stat().st_size
    if args.json:
        print(json.dumps({**result.to_json(), "bytes": size}, indent=2))
    else:
        print(f"wrote {result.rows} interactions ({args.users} users, {args.items} items) ", end="")
        print(f"to {args.out} ({size / 1e6:.1f} MB)")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from edgerec.data.preprocess import dataset_stats
    from edgerec.data.sources import load_dataset

    dataset = load_dataset(args.dataset, **load_options(args))
    stats = dataset_stats(dataset)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"dataset       {stats['name']}")
    print(f"users         {stats['users']}")
    print(f"items         {stats['items']}")
    print(f"interactions  {stats['interactions']}")
    print(f"density       {stats['density']:.5f}")
    length = stats.get("length")
    if length:
        print(
            "length        min {min}  median {median:g}  mean {mean:.1f}  p90 {p90:g}  "
            "max {max}".format(**length)
        )
    pre = stats.get("preprocessing", {})
    if pre:
        print(
            f"dropped       {pre['duplicates_dropped'] + pre['filtered_interactions']} "
            f"interactions, {pre['users_dropped']} users, {pre['items_dropped']} items "
            f"(min_user_interactions={pre['min_user_interactions']}, "
            f"min_item_interactions={pre['min_item_interactions']})"
        )
    return 0
