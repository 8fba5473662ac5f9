"""Experiment: can a richer head than the item bias gain on MovieLens-100K's time split?

The federated head today is an additive item bias, and on ML-100K's time split even its
centralized fine-tune is worse than the shipped student, so federated learning has
nothing to recover there. This experiment asks the question that decides the next
design step, with the non-private upper bound of each candidate head: trained centrally
on the union of the devices' post-cut-off examples (what federated learning without
noise approaches), does it beat the shipped student on the devices' held-out last
events, with a paired-bootstrap 95 % CI above 0?

Heads, all trained on the shipped model's outputs (its final hidden state ``h`` and
its item table ``E``, bias ``b``; ``s = h·Eᵀ + b``):

* ``bias``: ``s + δ`` (today's head; ``n`` values).
* ``output embeddings``: ``s + h·ΔEᵀ`` (the rows of the item table; ``n·d``).
* ``adapter``: ``s + (h·W)·Eᵀ`` with ``W`` ``d×d`` (``d²``), and a rank-``r`` form
  ``W = U·Vᵀ`` (``2·d·r``).
* ``adapter + bias`` and ``output embeddings + bias``.

Everything the shipped model computes comes from its real TFLite fp32 artifact in the
LiteRT interpreter: ``h`` is the artifact's own intermediate tensor (the input of the
final item-table matmul), read with ``experimental_preserve_all_tensors``, and the
experiment checks that ``h·Eᵀ + b`` reproduces the artifact's scores.

Training: full-softmax cross-entropy of the next item, mini-batch Adam, L2 towards the
shipped model. Two evaluations:

* **last event** (``simulate-federated``'s protocol): learning rate and epochs picked
  on validation (each device's last training example held out), the head retrained on
  every example and evaluated once on each device's held-out last event.
* **held-out devices**: two-fold cross-fitting over devices — the head trains on half
  of them (a quarter of those held out to pick learning rate and epochs) and is scored
  on every post-cut-off event of the other half, which never trained; each device's
  mean NDCG@10 enters a paired bootstrap over devices. Many more test events per device
  than one, so a smaller gain can be told from noise; it is also what a federated
  evaluation round sees (devices scoring a head on events it did not train on).

Usage::

    .venv/bin/python benchmarks/bench_federated_heads.py    # builds the bundle first (~7 min)
    .venv/bin/python benchmarks/bench_federated_heads.py --bundle path/to/bundle

Writes ``benchmarks/results/federated_heads_ml100k.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out" / "fedheads"
RESULTS = Path(__file__).resolve().parent / "results"


# -- the shipped model's hidden state and item table, from its TFLite artifact -------------
class HiddenStateReader:
    """Runs the bundle's fp32 TFLite artifact and reads ``h``, ``E`` and ``b`` from it."""

    def __init__(self, model_path: Path, num_items: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(str(model_path), experimental_preserve_all_tensors=True)
        self.interp.allocate_tensors()
        self.input = self.interp.get_input_details()[0]
        self.output = self.interp.get_output_details()[0]
        details = self.interp.get_tensor_details()
        self.num_items = num_items
        self.table, self.bias = self._constants(details)
        self.d = self.table.shape[1]
        self.hidden_index = self._hidden_tensor(details)

    def _constants(self, details: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        n = self.num_items
        table = bias = None
        for t in details:
            shape = tuple(t["shape"])
            if t["dtype"] != np.float32 or len(shape) not in (1, 2):
                continue
            try:
                value = self.interp.get_tensor(t["index"])
            except ValueError:
                continue
            if len(shape) == 2 and shape[0] in (n, n + 2) and table is None:
                table = value[1 : n + 1] if shape[0] == n + 2 else value
            elif len(shape) == 1 and shape[0] in (n, n + 2) and bias is None:
                bias = value[1 : n + 1] if shape[0] == n + 2 else value
        if table is None or bias is None:
            raise RuntimeError("item table or output bias not found in the artifact")
        return table.astype(np.float64), bias.astype(np.float64)

    def _hidden_tensor(self, details: list[dict]) -> int:
        """The ``[1, d]`` activation that reproduces the scores through ``E`` and ``b``."""
        row = np.zeros((1, self.input["shape"][1]), self.input["dtype"])
        row[0, -1] = self.num_items + 1  # [MASK] only
        row[0, -2] = 1
        self.interp.set_tensor(self.input["index"], row)
        self.interp.invoke()
        scores = self.interp.get_tensor(self.output["index"])[0].astype(np.float64)
        for t in details:
            if tuple(t["shape"]) != (1, self.d) or t["dtype"] != np.float32:
                continue
            try:
                h = self.interp.get_tensor(t["index"])[0].astype(np.float64)
            except ValueError:
                continue
            if np.abs(h @ self.table.T + self.bias - scores).max() < 1e-3 * np.abs(scores).max():
                return int(t["index"])
        raise RuntimeError("no [1, d] tensor of the artifact reproduces its scores")

    def run(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(scores [B, n], hidden [B, d])`` of input rows, one invoke per row."""
        scores = np.empty((len(rows), self.num_items), np.float32)
        hidden = np.empty((len(rows), self.d), np.float32)
        for i, r in enumerate(rows):
            self.interp.set_tensor(self.input["index"], r[None, :].astype(self.input["dtype"]))
            self.interp.invoke()
            scores[i] = self.interp.get_tensor(self.output["index"])[0]
            hidden[i] = self.interp.get_tensor(self.hidden_index)[0]
        return scores, hidden


# -- heads ------------------------------------------------------------------------------------
@dataclass
class HeadKind:
    """A head: which parameters it trains (``bias``, ``emb``, ``adapter`` of rank ``rank``,
    0 = full ``d×d``)."""

    name: str
    bias: bool = False
    emb: bool = False
    adapter: bool = False
    rank: int = 0

    def size(self, n: int, d: int) -> int:
        size = n if self.bias else 0
        size += n * d if self.emb else 0
        if self.adapter:
            size += d * d if self.rank == 0 else 2 * d * self.rank
        return size


HEADS = (
    HeadKind("bias", bias=True),
    HeadKind("output embeddings", emb=True),
    HeadKind("output embeddings + bias", bias=True, emb=True),
    HeadKind("adapter d×d", adapter=True),
    HeadKind("adapter d×d + bias", bias=True, adapter=True),
    HeadKind("adapter rank 8", adapter=True, rank=8),
)


class Head:
    """The parameters of one :class:`HeadKind` (zero: the shipped model) and its scores."""

    def __init__(self, kind: HeadKind, table: np.ndarray, seed: int) -> None:
        n, d = table.shape
        rng = np.random.default_rng(seed)
        self.kind, self.table = kind, table.astype(np.float32)
        self.params: dict[str, np.ndarray] = {}
        if kind.bias:
            self.params["b"] = np.zeros(n, np.float32)
        if kind.emb:
            self.params["E"] = np.zeros((n, d), np.float32)
        if kind.adapter and kind.rank == 0:
            self.params["W"] = np.zeros((d, d), np.float32)
        if kind.adapter and kind.rank > 0:  # U random, V zero: starts at the shipped model
            self.params["U"] = (rng.standard_normal((d, kind.rank)) / np.sqrt(d)).astype(np.float32)
            self.params["V"] = np.zeros((d, kind.rank), np.float32)

    def scores(self, base: np.ndarray, h: np.ndarray) -> np.ndarray:
        s = base.copy()
        p = self.params
        if "b" in p:
            s += p["b"]
        if "E" in p:
            s += h @ p["E"].T
        if "W" in p:
            s += (h @ p["W"]) @ self.table.T
        if "U" in p:
            s += ((h @ p["U"]) @ p["V"].T) @ self.table.T
        return s

    def grads(self, base: np.ndarray, h: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
        """Mean cross-entropy of the next items ``y`` and its gradients."""
        s = self.scores(base, h)
        s -= s.max(axis=1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=1, keepdims=True)
        loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
        g = p
        g[np.arange(len(y)), y] -= 1.0
        g /= len(y)
        out = {}
        if "b" in self.params:
            out["b"] = g.sum(axis=0)
        if "E" in self.params:
            out["E"] = g.T @ h
        if "W" in self.params or "U" in self.params:
            ge = g @ self.table  # [B, d]: d loss / d (adapted h)
            if "W" in self.params:
                out["W"] = h.T @ ge
            else:
                hu = h @ self.params["U"]
                out["V"] = ge.T @ hu
                out["U"] = h.T @ (ge @ self.params["V"])
        return loss, out


def train(
    kind: HeadKind,
    table: np.ndarray,
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    lr: float,
    epochs: int,
    l2: float,
    batch: int,
    seed: int,
    on_epoch: Any = None,
) -> Head:
    """Mini-batch Adam on ``data = (base scores, hidden, targets)``; ``on_epoch(e, head)``."""
    base, hidden, y = data
    head = Head(kind, table, seed)
    m = {k: np.zeros_like(v) for k, v in head.params.items()}
    v = {k: np.zeros_like(v) for k, v in head.params.items()}
    rng = np.random.default_rng(seed)
    step = 0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(y))
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            _, grads = head.grads(base[idx], hidden[idx], y[idx])
            step += 1
            for k, g in grads.items():
                if k != "U":  # the random down-projection's scale is not penalised
                    g = g + l2 * head.params[k]
                m[k] = 0.9 * m[k] + 0.1 * g
                v[k] = 0.999 * v[k] + 0.001 * g * g
                mh = m[k] / (1 - 0.9**step)
                vh = v[k] / (1 - 0.999**step)
                head.params[k] -= (lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
        if on_epoch is not None:
            on_epoch(epoch, head)
    return head


def ndcg10(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    from edgerec.metrics import per_user_metrics, target_ranks

    return per_user_metrics(target_ranks(scores, targets + 1), 10)["NDCG@10"]


# -- the experiment ---------------------------------------------------------------------------
def build_or_open_bundle(args: argparse.Namespace, split: Any) -> Path:
    if args.bundle:
        return Path(args.bundle)
    bundle = OUT / "model" / "bundle"
    if (bundle / "manifest.json").is_file() and not args.rebuild:
        return bundle
    from edgerec.simulation.shipped_bundle import build_bundle

    # the simulation's shipped model, exactly as simulate-federated builds it
    path, _ = build_bundle(split.pre, OUT / "model", seed=42, name="movielens-100k-pre-cutoff")
    return Path(path)


Data = tuple[np.ndarray, np.ndarray, np.ndarray]


def select_and_fit(
    kind: HeadKind, table: np.ndarray, fit: Data, valid: Data, full: Data, args: Any
) -> tuple[Head | None, float, int, dict[str, list[float]]]:
    """Pick the learning rate and epochs on ``valid`` (training on ``fit``), then
    retrain on ``full``; ``(head or None when 0 epochs won, lr, epochs, curves)``."""
    shipped_valid = float(ndcg10(valid[0], valid[2]).mean())
    curves: dict[str, list[float]] = {}
    for lr in args.lrs:
        curve = [shipped_valid]

        def note(epoch: int, head: Head, curve: list[float] = curve) -> None:
            curve.append(float(ndcg10(head.scores(valid[0], valid[1]), valid[2]).mean()))

        train(kind, table, fit, lr=lr, epochs=args.epochs, l2=args.l2, batch=args.batch,
              seed=args.seed, on_epoch=note)  # fmt: skip
        curves[f"{lr:g}"] = [round(c, 5) for c in curve]
    best_lr, best_epochs = max(
        ((lr, int(np.argmax(c))) for lr, c in curves.items()), key=lambda t: curves[t[0]][t[1]]
    )
    if best_epochs == 0:
        return None, float(best_lr), 0, curves
    head = train(kind, table, full, lr=float(best_lr), epochs=best_epochs, l2=args.l2,
                 batch=args.batch, seed=args.seed)  # fmt: skip
    return head, float(best_lr), best_epochs, curves


def held_out_devices(
    kind: HeadKind, table: np.ndarray, data: Data, owner: np.ndarray, args: Any
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Two-fold cross-fitting over devices: the head trains on one half of the devices
    (a quarter of them held out to pick lr and epochs) and is scored on every
    post-cut-off event of the other half, which never trained. Returns each device's
    mean NDCG@10 under the head and under the shipped model, and each fold's picks."""
    devices = np.random.default_rng([args.seed, 7]).permutation(np.unique(owner))
    head_sum = np.zeros(owner.max() + 1)
    ship_sum = np.zeros(owner.max() + 1)
    picks = []
    for test_devs in np.array_split(devices, 2):
        train_devs = devices[~np.isin(devices, test_devs)]
        valid_devs = train_devs[: len(train_devs) // 4]

        def part(devs: np.ndarray) -> Data:
            m = np.isin(owner, devs)
            return data[0][m], data[1][m], data[2][m]

        fit = part(train_devs[len(train_devs) // 4 :])
        head, lr, epochs, _ = select_and_fit(
            kind, table, fit, part(valid_devs), part(train_devs), args
        )
        base, hidden, y = part(test_devs)
        test_owner = owner[np.isin(owner, test_devs)]
        shipped = ndcg10(base, y)
        mine = shipped if head is None else ndcg10(head.scores(base, hidden), y)
        head_sum += np.bincount(test_owner, mine, minlength=len(head_sum))
        ship_sum += np.bincount(test_owner, shipped, minlength=len(ship_sum))
        picks.append({"lr": lr, "epochs": epochs, "test_devices": len(test_devs)})
    counts = np.bincount(owner, minlength=len(head_sum))
    keep = counts > 0
    return head_sum[keep] / counts[keep], ship_sum[keep] / counts[keep], picks


def bundle_quality(bundle: Path) -> dict[str, Any]:
    """The shipped bundle's verdict from its converter report."""
    report = json.loads((bundle / "report.json").read_text())
    q = report["quality"]
    return {
        "status": report["status"],
        "artifact": q["artifact"],
        "teacher_ndcg10": q["teacher"]["NDCG@10"],
        "student_keras_ndcg10": q["student_keras"]["NDCG@10"],
        "artifact_ndcg10": q["default"]["NDCG@10"],
        "ratio": q["ratio"],
        "distillation_epochs_run": len(report["distillation_history"]),
    }


def main() -> int:  # noqa: PLR0915 (one linear experiment)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", help="shipped bundle (default: build it under benchmarks/out)")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    ap.add_argument("--epochs", type=int, default=12, help="most epochs (picked on validation)")
    ap.add_argument("--l2", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "federated_heads_ml100k.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))

    from edgerec.data.sources import load_raw
    from edgerec.federated.local import build_examples
    from edgerec.metrics import paired_bootstrap
    from edgerec.runtime import Recommender
    from edgerec.simulation.experiment import SimConfig
    from edgerec.simulation.timesplit import encode_devices, time_split

    t_start = time.perf_counter()
    cfg = SimConfig()
    _, raw = load_raw("movielens-100k")
    split = time_split(raw, cfg.cutoff_quantile, min_post=cfg.min_post)
    bundle = build_or_open_bundle(args, split)
    rec = Recommender.open(bundle, backend="litert", accelerator="cpu")
    spec = rec.spec
    manifest = json.loads((bundle / "manifest.json").read_text())
    fp32 = next(a for a in manifest["artifacts"] if a.get("precision") == "fp32"
                and a.get("format") == "tflite")  # fmt: skip
    artifact = bundle / fp32["path"]
    reader = HiddenStateReader(artifact, spec.num_items)
    arrays = encode_devices(split.devices, rec.vocab)

    # training examples (post-cut-off targets) per device; validation = each device's last
    train_rows, train_y, owner = [], [], []
    for i, a in enumerate(arrays):
        if not a.trainable:
            continue
        rows, items = build_examples(spec, a.history, min(a.n_train, cfg.max_examples))
        train_rows.append(rows)
        train_y.append(items - 1)
        owner.append(np.full(len(items), i))
    rows_all = np.concatenate(train_rows)
    y_all = np.concatenate(train_y)
    owner_all = np.concatenate(owner)
    last = np.r_[owner_all[1:] != owner_all[:-1], True]  # each device's last example
    multi = np.bincount(owner_all)[owner_all] >= 2
    is_valid = last & multi
    base_all, hidden_all = reader.run(rows_all)
    rebuilt = hidden_all.astype(np.float64) @ reader.table.T + reader.bias
    max_err = float(np.abs(rebuilt - base_all).max())

    evaluable = [i for i, a in enumerate(arrays) if a.evaluable]
    test_rows = spec.encode_batch([arrays[i].history for i in evaluable])
    test_y = np.array([arrays[i].target for i in evaluable], np.int64) - 1
    test_base, test_hidden = reader.run(test_rows)
    shipped = ndcg10(test_base, test_y)
    table = reader.table.astype(np.float32)
    train_part = (base_all[~is_valid], hidden_all[~is_valid], y_all[~is_valid])
    valid_part = (base_all[is_valid], hidden_all[is_valid], y_all[is_valid])
    everything = (base_all, hidden_all, y_all)
    shipped_valid = float(ndcg10(valid_part[0], valid_part[2]).mean())
    per_ship_all = np.bincount(owner_all, ndcg10(base_all, y_all)) / np.bincount(owner_all)

    rows_out = []
    for kind in HEADS:
        t0 = time.perf_counter()
        head, best_lr, best_epochs, curves = select_and_fit(
            kind, table, train_part, valid_part, everything, args
        )
        test = shipped if head is None else ndcg10(head.scores(test_base, test_hidden), test_y)
        boot = paired_bootstrap(test, shipped, n_resamples=2000, seed=args.seed)
        per_head, per_ship, picks = held_out_devices(kind, table, everything, owner_all, args)
        cross = paired_bootstrap(per_head, per_ship, n_resamples=2000, seed=args.seed)
        row = {
            "head": kind.name,
            "parameters": kind.size(spec.num_items, reader.d),
            "lr": best_lr,
            "epochs": best_epochs,
            "validation_ndcg10_by_lr": curves,
            "test_ndcg10": float(test.mean()),
            "delta_vs_shipped": float(boot.diff),
            "delta_ci95": [float(boot.low), float(boot.high)],
            "held_out_devices": {
                "ndcg10": float(per_head.mean()),
                "shipped_ndcg10": float(per_ship.mean()),
                "delta_vs_shipped": float(cross.diff),
                "delta_ci95": [float(cross.low), float(cross.high)],
                "folds": picks,
            },
            "seconds": round(time.perf_counter() - t0, 1),
        }
        rows_out.append(row)
        print(
            f"{kind.name:26s} {row['parameters']:>6d}  last event: lr {best_lr:g} ep "
            f"{best_epochs:2d} {row['test_ndcg10']:.4f} Δ {boot.diff:+.4f} [{boot.low:+.4f}, "
            f"{boot.high:+.4f}]  held-out devices: {per_head.mean():.4f} Δ {cross.diff:+.4f} "
            f"[{cross.low:+.4f}, {cross.high:+.4f}]  ({row['seconds']} s)",
            flush=True,
        )

    result = {
        "benchmark": "federated_heads_ml100k",
        "kind": "experiment: centralized fine-tune (non-private upper bound) of candidate heads",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "bundle": str(bundle),
        "artifact": fp32["path"],
        "split": {
            "cutoff_quantile": cfg.cutoff_quantile,
            "devices": len(arrays),
            "trainable_devices": int(len(np.unique(owner_all))),
            "train_examples": int((~is_valid).sum()),
            "validation_examples": int(is_valid.sum()),
            "evaluated_devices": len(evaluable),
        },
        "bundle_quality": bundle_quality(bundle),
        "hidden_state": {"d": reader.d, "max_abs_score_error": max_err},
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "shipped": {
            "test_ndcg10": float(shipped.mean()),
            "validation_ndcg10": shipped_valid,
            "held_out_devices_ndcg10": float(per_ship_all[np.bincount(owner_all) > 0].mean()),
        },
        "heads": rows_out,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"shipped test NDCG@10 {shipped.mean():.4f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
