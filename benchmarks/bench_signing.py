"""Benchmark: what checking a bundle's Ed25519 signature adds to ``open``.

For each bundle (a private copy, signed here with a fresh key) it times, as the
median of ``--repeats`` runs:

* ``load_key_ms``: reading and parsing one trusted public key file;
* ``verify_ms``: the signature check at open — read ``manifest.sig.json``,
  parse it, Ed25519-verify the manifest bytes (``TrustedKeys.verify``);
* ``open_bundle_ms``: what ``open`` verified before signing existed — parse
  and check the manifest, hash every listed file (``open_bundle``);
* ``recommender_open_ms`` / ``recommender_open_trusted_ms``: the whole
  ``Recommender.open`` without and with ``trusted_keys`` (bundles that hold
  model artifacts);
* ``sign_ms``: ``sign_bundle`` (checks every file, then signs).

The signature covers the manifest only (which covers every file by hash), so
its cost depends on the manifest's size, not on the artifacts'. ``--blob-mb``
adds stand-in bundles (a manifest, a vocabulary and random payload files of the
given total size) to show that the hashing, not the signature, grows with the
bundle. Writes ``benchmarks/results/signing.json``.

Usage::

    .venv/bin/python benchmarks/bench_signing.py --bundle build/device-bundle \\
        --bundle bundles/ml100k --blob-mb 4.4 156
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgerec.bundle import BundleWriter, open_bundle, read_manifest_bytes
from edgerec.features import FeatureSpec
from edgerec.runtime.signing import TrustedKeys, generate_keys, load_private_key, sign_bundle
from edgerec.vocab import Vocab

RESULTS = Path(__file__).resolve().parent / "results"


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e3, 4)


def blob_bundle(out: Path, total_mb: float, parts: int = 8) -> Path:
    """A stand-in bundle: vocabulary + ``parts`` random payload files of ``total_mb``."""
    rng = np.random.default_rng(0)
    vocab = Vocab([f"i{k}" for k in range(100)])
    size = int(total_mb * 1e6 / parts)
    with BundleWriter(out) as w:
        w.add_bytes("vocab.json", json.dumps(vocab.to_json()).encode())
        for k in range(parts):
            w.add_bytes(f"payload{k}.bin", rng.bytes(size))
        w.finish(
            {
                "status": "accepted",
                "model": {"id": f"blob-{total_mb}MB", "version": "1"},
                "feature_spec": FeatureSpec(max_len=8, num_items=100).to_json(),
            }
        )
    return out


def measure(bundle: Path, work: Path, repeats: int, with_model: bool) -> dict:
    pair = generate_keys(work / "keys")
    key = load_private_key(pair.private_path)
    sign_ms = _median_ms(lambda: sign_bundle(bundle, key), max(1, repeats // 4))
    trust = TrustedKeys.load(pair.public_path)
    raw = read_manifest_bytes(bundle)
    row = {
        "bundle": bundle.name,
        "bytes": sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()),
        "files": len(open_bundle(bundle).files),
        "manifest_bytes": len(raw),
        "load_key_ms": _median_ms(lambda: TrustedKeys.load(pair.public_path), repeats),
        "verify_ms": _median_ms(lambda: trust.verify(bundle, raw), repeats),
        "open_bundle_ms": _median_ms(lambda: open_bundle(bundle), repeats),
        "sign_ms": sign_ms,
    }
    if with_model:
        from edgerec.runtime import Recommender

        def plain() -> None:
            Recommender.open(bundle, accelerator="cpu").close()

        def trusted() -> None:
            Recommender.open(bundle, accelerator="cpu", trusted_keys=trust).close()

        plain()  # warm the imports and the page cache
        row["recommender_open_ms"] = _median_ms(plain, repeats)
        row["recommender_open_trusted_ms"] = _median_ms(trusted, repeats)
    row["verify_share_of_open_bundle"] = round(row["verify_ms"] / row["open_bundle_ms"], 4)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, action="append", default=[], help="real bundle")
    parser.add_argument("--blob-mb", type=float, nargs="*", default=[], help="stand-in sizes")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS / "signing.json")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgerec-bench-signing-") as tmp:
        tmp_dir = Path(tmp)
        for k, src in enumerate(args.bundle):
            work = tmp_dir / f"real{k}"
            copy = Path(shutil.copytree(src, work / src.name))
            (copy / "manifest.sig.json").unlink(missing_ok=True)
            synthetic = "synthetic" in json.loads((copy / "manifest.json").read_text())
            kind = "synthetic (edgerec.bench.synthetic)" if synthetic else "converter bundle"
            rows.append({**measure(copy, work, args.repeats, True), "kind": kind})
        for mb in args.blob_mb:
            work = tmp_dir / f"blob{mb}"
            bundle = blob_bundle(work / f"blob-{mb}MB", mb)
            rows.append({**measure(bundle, work, args.repeats, False), "kind": "stand-in"})
    result = {
        "benchmark": "bench_signing",
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "repeats": args.repeats,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{'bundle':<24} {'MB':>8} {'verify ms':>10} {'open_bundle ms':>15} {'Rec.open ms':>12} "
        f"{'+trusted ms':>12}"
    )
    for r in rows:
        print(
            f"{r['bundle']:<24} {r['bytes'] / 1e6:>8.1f} {r['verify_ms']:>10.3f} "
            f"{r['open_bundle_ms']:>15.2f} {r.get('recommender_open_ms', float('nan')):>12.2f} "
            f"{r.get('recommender_open_trusted_ms', float('nan')):>12.2f}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
