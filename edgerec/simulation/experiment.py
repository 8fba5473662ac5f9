"""``edgerec simulate-federated``: does federated learning of the head pay off?

The pipeline (each step in its own module):

1. :mod:`~edgerec.simulation.timesplit` — cut the log at a global time ``T``; events
   before ``T`` train the shipped model, later ones live only on the devices; each
   device's last interaction is its test target (full ranking).
2. :mod:`~edgerec.simulation.shipped_bundle` — teacher + real converter on the pre-``T`` log
   (or ``--bundle`` to reuse one built that way).
3. :mod:`~edgerec.simulation.evaluation` — runtime scoring, the shipped / local-only /
   centralized fine-tune rows and the metrics.
4. :mod:`~edgerec.simulation.fleet` — federated rows through the real coordinator
   over HTTP (SecAgg+, DP noise, accountant), devices running ``SyncClient.sync()``;
   or, with ``transport="inprocess"`` (large synthetic populations), the same device
   pipeline (``LocalTrainer`` -> ``dp.privatize``) summed in fixed point in-process by
   :func:`run_inprocess_rounds` — the value the SecAgg+ unmasking returns (exactly equal,
   ``tests/federated/test_secagg.py``) without the per-device crypto and HTTP.

Privacy accounting. The coordinator accounts each round as a Poisson-sampled Gaussian
mechanism with ``q = cohort_target / population`` (``dp_accounting`` RDP). With ``q = 1``
(the default here: every device takes part in every round) there is no sampling and the
accounting is exact for the mechanism run. With ``q < 1`` the coordinator selects
devices by ``HMAC(round secret, device id) < q`` — independent per device like Poisson
sampling as long as the round secret is unpredictable to devices and the coordinator
does not grind it — and never truncates the sample: a round whose sample falls outside
``[min_cohort, max_cohort]`` fails and releases nothing, and the probability of that
(``cap_tail``, at most ~1e-12 with the bounds used here) is added to δ as
``delta_sampling_cap`` (:mod:`edgerec.federated.sampling`). The update is divided by the
fixed denominator ``cohort_target`` (the expected cohort). The in-process path samples
with true Poisson draws and applies the same bounds.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["SimConfig", "format_table", "run_inprocess_rounds", "run_simulation"]


#: how the rows are evaluated (see :class:`SimConfig`)
EVAL_PROTOCOLS = ("last-event", "held-out-devices")


@dataclass(frozen=True)
class SimConfig:
    """Settings of one simulation (the CLI flags).

    Attributes:
        cutoff_quantile: the time cut-off is this quantile of all timestamps.
        cutoff: an explicit cut-off time (overrides ``cutoff_quantile``).
        min_post: a user is a device with at least this many post-cut-off events.
        rounds: federated rounds per federated row.
        epsilons: one DP row per target ε (the noise multiplier is calibrated so that
            ``rounds`` rounds spend exactly this ε).
        delta: δ of the DP rows (default ``min(1e-5, 1 / devices)``).
        clip: L2 clip ``C`` of the DP rows' updates.
        clip_nodp: clip of the non-private row (large: effectively no clipping).
        server_lr: server learning rate (``global += server_lr * mean update``).
        lr, epochs, batch_size: devices' ``LocalTrainer`` settings (local SGD).
        max_examples: at most this many recent examples per device.
        local_l2: L2 pull of the local-only personalisation.
        cohort_fraction: ``q``, the share of devices sampled per round.
        min_cohort_fraction: ``min_cohort`` as a share of the cohort's lower 1e-12
            quantile under Poisson sampling (the rest is slack for dropouts).
        dropout: expected dropout the SecAgg+ graph is sized for.
        central_epochs: most epochs of the centralized fine-tune (picked on validation).
        central_lr: its learning rate.
        central_batch_size: its mini-batch (large: a small batch leaves a noisy SGD
            iterate that averaging over a federated cohort beats).
        bootstrap: paired-bootstrap resamples.
        seed: seeds everything.
        transport: ``"http"`` (real coordinator) or ``"inprocess"``.
        max_devices: use at most this many devices (0: all).
        max_eval: evaluate at most this many devices (0: all).
        eval_protocol: ``"last-event"`` (every device trains; each is evaluated on its
            held-out last event) or ``"held-out-devices"`` (a ``heldout_fraction`` of the
            devices never trains and is evaluated on all its post-cut-off events: many
            more test events, no local-only row).
        heldout_fraction: share of the devices held out by ``"held-out-devices"``.
        fed_eval: run a federated evaluation of every federated row's head and of the
            centralized one against the shipped head (:mod:`.federated_eval`).
        fed_eval_fraction: its sampling rate.
        fed_eval_events: most recent held-out events a device reports on.
        fed_eval_alpha: level of its one-sided test "the candidate is worse".
        fed_eval_min_events: fewest events for a decision.
        fed_eval_max_se: largest standard error a decision may rest on (None: any).
        fed_eval_epsilon: ε of the evaluation of a DP row (its own release, one round);
            the evaluation of the non-private rows adds no noise, nor does any with None.
        fed_eval_gate: run the HTTP rows' coordinator with federated evaluation: each
            training round's head is published only if the evaluation round after it
            does not find it worse (devices hold their last ``fed_eval_events`` events
            out of training); the DP rows' noise is calibrated for both kinds of round.
    """

    cutoff_quantile: float = 0.8
    cutoff: int | None = None
    min_post: int = 2
    rounds: int = 10
    epsilons: tuple[float, ...] = (1.0, 4.0, 8.0)
    delta: float | None = None
    clip: float = 0.5
    clip_nodp: float = 20.0
    server_lr: float = 1.0
    lr: float = 0.5
    epochs: int = 3
    batch_size: int = 64
    max_examples: int = 200
    local_l2: float = 1e-3
    cohort_fraction: float = 1.0
    min_cohort_fraction: float = 0.8
    dropout: float = 0.1
    central_epochs: int = 20
    central_lr: float = 0.5
    central_batch_size: int = 1024
    bootstrap: int = 1000
    seed: int = 0
    transport: str = "http"
    max_devices: int = 0
    max_eval: int = 0
    eval_protocol: str = "last-event"
    heldout_fraction: float = 0.5
    fed_eval: bool = True
    fed_eval_fraction: float = 1.0
    fed_eval_events: int = 5
    fed_eval_alpha: float = 0.05
    fed_eval_min_events: int = 100
    fed_eval_max_se: float | None = None
    fed_eval_epsilon: float | None = 1.0
    fed_eval_gate: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.transport not in ("http", "inprocess"):
            raise InputError(f"transport must be 'http' or 'inprocess' (got {self.transport!r})")
        if self.rounds < 1 or self.epochs < 1 or self.batch_size < 1 or self.max_examples < 1:
            raise InputError("rounds, epochs, batch_size and max_examples must be >= 1")
        if not 0 < self.cohort_fraction <= 1 or not 0 < self.min_cohort_fraction <= 1:
            raise InputError("cohort_fraction and min_cohort_fraction must be in (0, 1]")
        if any(not (e > 0 and math.isfinite(e)) for e in self.epsilons):
            raise InputError("every target epsilon must be > 0")
        if self.clip <= 0 or self.clip_nodp <= 0 or self.server_lr <= 0 or self.lr <= 0:
            raise InputError("clip, clip_nodp, server_lr and lr must be > 0")
        if self.eval_protocol not in EVAL_PROTOCOLS:
            raise InputError(
                f"eval_protocol must be one of {EVAL_PROTOCOLS} (got {self.eval_protocol!r})"
            )
        if not 0 < self.heldout_fraction < 1:
            raise InputError(f"heldout_fraction must be in (0, 1) (got {self.heldout_fraction})")
        if not (0 < self.fed_eval_fraction <= 1 and 0 < self.fed_eval_alpha <= 0.5):
            raise InputError("fed_eval_fraction must be in (0, 1] and fed_eval_alpha in (0, 0.5]")
        eps = self.fed_eval_epsilon
        if self.fed_eval_events < 1 or not (eps is None or (eps > 0 and math.isfinite(eps))):
            raise InputError("fed_eval_events must be >= 1 and fed_eval_epsilon > 0 (or None)")
        if self.fed_eval_gate and self.transport != "http":
            raise InputError("fed_eval_gate needs the coordinator: transport 'http'")

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "simulation config") -> SimConfig:
        """Build from a mapping of the fields above (typed keys, no unknown ones)."""
        from edgerec.config import load

        return load(cls, data, source)


# ---------------------------------------------------------------------- cohort bounds
def cohort_bounds(population: int, q: float, min_cohort_fraction: float) -> tuple[int, int, int]:
    """``(cohort_target, min_cohort, max_cohort)`` of a round sampling ``q``: the expected
    cohort; ``min_cohort_fraction`` of the lower 1e-12 quantile (slack for dropouts); and
    the upper 1e-12 quantile (what the coordinator computes)."""
    from edgerec.federated.sampling import max_cohort, min_cohort_for

    cohort = max(2, round(q * population))
    low = min_cohort_for(population, q)
    min_cohort = min(cohort, max(2, int(min_cohort_fraction * low)))
    bound = max(cohort, min(max_cohort(population, q), population))
    return cohort, min_cohort, bound


# ---------------------------------------------------------------------- in-process rounds
def run_inprocess_rounds(
    spec: Any,
    examples: dict[int, Any],
    *,
    rounds: int,
    clip: float,
    noise_multiplier: float,
    sampling_rate: float,
    min_cohort_fraction: float,
    delta: float,
    server_lr: float,
    trainer: dict[str, Any],
    seed: int = 0,
    target_epsilon: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Federated rounds without HTTP and SecAgg masking (see the module docstring).

    Every round: Poisson-sample devices with ``sampling_rate``; each trains
    ``LocalTrainer.train_global`` from the current head and privatises its update with
    :func:`edgerec.federated.dp.privatize` (clip, distributed noise, fixed point);
    the uint32 sum (mod 2^32, what SecAgg+ reveals) is decoded with the fixed
    denominator ``cohort_target`` and applied with ``server_lr``. ε is accounted by
    :class:`~edgerec.federated.accountant.DpAccountant`.
    """
    from edgerec.federated.dp import mean_update, privatize
    from edgerec.federated.fixedpoint import max_frac_bits
    from edgerec.federated.local import LocalTrainer
    from edgerec.federated.protocol import RoundParams
    from edgerec.federated.sampling import cap_delta, round_tail

    ids = sorted(examples)
    population = len(ids)
    cohort, min_cohort, bound = cohort_bounds(population, sampling_rate, min_cohort_fraction)
    tail = round_tail(population, sampling_rate, min_cohort, bound)
    noise_std = noise_multiplier * clip / math.sqrt(min_cohort)
    frac_bits = min(24, max_frac_bits(bound, clip, noise_std))
    rng = np.random.default_rng([seed, 7])
    w = np.zeros(spec.num_items, np.float32)
    acc = None
    if noise_multiplier > 0:
        from edgerec.federated.accountant import DpAccountant

        acc = DpAccountant(noise_multiplier, sampling_rate, delta)
    history = []
    started = time.perf_counter()
    for r in range(1, rounds + 1):
        if acc is not None and target_epsilon is not None and not acc.can_run(target_epsilon):
            break
        chosen = [d for d in ids if rng.random() < sampling_rate]
        if not min_cohort <= len(chosen) <= bound:  # the coordinator fails such a round
            history.append({"round": r, "participants": 0, "clipped": 0, "failed": True})
            continue
        params = RoundParams.new(
            f"inproc-{r}",
            head_version=r - 1,
            cohort_target=bound,
            min_cohort=min_cohort,
            deadline=0.0,
            clip=clip,
            noise_multiplier=noise_multiplier,
            frac_bits=frac_bits,
            vector_length=spec.num_items,
            neighbour_degree=2,
            threshold=2,
        )
        total = np.zeros(spec.num_items, np.uint32)
        clipped = 0
        for d in chosen:
            tr = LocalTrainer(spec, _no_scoring, seed=seed + 1000 * r + d, cache_size=0, **trainer)
            delta_u = tr.train_global(examples[d], w)
            upd = privatize(delta_u, params, rng)
            clipped += upd.clipped
            total += upd.values
        w = w + server_lr * mean_update(total, params, denominator=cohort)
        eps = acc.step() if acc is not None else None
        history.append(
            {"round": r, "participants": len(chosen), "clipped": clipped, "epsilon": eps}
        )
    done = [h for h in history if not h.get("failed")]
    epsilon = done[-1]["epsilon"] if done and acc is not None else None
    extra = cap_delta([tail] * len(done), epsilon) if epsilon is not None else None
    info = {
        "rounds": len(done),
        "failed_rounds": len(history) - len(done),
        "participants": float(np.mean([h["participants"] for h in done])) if done else 0.0,
        "clipped_share": float(
            sum(h["clipped"] for h in done) / max(1, sum(h["participants"] for h in done))
        ),
        "epsilon": epsilon,
        "delta": delta if acc is not None else None,
        "delta_sampling_cap": extra,
        "delta_total": delta + extra if extra is not None else None,
        "seconds": time.perf_counter() - started,
        "cohort_target": cohort,
        "min_cohort": min_cohort,
        "max_cohort": bound,
        "cap_tail": tail,
        "frac_bits": frac_bits,
        "history": history,
    }
    return w, info


def _no_scoring(rows: np.ndarray) -> np.ndarray:
    raise RuntimeError("examples must be pre-scored")


# ---------------------------------------------------------------------- the whole run
def run_simulation(
    cfg: SimConfig,
    *,
    data: str | Path,
    out_dir: str | Path,
    bundle: str | Path | None = None,
    population: Any = None,
    teacher_config: dict[str, Any] | None = None,
    convert_config: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every row of the table; returns the JSON-able result (also written to
    ``out_dir/result.json``).

    ``population`` (a :class:`~edgerec.simulation.population.SynthPopulation`) replaces
    ``data`` with a synthetic population with a post-cut-off trend shift.
    """
    from edgerec.data.sources import load_raw
    from edgerec.runtime import Recommender
    from edgerec.simulation.evaluation import (
        Evaluator,
        HeldOutEvaluator,
        central_finetune,
        device_examples,
        local_only,
    )
    from edgerec.simulation.timesplit import encode_devices, time_split

    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    population_info = None
    cutoff = cfg.cutoff
    if population is not None:
        from edgerec.simulation.population import synthetic_population

        raw, population_info = synthetic_population(population)
        name, cutoff = f"synthetic ({population.users} users)", population_info["cutoff"]
    else:
        name, raw = load_raw(data)
    split = time_split(raw, cfg.cutoff_quantile, cutoff=cutoff, min_post=cfg.min_post)
    devices = split.devices
    if cfg.max_devices and len(devices) > cfg.max_devices:
        pick = np.sort(
            np.random.default_rng(cfg.seed).choice(len(devices), cfg.max_devices, replace=False)
        )
        devices = [devices[i] for i in pick]
    log.info("time split: %s", split.stats)

    build_info: dict[str, Any] = {}
    if bundle is None:
        from edgerec.simulation.shipped_bundle import build_bundle

        t0 = time.perf_counter()
        bundle, build_info = build_bundle(
            split.pre, out / "model", teacher=teacher_config, convert=convert_config,
            seed=42 + cfg.seed, progress=progress, name=f"{name}-pre-cutoff",
        )  # fmt: skip
        build_info["seconds"] = round(time.perf_counter() - t0, 1)
    else:
        build_info = {"bundle": str(bundle), "reused": True}

    rec = Recommender.open(bundle, backend="auto", accelerator="cpu")
    spec = rec.spec
    score_fn = rec.backend.run
    arrays = encode_devices(devices, rec.vocab)
    user_ids = [d.user_id for d in devices]
    trainable = [i for i, a in enumerate(arrays) if a.trainable]
    if len(trainable) < 2:
        raise InputError(f"only {len(trainable)} device(s) have post-cut-off examples; need 2+")

    t0 = time.perf_counter()
    examples = {i: device_examples(spec, score_fn, arrays[i], cfg.max_examples) for i in trainable}
    score_s = time.perf_counter() - t0
    eval_arrays = arrays
    if cfg.max_eval and sum(a.evaluable for a in arrays) > cfg.max_eval:
        rng = np.random.default_rng([cfg.seed, 3])
        keep = set(
            rng.choice(
                [i for i, a in enumerate(arrays) if a.evaluable], cfg.max_eval, replace=False
            ).tolist()
        )
        eval_arrays = [a if i in keep else _not_evaluable(a) for i, a in enumerate(arrays)]
    last_events = Evaluator(spec, score_fn, eval_arrays, user_ids)
    evaluator: Evaluator | HeldOutEvaluator = last_events
    held_out = cfg.eval_protocol == "held-out-devices"
    if held_out:  # these devices never train; all their examples are test events
        rng = np.random.default_rng([cfg.seed, 11])
        n_held = max(1, min(len(trainable) - 2, round(cfg.heldout_fraction * len(trainable))))
        held = set(rng.choice(trainable, n_held, replace=False).tolist())
        evaluator = HeldOutEvaluator(
            spec,
            {i: arrays[i] for i in held},
            {i: examples[i] for i in held},
            cfg.max_examples,
        )
        trainable = [i for i in trainable if i not in held]
        examples = {i: examples[i] for i in trainable}
    n_dev = len(trainable)
    delta = cfg.delta if cfg.delta is not None else min(1e-5, 1.0 / n_dev)
    trainer = {"lr": cfg.lr, "epochs": cfg.epochs, "batch_size": cfg.batch_size}
    log.info(
        "%d devices (%d train, %d evaluated); %d examples scored on the runtime in %.1f s",
        len(arrays), n_dev, len(evaluator), sum(len(e) for e in examples.values()), score_s,
    )  # fmt: skip

    rows = []
    shipped = evaluator.evaluate("shipped student", info={"note": "bundle as released"})
    rows.append(shipped)
    if not held_out:  # a held-out device never trains, not even its local bias
        t0 = time.perf_counter()
        local = local_only(
            spec, examples, lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size,
            local_l2=cfg.local_l2, seed=cfg.seed,
        )  # fmt: skip
        rows.append(
            evaluator.evaluate(
                "local-only personalization",
                local_biases=local,
                info={"seconds": time.perf_counter() - t0, "bytes_up": 0, "rounds": 0},
            )
        )
    t0 = time.perf_counter()
    central_w, central_info = central_finetune(
        spec, examples, lr=cfg.central_lr, batch_size=cfg.central_batch_size,
        max_epochs=cfg.central_epochs, seed=cfg.seed,
    )  # fmt: skip
    central = evaluator.evaluate(
        "centralized fine-tune (non-private upper bound)",
        central_w,
        info={"seconds": time.perf_counter() - t0, **central_info},
    )

    judge = _federated_judge(cfg, evaluator, delta) if cfg.fed_eval else None
    if judge is not None:
        central.info["federated_evaluation"] = judge(central_w, None, 0)
    q = cfg.cohort_fraction
    if cfg.transport == "http":  # the coordinator accounts q = cohort_target / population
        q = min(1.0, max(2, round(q * n_dev)) / n_dev)
    fed_settings: list[tuple[str, float | None]] = [("federated, no DP", None)]
    fed_settings += [(f"federated, DP eps={e:g}", e) for e in cfg.epsilons]
    fed_rows = []
    runtime_check = None
    for label, eps in fed_settings:
        if eps is None:
            z, clip = 0.0, cfg.clip_nodp
        else:
            from edgerec.federated.accountant import calibrate_noise

            # with the coordinator's gate every training round is followed by an
            # evaluation round, a release of its own: twice the rounds to account
            releases = cfg.rounds * (2 if cfg.fed_eval_gate else 1)
            z, clip = calibrate_noise(eps, delta, q, releases) * 1.0001, cfg.clip
        log.info("%s: z=%.4g C=%g q=%.3g rounds=%d", label, z, clip, q, cfg.rounds)
        if cfg.transport == "http":
            bias, info = _http_row(
                cfg, bundle, rec, arrays, user_ids, trainable, out / "http", z, clip, delta, eps
            )
        else:
            bias, info = run_inprocess_rounds(
                spec, examples, rounds=cfg.rounds, clip=clip, noise_multiplier=z,
                sampling_rate=q, min_cohort_fraction=cfg.min_cohort_fraction, delta=delta,
                server_lr=cfg.server_lr, trainer=trainer, seed=cfg.seed, target_epsilon=eps,
            )  # fmt: skip
            info["transport"] = "in-process (privatize + fixed-point sum; no HTTP, no masks)"
        info.update({"noise_multiplier": z, "clip": clip, "sampling_rate": q})
        row = evaluator.evaluate(label, bias, info=info)
        if judge is not None:
            row.info["federated_evaluation"] = judge(bias, eps, len(fed_rows) + 1)
        fed_rows.append(row)
        if eps is None:
            runtime_check = last_events.check_runtime(rec, bias)
        log.info(
            "%s: NDCG@10 %.4f (shipped %.4f, central %.4f)",
            label,
            row.ndcg.mean(),
            shipped.ndcg.mean(),
            central.ndcg.mean(),
        )
    rows.extend(fed_rows)
    rows.append(central)
    rec.close()

    summaries = [r.summary(shipped, central, cfg.bootstrap) for r in rows]
    result = {
        "data": name,
        "config": {**asdict(cfg), "epsilons": list(cfg.epsilons), "delta": delta},
        "split": split.stats,
        "population": population_info
        and {
            **{k: v for k, v in population_info.items() if k != "trending_items"},
            "settings": asdict(population),
        },
        "devices": {
            "total": len(arrays),
            "training": n_dev,
            "evaluated": len(evaluator),
            "test_events": evaluator.events if held_out else len(evaluator),
            "test_item_unknown": sum(a.target == 0 for a in arrays),
            "examples": sum(len(e) for e in examples.values()),
        },
        "bundle": str(bundle),
        "build": build_info,
        "runtime": {
            "backend": rec.backend_name,
            "artifact": rec.artifact.name,
            "top10_agreement_with_recommend": runtime_check,
        },
        "protocol": (
            f"held-out devices ({len(evaluator)} of {len(evaluator) + n_dev}, never train): "
            "every post-cut-off event, a device's metric is its mean over them"
            if held_out
            else "device's last interaction"
        )
        + "; full ranking over all items; NDCG@10/HR@10 with history kept in the ranking "
        "(also NDCG@10 with the device's history excluded); paired bootstrap 95% CI over "
        "devices vs the shipped student",
        "federated_evaluation": cfg.fed_eval
        and (
            f"Poisson-sampled devices (q = {cfg.fed_eval_fraction:g}) score the shipped head and "
            f"the row's head on their last <= {cfg.fed_eval_events} held-out events (the events "
            "the table scores: no training saw them) and send metric sums through SecAgg+; "
            f"blocked when a one-sided test finds the head worse (alpha = {cfg.fed_eval_alpha:g}, "
            f"devices as clusters), inconclusive under {cfg.fed_eval_min_events} events; DP rows' "
            + (
                f"evaluations add distributed DP noise for their own ε = {cfg.fed_eval_epsilon:g}"
                if cfg.fed_eval_epsilon is not None
                else "evaluations add no DP noise"
            )
        ),
        "rows": summaries,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2, default=_json_default))
    return result


def _federated_judge(
    cfg: SimConfig, evaluator: Any, delta: float
) -> Callable[[np.ndarray, float | None, int], dict[str, Any]]:
    """``(candidate head, row ε or None, row number) -> verdict``: the federated evaluation of a
    candidate against the shipped head, on the devices' held-out events (DP when the
    row is a DP row)."""
    from edgerec.simulation.federated_eval import FederatedEvalConfig, federated_evaluation

    shipped = evaluator.event_metrics()
    most = int(np.bincount(shipped.owner).max()) if shipped.owner.size else 1
    base = FederatedEvalConfig(
        sampling_rate=cfg.fed_eval_fraction,
        max_events=min(cfg.fed_eval_events, most),
        alpha=cfg.fed_eval_alpha,
        min_events=cfg.fed_eval_min_events,
        max_se=cfg.fed_eval_max_se,
        delta=delta,
        min_cohort_fraction=cfg.min_cohort_fraction,
        seed=cfg.seed,
    )

    def judge(candidate: np.ndarray, row_epsilon: float | None, row: int) -> dict[str, Any]:
        eps = cfg.fed_eval_epsilon if row_epsilon is not None else None  # None: no noise
        settings = replace(base, epsilon=eps, seed=cfg.seed * 1000 + row)  # own draws per row
        verdict = federated_evaluation(shipped, evaluator.event_metrics(candidate), settings)
        log.info("federated evaluation: %s — %s", verdict["decision"], verdict.get("reason"))
        return verdict

    return judge


def _not_evaluable(a: Any) -> Any:
    from edgerec.simulation.timesplit import DeviceArrays

    return DeviceArrays(a.history, a.n_train, 0)


def _http_row(cfg, bundle, rec, arrays, user_ids, trainable, work, z, clip, delta, eps):
    """One federated row through the real coordinator over HTTP."""
    import shutil

    from edgerec.coordinator.config import RoundConfig
    from edgerec.runtime import HistoryStore
    from edgerec.simulation.fleet import (
        CoordinatorThread,
        Fleet,
        FleetDevice,
        SimClock,
        run_rounds,
    )

    work = Path(work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store_path = work / "histories.db"
    store = HistoryStore(store_path, max_events_per_user=10_000)
    events = []
    for i in trainable:
        # the device stores its raw history; the bundle encodes it (unknown ids skipped)
        d_items = rec.vocab.decode(arrays[i].history)
        events.extend((user_ids[i], item, float(t), "view") for t, item in enumerate(d_items))
    store.record_many(events)
    n = len(trainable)
    cohort, min_cohort, _ = cohort_bounds(n, cfg.cohort_fraction, cfg.min_cohort_fraction)
    round_cfg = RoundConfig(
        cohort_target=cohort,
        min_cohort=min_cohort,
        deadline_s=3600.0,
        phase_timeout_s=600.0,
        clip=clip,
        noise_multiplier=z,
        target_epsilon=eps,
        delta=delta,
        dropout=cfg.dropout,
        server_lr=cfg.server_lr,
        training={"lr": cfg.lr, "epochs": cfg.epochs, "batch_size": cfg.batch_size},
    )
    fleet = Fleet(
        rec,
        store,
        [FleetDevice(user_ids[i], min(arrays[i].n_train, cfg.max_examples)) for i in trainable],
        work / "devices",
        {"lr": cfg.lr, "epochs": cfg.epochs, "batch_size": cfg.batch_size},
        seed=cfg.seed,
    )
    clock = SimClock()
    evaluation = None
    if cfg.fed_eval_gate:
        from edgerec.coordinator.config import EvaluationConfig

        evaluation = EvaluationConfig(
            cfg.fed_eval_events, cfg.fed_eval_alpha, cfg.fed_eval_min_events, cfg.fed_eval_max_se
        )
    try:
        with CoordinatorThread(
            bundle, work / "coordinator.db", clock, evaluation=evaluation
        ) as coord:
            fleet.connect(coord.url)
            run = run_rounds(coord, fleet, round_cfg, cfg.rounds)
    finally:
        fleet.close()
        store.close()
        rec.set_global_bias(None)
    info = {
        "transport": "HTTP (uvicorn on loopback, SQLite, SecAgg+)",
        "rounds": run.rounds,
        "failed_rounds": run.failed,
        "epsilon": run.epsilon,
        "delta": run.delta if z > 0 else None,
        "delta_total": run.delta_total if z > 0 else None,
        "bytes_up": run.bytes_up,
        "bytes_down": run.bytes_down,
        "seconds": run.seconds,
        "participants": run.participants,
        "rounds_outside_bounds": sum(h["state"] == "failed" for h in run.history),
        "cohort_target": cohort,
        "min_cohort": min_cohort,
        "head_version": run.head_version,
        "history": run.history,
    }
    if cfg.fed_eval_gate:
        info["gate"] = {
            "evaluations": run.evaluations,
            "published": sum(v["decision"] == "publish" for v in run.evaluations),
            "bytes_up": run.eval_bytes_up,
            "bytes_down": run.eval_bytes_down,
        }
    return run.global_bias, info


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


# ---------------------------------------------------------------------- output
def format_table(result: dict[str, Any]) -> str:
    """The one table the command prints (plus its protocol and setup lines)."""
    head = (
        "| row | NDCG@10 | Δ vs shipped [95% CI] | HR@10 | NDCG@10 seen excl. | recovery "
        "| rounds | bytes up/dev/round | bytes down/dev/round | wall s | ε (δ) "
        "| federated evaluation |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in result["rows"]:
        vs = r.get("vs_shipped")
        ci = f"{vs['diff']:+.4f} [{vs['low']:+.4f}, {vs['high']:+.4f}]" if vs else "–"
        rec = r.get("recovery")
        rec_s = "–" if rec is None or r["name"].startswith("shipped") else f"{100 * rec:.0f}%"
        rounds = r.get("rounds")
        up, down = r.get("bytes_up"), r.get("bytes_down")
        eps = r.get("epsilon")
        if "DP eps" in r["name"]:
            delta = r.get("delta_total") or r.get("delta")
            eps_s = f"{eps:.3g} ({delta:.2g})" if eps is not None else "?"
        elif r["name"].startswith("federated"):
            eps_s = "∞ (no DP)"
        else:
            eps_s = "–"
        secs = r.get("seconds")
        lines.append(
            f"| {r['name']} | {r['NDCG@10']:.4f} | {ci} | {r['HR@10']:.4f} "
            f"| {r['NDCG@10_seen_excluded']:.4f} | {rec_s} "
            f"| {rounds if rounds is not None else '–'} "
            f"| {_bytes(up)} | {_bytes(down)} "
            f"| {f'{secs:.1f}' if secs is not None else '–'} | {eps_s} "
            f"| {_verdict(r.get('federated_evaluation'), r.get('gate'))} |"
        )
    d = result["devices"]
    cfg = result["config"]
    lines.append("")
    lines.append(
        f"data {result['data']}: cut-off t={result['split']['cutoff']} "
        f"(quantile {cfg['cutoff_quantile']}); {d['total']} devices ({d['training']} with "
        f"post-cut-off examples, {d['evaluated']} evaluated, {d['test_item_unknown']} with a "
        f"test item unknown to the shipped model); {d['examples']} device examples"
    )
    lines.append(f"protocol: {result['protocol']}")
    if result.get("federated_evaluation"):
        lines.append(f"federated evaluation: {result['federated_evaluation']}")
    lines.append(
        f"federated: {cfg['transport']}, {cfg['rounds']} rounds, q={cfg['cohort_fraction']}, "
        f"local SGD lr={cfg['lr']} x {cfg['epochs']} epochs, server lr {cfg['server_lr']}, "
        f"clip {cfg['clip']} (DP rows) / {cfg['clip_nodp']} (no DP), δ={cfg['delta']:.3g}"
    )
    return "\n".join(lines)


def _verdict(v: dict[str, Any] | None, gate: dict[str, Any] | None = None) -> str:
    """``publish, z = +1.23 (n = 900, ε 1)``: a federated evaluation in a table cell;
    with the coordinator's gate also how many of the row's trained heads it published."""
    if gate:
        decided = len(gate["evaluations"])
        return f"{_verdict(v)}; gate: {gate['published']} of {decided} heads published"
    if not v:
        return "–"
    if v.get("z") is None:
        return str(v["decision"])
    eps = f", ε {v['epsilon']:g}" if v.get("epsilon") is not None else ""
    return f"{v['decision']}, z = {v['z']:+.2f} (n = {v['events']:.0f}{eps})"


def _bytes(v: Any) -> str:
    if v is None:
        return "–"
    if v == 0:
        return "0"
    return f"{v / 1024:.1f} KiB"
