"""edgerec quickstart: rank items on this machine from a converted bundle.

Runs on any laptop with ``pip install 'edgerec[runtime]'`` (no TensorFlow)::

    python examples/quickstart.py                      # bundles/ml100k (make demo + convert)
    python examples/quickstart.py path/to/bundle --backend onnx --k 5

It opens the bundle (every sha256 is verified), records a few events of one user
into a history store in a temporary folder, asks for recommendations for that
user, and prints them with the accelerator in use and the latency of one
``recommend`` call (feature extraction + inference + top-k).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgerec.runtime import HistoryStore, Recommender

DEFAULT_BUNDLE = "bundles/ml100k"


def sample_history(rec: Recommender, length: int = 8) -> list[str]:
    """A realistic history: the last items of the bundle's first reference user
    (real held-out data), or the most popular items when the bundle has none."""
    ref = rec.manifest.data.get("reference") or {}
    path = rec.manifest.path(ref.get("inputs", "reference/inputs.npy"))
    if path.is_file():
        row = np.load(path)[0]
        n = rec.vocab.num_items
        items = [rec.vocab.item_ids[int(i) - 1] for i in row if 1 <= int(i) <= n]
        if items:
            return items[-length:]
    top = rec.recommend([], k=length)  # empty history: the popularity prior
    return [r.item_id for r in top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python examples/quickstart.py bundles/ml100k --k 5",
    )
    parser.add_argument("bundle", nargs="?", default=DEFAULT_BUNDLE, help="bundle folder")
    parser.add_argument("--backend", default="auto", choices=["auto", "litert", "onnx"])
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--k", type=int, default=10, help="how many recommendations")
    parser.add_argument("--runs", type=int, default=200, help="calls for the latency figure")
    args = parser.parse_args(argv)

    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        print(
            f"no bundle at {bundle}. Make one with `make demo` and\n"
            f"  edgerec convert --teacher runs/teacher --data movielens-100k --out {bundle}\n"
            "or pass the path of a bundle you were given.",
            file=sys.stderr,
        )
        return 2

    with tempfile.TemporaryDirectory(prefix="edgerec-quickstart-") as tmp:
        store = HistoryStore(Path(tmp) / "history.db")
        t0 = time.perf_counter()
        rec = Recommender.open(
            bundle, backend=args.backend, accelerator=args.accelerator, store=store
        )
        open_ms = (time.perf_counter() - t0) * 1e3
        with rec, store:
            print(f"bundle      {bundle}  ({rec.manifest.model_id}@{rec.manifest.model_version})")
            print(
                f"artifact    {rec.artifact.name} ({rec.artifact.format}, {rec.precision}) "
                f"on {rec.backend_name}, accelerator: {rec.accelerator}"
            )
            print(f"opened in   {open_ms:.0f} ms (hashes verified)")

            user = "demo-user"
            history = sample_history(rec)
            now = time.time()
            for i, item in enumerate(history):
                rec.record(user, item, now - 60 * (len(history) - i), "view")
            print(f"recorded    {len(history)} events for {user}: {', '.join(history)}")

            recs = rec.recommend_for(user, k=args.k)
            print(f"\ntop {len(recs)} for {user}:")
            for rank, r in enumerate(recs, 1):
                print(f"  {rank:>2}. item {r.item_id:<12} score {r.score:8.3f}")

            events = store.history(user)
            samples = []
            for _ in range(max(1, args.runs)):
                t0 = time.perf_counter()
                rec.recommend(events, k=args.k)
                samples.append(time.perf_counter() - t0)
            ms = np.asarray(samples) * 1e3
            print(
                f"\nlatency     recommend(): p50 {np.percentile(ms, 50):.3f} ms, "
                f"p95 {np.percentile(ms, 95):.3f} ms over {len(ms)} calls "
                f"({rec.accelerator}, 1 thread)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
