"""Synthetic bundles for the catalog-scaling benchmark (imports TensorFlow).

A synthetic bundle holds an **untrained** student of a given architecture with a
catalog of ``n`` items, converted by the converter's own passes (Keras model ->
SavedModel export pass -> TFLite pass), plus a vocabulary, a Zipf-like popularity
prior and realistic-length reference histories. Scores are meaningless, latency
and memory are not: they depend on the shapes only.

``edgerec bench --catalog-sizes`` runs this module in a subprocess (so TensorFlow
never enters the benchmark process)::

    python -m edgerec.bench.synthetic --num-items 100000 --out /tmp/syn100k \\
        --d-model 64 --num-blocks 2 --num-heads 2 --ffn-dim 256 --max-len 50 \\
        --precision int8-dynamic

It prints one JSON line: ``{"path": ..., "seconds": ..., "bytes": ...}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: bumped when the synthetic bundle layout changes (part of the cache key)
SYNTHETIC_FORMAT = 1
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8")


@dataclass(frozen=True)
class SyntheticSpec:
    """Shape of a synthetic bundle: architecture, catalog size, artifact precision."""

    num_items: int
    max_len: int = 50
    d_model: int = 64
    num_blocks: int = 2
    num_heads: int = 2
    ffn_dim: int = 256
    mask_value: float = -16.0
    precision: str = "int8-dynamic"
    seed: int = 0

    def key(self) -> str:
        """Stable cache key (directory name) of this spec."""
        import hashlib

        payload = json.dumps({**asdict(self), "format": SYNTHETIC_FORMAT}, sort_keys=True)
        digest = hashlib.sha256(payload.encode()).hexdigest()[:10]
        return f"n{self.num_items}-{self.precision}-{digest}"

    @classmethod
    def like(cls, model_config: dict[str, Any], num_items: int, precision: str) -> SyntheticSpec:
        """The architecture of a bundle's ``manifest["model"]["config"]`` with ``num_items``."""
        keys = ("max_len", "d_model", "num_blocks", "num_heads", "ffn_dim", "mask_value")
        return cls(
            num_items=num_items,
            precision=precision,
            **{k: model_config[k] for k in keys if k in model_config},
        )


def zipf_counts(num_items: int, seed: int = 0, exponent: float = 1.0) -> np.ndarray:
    """Int64 popularity counts with a Zipf-like long tail, in a shuffled item order."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, num_items + 1, dtype=np.float64)
    counts = np.maximum(1, (1e6 / ranks**exponent)).astype(np.int64)
    rng.shuffle(counts)
    return counts


def reference_rows(
    num_items: int, max_len: int, rows: int = 8, seed: int = 0, counts: np.ndarray | None = None
) -> np.ndarray:
    """Encoded int32 input rows ``[rows, max_len]`` of popularity-sampled histories.

    Lengths vary from a third of the window to a full window, like real users.
    """
    from edgerec.features import FeatureSpec

    rng = np.random.default_rng(seed + 1)
    counts = zipf_counts(num_items, seed) if counts is None else counts
    p = counts / counts.sum()
    spec = FeatureSpec(max_len=max_len, num_items=num_items)
    out = np.zeros((rows, max_len), np.int32)
    for r in range(rows):
        length = int(rng.integers(max(1, spec.history_len // 3), spec.history_len + 1))
        hist = rng.choice(num_items, size=length, p=p) + 1
        spec.encode(hist, out=out[r])
    return out


def build(spec: SyntheticSpec, out_dir: str | Path) -> Path:
    """Build a synthetic bundle at ``out_dir`` (replaced if present). Imports TensorFlow."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from edgerec import __version__
    from edgerec.bundle import BundleWriter
    from edgerec.converters.artifacts import scores_output
    from edgerec.converters.config import Precision
    from edgerec.converters.passes import savedmodel, tflite
    from edgerec.converters.passes.distil import StudentArtifact, encoder_params
    from edgerec.converters.passes.package import npy_bytes
    from edgerec.features import FeatureSpec
    from edgerec.teacher.config import ModelConfig
    from edgerec.teacher.model import BERT4Rec
    from edgerec.vocab import Vocab

    if spec.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} (got {spec.precision!r})")
    keras.utils.set_random_seed(spec.seed)
    cfg = ModelConfig(
        max_len=spec.max_len,
        d_model=spec.d_model,
        num_blocks=spec.num_blocks,
        num_heads=spec.num_heads,
        ffn_dim=spec.ffn_dim,
        dropout=0.0,
        attention_dropout=0.0,
        mask_value=spec.mask_value,
        gelu_approximate=True,
    )
    cfg.validate()
    feature_spec = FeatureSpec(max_len=spec.max_len, num_items=spec.num_items)
    model = BERT4Rec(spec.num_items, cfg, name="student")
    counts = zipf_counts(spec.num_items, spec.seed)
    rows = reference_rows(spec.num_items, spec.max_len, seed=spec.seed, counts=counts)
    student = StudentArtifact(
        model=model, spec=feature_spec, config=cfg, best_epoch=0, best_valid={}
    )
    precision = Precision(spec.precision)
    vocab = Vocab([f"s{i}" for i in range(spec.num_items)])
    with tempfile.TemporaryDirectory(prefix="edgerec-synthetic-") as tmp:
        work = Path(tmp)
        saved = savedmodel.run(student, savedmodel.ExportOptions(work / "saved_model"))
        filename = f"student.{precision}.tflite"
        calibration = rows if precision is Precision.INT8 else None
        art = tflite.run(saved, tflite.TFLiteOptions(precision, work / filename, calibration))
        vocab.save(work / "vocab.json")
        roles = ["default"] + (["cpu-fallback"] if precision is Precision.FP32 else [])
        with BundleWriter(out_dir, force=True) as writer:
            writer.add_file("vocab.json", work / "vocab.json")
            writer.add_bytes("popularity.npy", npy_bytes(counts))
            writer.add_bytes("reference/inputs.npy", npy_bytes(rows))
            writer.add_artifact(
                {
                    "name": art.name,
                    "path": filename,
                    "format": "tflite",
                    "precision": str(precision),
                    "inputs": art.inputs,
                    "outputs": art.outputs or [scores_output(spec.num_items)],
                    "roles": roles,
                    "gpu": {"ready": False, "blocking_ops": [], "reasons": ["synthetic"]},
                    "metrics": {},
                    "experimental": precision is Precision.INT8,
                    "notes": ["synthetic: untrained weights, for latency and memory only"],
                },
                art.path,
            )
            writer.finish(
                {
                    "status": "accepted",
                    "edgerec_version": __version__,
                    "synthetic": {**asdict(spec), "format": SYNTHETIC_FORMAT},
                    "model": {
                        "id": f"synthetic-{spec.num_items}",
                        "version": spec.key(),
                        "architecture": "bert4rec",
                        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                        "num_params": encoder_params(cfg, spec.num_items),
                    },
                    "vocab": {
                        "path": "vocab.json",
                        "sha256": vocab.sha256(),
                        "num_items": spec.num_items,
                        "pad_id": 0,
                        "mask_id": vocab.mask_id,
                    },
                    "feature_spec": feature_spec.to_json(),
                    "default_artifact": art.name,
                    "fallback_artifact": art.name if precision is Precision.FP32 else None,
                    "popularity": {"path": "popularity.npy", "dtype": "int64"},
                    "reference": {"inputs": "reference/inputs.npy", "rows": len(rows)},
                }
            )
    return Path(out_dir)


def main(argv: list[str] | None = None) -> int:
    """Command line of the subprocess; prints one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-items", type=int, required=True)
    parser.add_argument("--out", required=True)
    for name, default in (
        ("max-len", 50),
        ("d-model", 64),
        ("num-blocks", 2),
        ("num-heads", 2),
        ("ffn-dim", 256),
        ("seed", 0),
    ):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--mask-value", type=float, default=-16.0)
    parser.add_argument("--precision", default="int8-dynamic", choices=PRECISIONS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = SyntheticSpec(
        num_items=args.num_items,
        max_len=args.max_len,
        d_model=args.d_model,
        num_blocks=args.num_blocks,
        num_heads=args.num_heads,
        ffn_dim=args.ffn_dim,
        mask_value=args.mask_value,
        precision=args.precision,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    path = build(spec, args.out)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    out = {"path": str(path), "seconds": time.perf_counter() - t0, "bytes": size}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
