"""``edgerec simulate-federated``: time split and evaluation bookkeeping (fast), and the
real command end to end on a tiny synthetic log whose popularity shifts after the
cut-off (slow: trains a tiny teacher, converts it, runs the coordinator over HTTP)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgerec.data.dataset import Interactions
from edgerec.errors import InputError
from edgerec.features import FeatureSpec
from edgerec.simulation.evaluation import Evaluator, central_finetune, device_examples
from edgerec.simulation.timesplit import encode_devices, time_split
from edgerec.vocab import Vocab


def _log() -> Interactions:
    """Three users; times chosen so the cut-off at t=10 splits them differently."""
    rows = [  # user, item, time (file order scrambled on purpose)
        ("a", "i1", 1), ("a", "i2", 2), ("a", "i3", 11), ("a", "i4", 12), ("a", "i5", 13),
        ("b", "i1", 3), ("b", "i2", 4), ("b", "i3", 5), ("b", "i4", 12),  # 1 post event
        ("c", "i9", 10), ("c", "i2", 14), ("c", "i1", 10),  # new user, tie at t=10
    ]  # fmt: skip
    users = sorted({r[0] for r in rows})
    items = sorted({r[1] for r in rows})
    return Interactions(
        users=np.array([users.index(r[0]) for r in rows], np.int32),
        items=np.array([items.index(r[1]) for r in rows], np.int32),
        timestamps=np.array([r[2] for r in rows], np.int64),
        user_ids=users,
        item_ids=items,
    )


def test_time_split_devices_and_pre_log() -> None:
    split = time_split(_log(), cutoff=10, min_post=2)
    assert split.cutoff == 10
    # everything before t=10 goes to the cloud, nothing after
    assert sorted(split.pre.timestamps.tolist()) == [1, 2, 3, 4, 5]
    by_user = {d.user_id: d for d in split.devices}
    assert set(by_user) == {"a", "c"}  # b has only one post-cut-off event
    a, c = by_user["a"], by_user["c"]
    assert a.items == ("i1", "i2", "i3", "i4", "i5") and a.n_pre == 2
    assert a.history == ("i1", "i2", "i3", "i4") and a.test_item == "i5"
    assert a.n_post_train == 2  # i3, i4 (i5 is the held-out test)
    assert c.items == ("i9", "i1", "i2")  # the t=10 tie keeps file order
    assert c.n_pre == 0 and c.n_post_train == 2
    assert split.stats["devices"] == 2 and split.stats["devices_new_users"] == 1


def test_encode_devices_skips_unknown_items_and_targets() -> None:
    split = time_split(_log(), cutoff=10, min_post=2)
    vocab = Vocab(["i1", "i2", "i3", "i4"])  # the shipped model never saw i5 or i9
    a, c = encode_devices(split.devices, vocab)
    assert a.history.tolist() == [1, 2, 3, 4] and a.n_train == 2
    assert a.target == 0 and not a.evaluable  # i5 is unknown: not ranked by any row
    assert c.history.tolist() == [1] and c.n_train == 0  # i9 skipped: i1 has no prefix
    assert c.target == 2 and c.evaluable and not c.trainable


def test_evaluator_and_central_finetune_bookkeeping() -> None:
    """Full-ranking metrics of the test targets; examples are the post-cut-off positions;
    a head that boosts the test item moves it to rank 0."""
    spec = FeatureSpec(max_len=4, num_items=20)
    calls: list[int] = []

    def score(rows: np.ndarray) -> np.ndarray:  # constant model: every item ties
        calls.append(len(rows))
        return np.zeros((len(rows), spec.num_items), np.float32)

    from edgerec.simulation.timesplit import DeviceArrays

    devs = [DeviceArrays(np.array([1, 2, 3, 4]), 2, 5), DeviceArrays(np.array([2, 3]), 1, 6)]
    ev = Evaluator(spec, score, devs)
    assert len(ev) == 2 and calls == [2]  # scored once
    shipped = ev.evaluate("shipped")
    assert shipped.ndcg.tolist() == [0.0, 0.0]  # ties are broken against the target
    bias = np.zeros(20, np.float32)
    bias[4] = 1.0  # item 5
    row = ev.evaluate("boost", bias)
    assert row.ndcg.tolist() == [1.0, 0.0] and row.hr.tolist() == [1.0, 0.0]
    ex = device_examples(spec, score, devs[0], max_examples=10)
    assert (ex.targets + 1).tolist() == [3, 4]  # the last n_train positions only
    # central: device 0 holds out target 4 and trains on 3, device 1 the reverse, so
    # training on the rest helps validation and the epoch count is >= 1
    from edgerec.federated.local import Examples

    other = Examples(ex.scores.copy(), ex.targets[::-1].copy())
    w, info = central_finetune(spec, {0: ex, 1: other}, lr=0.5, batch_size=8, max_epochs=3)
    assert info["epochs"] >= 1 and info["validation_ndcg_by_epoch"][0] == 0.0
    assert w.shape == (20,) and w[2] > 0 and w[3] > 0 and w[0] < 0
    # with nothing to gain on validation the shipped head (0 epochs) is kept
    w0, info0 = central_finetune(spec, {0: ex}, lr=0.5, batch_size=8, max_epochs=3)
    assert info0["epochs"] == 0 and not w0.any()
    summary = row.summary(shipped, row, resamples=50)
    assert summary["recovery"] == pytest.approx(1.0)


def test_held_out_evaluator_averages_each_devices_events() -> None:
    """A held-out device's metric is the mean over its post-cut-off events; the "seen
    excluded" metric drops each event's own prefix, not the device's later items."""
    from edgerec.simulation.evaluation import HeldOutEvaluator
    from edgerec.simulation.experiment import SimConfig
    from edgerec.simulation.timesplit import DeviceArrays

    spec = FeatureSpec(max_len=4, num_items=20)

    def score(rows: np.ndarray) -> np.ndarray:  # item 1 on top, then 2, 3, ...
        return np.tile(-0.01 * np.arange(spec.num_items, dtype=np.float32), (len(rows), 1))

    devs = {0: DeviceArrays(np.array([1, 2, 3, 4]), 2, 5), 3: DeviceArrays(np.array([2, 1]), 1, 6)}
    examples = {d: device_examples(spec, score, a, max_examples=10) for d, a in devs.items()}
    ev = HeldOutEvaluator(spec, devs, examples, max_examples=10)
    assert len(ev) == 2 and ev.events == 3  # device 0: targets 3, 4; device 3: target 1
    shipped = ev.evaluate("shipped")
    # device 0: item 3 at rank 2, item 4 at rank 3; device 3: item 1 at rank 0
    assert shipped.ndcg[0] == pytest.approx((1 / np.log2(4) + 1 / np.log2(5)) / 2)
    assert shipped.ndcg[1] == 1.0
    # excluding each event's own prefix ({1, 2} and {1, 2, 3}) puts both targets first
    assert shipped.ndcg_excl[0] == 1.0
    bias = np.zeros(20, np.float32)
    bias[3] = 5.0  # item 4 on top: device 0's second event first, its first one drops
    row = ev.evaluate("boost", bias)
    assert row.ndcg[0] == pytest.approx((1 / np.log2(5) + 1.0) / 2)
    assert row.ndcg[1] == pytest.approx(1 / np.log2(3))
    with pytest.raises(ValueError, match="never train"):
        ev.evaluate("local", local_biases={0: bias})
    with pytest.raises(InputError, match="eval_protocol"):
        SimConfig(eval_protocol="random")
    with pytest.raises(InputError, match="heldout_fraction"):
        SimConfig(eval_protocol="held-out-devices", heldout_fraction=1.0)


def write_shift_log(path: Path, users: int = 160, items: int = 40, seed: int = 0) -> int:
    """Catalog walks (mostly +1 steps); from ``shift`` on, 60% of events are one of
    five trending items. Returns the shift time (use it as the cut-off)."""
    rng = np.random.default_rng(seed)
    trending = [3, 11, 19, 27, 35]
    shift = 1_000_100
    lines = ["user,item,timestamp"]
    for u in range(users):
        start = 1_000_000 + int(rng.integers(0, 140))
        pos = int(rng.integers(items))
        for k in range(16):
            t = start + k
            if t >= shift and rng.random() < 0.6:
                item = trending[int(rng.integers(len(trending)))]
            else:
                pos = (pos + 1) % items if rng.random() < 0.9 else int(rng.integers(items))
                item = pos
            lines.append(f"u{u},i{item},{t}")
    path.write_text("\n".join(lines) + "\n")
    return shift


@pytest.mark.slow
def test_simulate_federated_end_to_end(tmp_path: Path, capsys) -> None:
    from edgerec.cli import main
    from tests.converters.tiny import TEACHER_CONFIG, TINY_CONVERT, toml_text

    data = tmp_path / "shift.csv"
    shift = write_shift_log(data)
    teacher = {"model": TEACHER_CONFIG["model"], "train": {**TEACHER_CONFIG["train"], "epochs": 6}}
    convert = {
        **TINY_CONVERT,
        "distil": {**TINY_CONVERT["distil"], "epochs": 4},
        "export": {
            "targets": ["tflite"],
            "precisions": ["fp32", "int8-dynamic"],
            "gpu": False,
            "calibration_samples": 50,
        },
        "validate": {**TINY_CONVERT["validate"], "num_sequences": 40},
        "gates": {"quality_min_ratio": 0.5},
    }
    (tmp_path / "teacher.toml").write_text(toml_text(teacher))
    (tmp_path / "convert.toml").write_text(toml_text(convert))
    out = tmp_path / "sim"
    code = main(
        [
            "-q",
            "simulate-federated",
            "--data", str(data),
            "--out", str(out),
            "--cutoff", str(shift),
            "--teacher-config", str(tmp_path / "teacher.toml"),
            "--convert-config", str(tmp_path / "convert.toml"),
            "--rounds", "3",
            "--epsilons", "8",
            "--bootstrap", "200",
            "--fed-eval-min-events", "20",
            "--fed-eval-gate",
            "--fed-eval-events", "1",
            "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out
    for label in (
        "shipped student",
        "local-only personalization",
        "federated, no DP",
        "federated, DP eps=8",
        "centralized fine-tune",
        "bytes up/dev/round",
        "federated evaluation",
    ):
        assert label in table
    result = json.loads((out / "result.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    shipped = rows["shipped student"]
    fed = rows["federated, no DP"]
    assert fed["rounds"] == 3 and fed["bytes_up"] > 0 and fed["transport"].startswith("HTTP")
    assert fed["NDCG@10"] > shipped["NDCG@10"] + 0.02
    assert fed["vs_shipped"]["low"] > 0  # significant on this shift
    dp = rows["federated, DP eps=8"]
    assert dp["epsilon"] is not None and dp["epsilon"] <= 8.0
    assert result["runtime"]["top10_agreement_with_recommend"] >= 0.9
    # the federated evaluation judges every trained head; the significant gain ships
    verdict = fed["federated_evaluation"]
    assert verdict["decision"] == "publish" and verdict["z"] > 1.645
    assert verdict["survivors"] == verdict["cohort"] > 0 and verdict["epsilon"] is None
    assert dp["federated_evaluation"]["epsilon"] == 1.0
    assert rows["centralized fine-tune (non-private upper bound)"]["federated_evaluation"]
    # the coordinator's gate: an evaluation round after each of the 3 training rounds
    gate = fed["gate"]
    assert len(gate["evaluations"]) == 3 and gate["published"] >= 1
    assert {h["task"] for h in fed["history"]} == {"train", "evaluate"}
    assert all(v["events"] > 0 for v in gate["evaluations"])
    assert "heads published" in table


def test_inprocess_round_is_the_mean_of_the_device_updates() -> None:
    """One round, every device, no noise: the fixed-point sum decodes to the plain mean
    of the devices' clipped LocalTrainer updates (up to the 2^-f grid)."""
    from edgerec.federated.clipping import clip_l2
    from edgerec.federated.local import Examples, LocalTrainer
    from edgerec.simulation.experiment import run_inprocess_rounds

    spec = FeatureSpec(max_len=4, num_items=30)
    rng = np.random.default_rng(0)
    examples = {
        d: Examples(rng.normal(size=(5, 30)).astype(np.float32), rng.integers(0, 30, 5))
        for d in range(6)
    }
    trainer = {"lr": 0.5, "epochs": 2, "batch_size": 4}
    w, info = run_inprocess_rounds(
        spec, examples, rounds=1, clip=0.3, noise_multiplier=0.0, sampling_rate=1.0,
        min_cohort_fraction=1.0, delta=1e-5, server_lr=1.0, trainer=trainer, seed=5,
    )  # fmt: skip
    want = np.zeros(30)
    for d, ex in examples.items():
        tr = LocalTrainer(spec, None, seed=5 + 1000 + d, cache_size=0, **trainer)
        want += clip_l2(tr.train_global(ex, np.zeros(30, np.float32)), 0.3)[0]
    want /= len(examples)
    assert info["rounds"] == 1 and info["participants"] == 6 and info["epsilon"] is None
    np.testing.assert_allclose(w, want, atol=len(examples) * 2.0 ** -info["frac_bits"])
    assert np.abs(w).max() > 1e-3
