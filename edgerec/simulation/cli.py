"""``edgerec simulate-federated``: the federated simulation's command line.

Heavy imports (TensorFlow for building the shipped model, FastAPI/uvicorn for the
coordinator, the runtime interpreters) happen inside the handler only.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from edgerec.simulation.experiment import EVAL_PROTOCOLS

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  # ML-100K, everything built here (teacher + converter on the pre-cut-off log)
  edgerec simulate-federated --data movielens-100k --out runs/fedsim
  # reuse the bundle a previous run built (runs/fedsim/model/bundle)
  edgerec simulate-federated --data movielens-100k --out runs/fedsim2 \\
      --bundle runs/fedsim/model/bundle --epsilons 1 4 8 --rounds 10
  # a large synthetic population (edgerec data synth's generator + a post-cut-off
  # trend shift), federated rows aggregated in-process (no HTTP)
  edgerec simulate-federated --synth-users 100000 --synth-items 500 \\
      --cutoff-quantile 0.5 --out runs/fedsim-synth --transport inprocess \\
      --cohort-fraction 0.02 --rounds 100 --max-examples 8 --max-eval 10000

Time split: events before the cut-off train the shipped model; later events live only
on the devices; each device's last interaction is its test target (full ranking).
Rows: shipped student, local-only personalization, federated without DP, federated
with DP at each --epsilons value (calibrated to spend it in --rounds rounds), and the
centralized fine-tune of the same head on the devices' data (non-private upper bound).
Each federated row's head and the centralized one then go through a federated
evaluation against the shipped head (its verdict in the last column).
The federated rows run the real coordinator (uvicorn on loopback, SQLite, SecAgg+, DP
accountant) and one SyncClient per device, unless --transport inprocess.
Writes OUT/result.json (and OUT/model/ when it builds the bundle).

exit codes: 0 ok; 1 unexpected error; 2 bad input; 3 the converter's quality gate failed
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``simulate-federated`` to the CLI."""
    from edgerec.cli_help import HelpFormatter

    p = sub.add_parser(
        "simulate-federated",
        help="simulate federated learning of the head on a time split",
        description="Simulate N devices and the real coordinator on a time-based split and "
        "compare shipped / local-only / federated (with and without DP) / centralized.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--data", default="movielens-100k", help="dataset name or log file")
    p.add_argument("--out", type=Path, required=True, help="output folder (result.json, model/)")
    p.add_argument("--bundle", type=Path, help="reuse a bundle built on the same pre-cut-off log")
    p.add_argument("--teacher-config", type=Path, help="TOML over the simulation's teacher config")
    p.add_argument(
        "--convert-config", type=Path, help="TOML over the simulation's converter config"
    )
    p.add_argument("--cutoff-quantile", type=float, default=0.8, help="time cut-off quantile")
    p.add_argument("--cutoff", type=int, help="explicit cut-off time (overrides the quantile)")
    p.add_argument("--min-post", type=int, default=2, help="post-cut-off events to be a device")
    p.add_argument("--rounds", type=int, default=10, help="federated rounds per row")
    p.add_argument("--epsilons", type=float, nargs="*", default=[1.0, 4.0, 8.0], help="DP rows")
    p.add_argument("--delta", type=float, help="δ (default min(1e-5, 1/devices))")
    p.add_argument("--clip", type=float, default=0.5, help="L2 clip of the DP rows")
    p.add_argument("--clip-nodp", type=float, default=20.0, help="L2 clip without DP")
    p.add_argument("--server-lr", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=0.5, help="devices' local SGD learning rate")
    p.add_argument("--epochs", type=int, default=3, help="devices' local epochs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-examples", type=int, default=200, help="recent examples per device")
    p.add_argument("--local-l2", type=float, default=1e-3, help="L2 of local-only biases")
    p.add_argument("--cohort-fraction", type=float, default=1.0, help="q: devices per round")
    p.add_argument("--min-cohort-fraction", type=float, default=0.8)
    p.add_argument("--dropout", type=float, default=0.1, help="dropout SecAgg+ is sized for")
    p.add_argument("--central-epochs", type=int, default=20)
    p.add_argument("--central-lr", type=float, default=0.5)
    p.add_argument("--central-batch-size", type=int, default=1024)
    p.add_argument("--bootstrap", type=int, default=1000, help="paired-bootstrap resamples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--transport", choices=("http", "inprocess"), default="http")
    p.add_argument("--max-devices", type=int, default=0, help="use at most this many (0: all)")
    p.add_argument("--max-eval", type=int, default=0, help="evaluate at most this many (0: all)")
    p.add_argument(
        "--eval-protocol",
        choices=EVAL_PROTOCOLS,
        default="last-event",
        help="evaluate each device's last event, or hold devices out of training and "
        "evaluate all their post-cut-off events",
    )
    p.add_argument("--heldout-fraction", type=float, default=0.5, help="share of devices held out")
    f = p.add_argument_group(
        "federated evaluation: sampled devices judge each row's head against the shipped "
        "one on their held-out events, through SecAgg+; published unless a one-sided test "
        "finds it worse"
    )
    f.add_argument("--no-fed-eval", action="store_true", help="skip the federated evaluation")
    f.add_argument("--fed-eval-fraction", type=float, default=1.0, help="its sampling rate")
    f.add_argument("--fed-eval-events", type=int, default=5, help="held-out events per device")
    f.add_argument("--fed-eval-alpha", type=float, default=0.05, help="level of the test")
    f.add_argument("--fed-eval-min-events", type=int, default=100, help="fewest for a decision")
    f.add_argument(
        "--fed-eval-max-se", type=float, help="largest standard error a decision may rest on"
    )
    f.add_argument(
        "--fed-eval-epsilon",
        type=float,
        default=1.0,
        help="ε of the evaluation of a DP row (0: evaluate without DP noise)",
    )
    f.add_argument(
        "--fed-eval-gate",
        action="store_true",
        help="(http) run the coordinator with federated evaluation: each round's head is "
        "published only if an evaluation round on the devices does not find it worse",
    )
    g = p.add_argument_group(
        "synthetic population (instead of --data): edgerec data synth's generator + a trend shift"
    )
    g.add_argument("--synth-users", type=int, help="generate this many users (enables it)")
    g.add_argument("--synth-items", type=int, default=1000, help="catalog size")
    g.add_argument("--synth-mean-length", type=float, default=12.0, help="mean events per user")
    g.add_argument("--synth-span-days", type=float, default=365.0, help="span of a user's events")
    g.add_argument("--trend-share", type=float, default=0.3, help="post-cut-off events replaced")
    g.add_argument("--trend-items", type=int, default=50, help="number of trending items")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--json", action="store_true", help="print result.json instead of the table")
    p.set_defaults(handler=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    """Handler of ``edgerec simulate-federated``."""
    from edgerec._deps import require

    for module in ("ai_edge_litert", "cryptography"):
        require(module, "runtime")
    if args.transport == "http" or args.epsilons:
        for module in ("fastapi", "uvicorn", "httpx", "dp_accounting"):
            require(module, "coordinator")
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # hundreds of devices
        for noisy in ("httpx", "edgerec.runtime.sync", "edgerec.coordinator", "uvicorn"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # dp-accounting warns when it drops an RDP order that does not converge (the
        # epsilon is then computed from the other orders: still an upper bound)
        logging.getLogger("absl").setLevel(logging.ERROR)
    from edgerec.simulation.experiment import SimConfig, format_table, run_simulation
    from edgerec.simulation.shipped_bundle import SIM_CONVERT, SIM_TEACHER, load_overrides

    cfg = SimConfig(
        cutoff_quantile=args.cutoff_quantile,
        cutoff=args.cutoff,
        min_post=args.min_post,
        rounds=args.rounds,
        epsilons=tuple(args.epsilons),
        delta=args.delta,
        clip=args.clip,
        clip_nodp=args.clip_nodp,
        server_lr=args.server_lr,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_examples=args.max_examples,
        local_l2=args.local_l2,
        cohort_fraction=args.cohort_fraction,
        min_cohort_fraction=args.min_cohort_fraction,
        dropout=args.dropout,
        central_epochs=args.central_epochs,
        central_lr=args.central_lr,
        central_batch_size=args.central_batch_size,
        bootstrap=args.bootstrap,
        seed=args.seed,
        transport=args.transport,
        max_devices=args.max_devices,
        max_eval=args.max_eval,
        eval_protocol=args.eval_protocol,
        heldout_fraction=args.heldout_fraction,
        fed_eval=not args.no_fed_eval,
        fed_eval_fraction=args.fed_eval_fraction,
        fed_eval_events=args.fed_eval_events,
        fed_eval_alpha=args.fed_eval_alpha,
        fed_eval_min_events=args.fed_eval_min_events,
        fed_eval_epsilon=args.fed_eval_epsilon or None,
        fed_eval_max_se=args.fed_eval_max_se,
        fed_eval_gate=args.fed_eval_gate,
    )
    population = None
    if args.synth_users:
        from edgerec.simulation.population import SynthPopulation

        population = SynthPopulation(
            users=args.synth_users,
            items=args.synth_items,
            mean_length=args.synth_mean_length,
            span_days=args.synth_span_days,
            cutoff_quantile=args.cutoff_quantile,
            trend_share=args.trend_share,
            trend_items=args.trend_items,
            seed=args.seed,
        )
    result = run_simulation(
        cfg,
        data=args.data,
        out_dir=args.out,
        bundle=args.bundle,
        population=population,
        teacher_config=load_overrides(args.teacher_config, SIM_TEACHER),
        convert_config=load_overrides(args.convert_config, SIM_CONVERT),
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(format_table(result))
        print(f"result: {args.out / 'result.json'} ({result['wall_seconds']:.0f} s)")
    return 0
