"""edgerec kiosk: record what a visitor looks at and show recommendations, on-device.

A small line-oriented program for a Raspberry Pi (or any Linux box): every input
line is an event or a command, every event is stored durably in a SQLite history
store and answered with fresh recommendations. Nothing leaves the device.

Input lines (typed at the prompt, piped in, or written to a FIFO with ``--input``)::

    <item-id>              the current user viewed this item (recorded, then recs)
    buy <item-id>          a purchase event
    user <name>            switch the current user (default: "kiosk")
    recs [k]               show recommendations again
    history                the user's last events
    forget                 delete the current user's history
    stats                  artifact, accelerator, latency so far
    help | quit

Examples::

    python kiosk.py --bundle /opt/edgerec/bundle --store ~/kiosk.db
    printf 'i1\\ni2\\nbuy i3\\nrecs 5\\n' | python kiosk.py --bundle b --store /tmp/k.db
    python kiosk.py --bundle b --store s.db --input /run/edgerec-kiosk/events --json

With ``--input FIFO`` (used by ``edgerec-kiosk.service``) the program creates the
named pipe if needed, reads events from whoever writes to it
(``echo i42 > /run/edgerec-kiosk/events``) and keeps listening after each writer
closes; SIGTERM (``systemctl stop``) closes the store cleanly. ``--json`` prints
one JSON object per answer, for a display process to consume.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from edgerec.errors import EdgerecError
from edgerec.runtime import HistoryStore, Recommender

log = logging.getLogger("edgerec.kiosk")


class Kiosk:
    """The command interpreter around one :class:`Recommender` and its store."""

    def __init__(
        self, rec: Recommender, store: HistoryStore, k: int, as_json: bool, out: TextIO = sys.stdout
    ) -> None:
        self.rec = rec
        self.store = store
        self.k = k
        self.as_json = as_json
        self.out = out
        self.user = "kiosk"
        self.latencies_ms: list[float] = []

    # ---------------------------------------------------------------- output
    def emit(self, kind: str, text: str, **data: object) -> None:
        if self.as_json:
            print(json.dumps({"type": kind, "user": self.user, **data}), file=self.out)
        else:
            print(text, file=self.out)
        self.out.flush()

    def show_recs(self, k: int | None = None) -> None:
        k = k or self.k
        t0 = time.perf_counter()
        recs = self.rec.recommend_for(self.user, k=k)
        ms = (time.perf_counter() - t0) * 1e3
        self.latencies_ms.append(ms)
        lines = [f"recommended for {self.user} ({ms:.2f} ms on {self.rec.accelerator}):"]
        lines += [f"  {i:>2}. {r.item_id:<16} {r.score:7.3f}" for i, r in enumerate(recs, 1)]
        self.emit(
            "recommendations",
            "\n".join(lines),
            items=[{"item": r.item_id, "score": round(r.score, 4)} for r in recs],
            latency_ms=round(ms, 3),
            accelerator=self.rec.accelerator,
        )

    # -------------------------------------------------------------- commands
    def handle(self, line: str) -> bool:
        """Run one input line; return False to stop."""
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            return True
        cmd, args = parts[0].lower(), parts[1:]
        try:
            if cmd in ("quit", "exit"):
                return False
            if cmd == "help":
                self.emit("help", __doc__.split("::")[1].split("\n\n")[1])
            elif cmd == "user" and len(args) == 1:
                self.user = args[0]
                self.emit("user", f"current user: {self.user}", events=self.store.count(self.user))
            elif cmd == "recs" and len(args) <= 1:
                self.show_recs(int(args[0]) if args else None)
            elif cmd == "history":
                events = self.store.history(self.user, limit=10)
                text = "\n".join(f"  {e.event_type:<8} {e.item}" for e in events) or "  (none)"
                self.emit(
                    "history",
                    f"last events of {self.user}:\n{text}",
                    events=[
                        {"item": e.item, "event": e.event_type, "ts": e.timestamp} for e in events
                    ],
                )
            elif cmd == "forget":
                n = self.store.forget(self.user)
                self.emit("forget", f"deleted {n} events of {self.user}", deleted=n)
            elif cmd == "stats":
                self.stats()
            elif cmd == "buy" and len(args) == 1:
                self.record(args[0], "purchase")
            elif len(parts) == 1:
                self.record(parts[0], "view")
            else:
                self.emit("error", f"? {line.strip()!r} (type 'help')", error="unknown command")
        except (EdgerecError, ValueError) as exc:
            self.emit("error", f"error: {exc}", error=str(exc))
        return True

    def record(self, item: str, event_type: str) -> None:
        self.store.record(self.user, item, time.time(), event_type)
        if item not in self.rec.vocab:
            self.emit(
                "note",
                f"({item} is not in the catalog: stored, not used for ranking)",
                unknown_item=item,
            )
        self.show_recs()

    def stats(self) -> None:
        lat = sorted(self.latencies_ms)
        p50 = lat[len(lat) // 2] if lat else None
        art = self.rec.artifact
        self.emit(
            "stats",
            f"artifact {art.name} ({art.format} {art.precision}) on {self.rec.backend_name}/"
            f"{self.rec.accelerator}; {len(lat)} answers, p50 "
            f"{'-' if p50 is None else f'{p50:.2f} ms'}; store {self.store.path}",
            artifact=art.name,
            accelerator=self.rec.accelerator,
            answers=len(lat),
            p50_ms=p50,
        )


def lines_from(source: str | None, interactive: bool) -> Iterator[str]:
    """Input lines from stdin (with a prompt on a terminal) or from a FIFO, forever."""
    if source is None:
        while True:
            if interactive:
                try:
                    line = input("kiosk> ")
                except EOFError:
                    return
                yield line
            else:
                line = sys.stdin.readline()
                if not line:
                    return
                yield line
        return
    fifo = Path(source)
    if not fifo.exists():
        fifo.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(fifo)
        os.chmod(fifo, 0o660)  # the group may write events (umask would drop g+w)
    elif not stat.S_ISFIFO(fifo.stat().st_mode):
        raise SystemExit(f"{fifo}: exists and is not a FIFO")
    log.info("listening on %s", fifo)
    while True:  # each writer opens, writes, closes: reopen for the next one
        with open(fifo, encoding="utf-8") as fh:
            yield from fh


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:4]),
    )
    parser.add_argument("--bundle", required=True, help="bundle folder from `edgerec convert`")
    parser.add_argument("--store", required=True, help="history store file (SQLite)")
    parser.add_argument("--input", help="read events from this FIFO instead of stdin")
    parser.add_argument("--k", type=int, default=5, help="recommendations per answer")
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads")
    parser.add_argument("--backend", default="auto", choices=["auto", "litert", "onnx"])
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--max-events", type=int, default=500, help="history cap per user")
    parser.add_argument(
        "--synchronous",
        default="normal",
        choices=["normal", "full"],
        help="history durability: survive a crash (normal) or also a power cut (full)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per answer")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        store = HistoryStore(
            args.store, max_events_per_user=args.max_events, synchronous=args.synchronous
        )
        rec = Recommender.open(
            args.bundle,
            backend=args.backend,
            accelerator=args.accelerator,
            threads=args.threads,
            store=store,
        )
    except EdgerecError as exc:
        print(f"kiosk: {exc}", file=sys.stderr)
        return 2
    # warm-up: the first invoke allocates and packs weights; keep that off a visitor's call
    rec.recommend(list(rec.vocab.item_ids[:3]), k=args.k)
    interactive = args.input is None and sys.stdin.isatty()
    kiosk = Kiosk(rec, store, args.k, args.json)
    log.info("ready: %s, store %s", rec, store.path)
    if interactive:
        print(
            f"edgerec kiosk — {rec.artifact.name} on {rec.accelerator}. Type an item id, "
            "'help' or 'quit'."
        )
    try:
        for line in lines_from(args.input, interactive):
            if not kiosk.handle(line):
                break
    except KeyboardInterrupt:
        pass
    finally:
        rec.close()
        store.close()
        log.info("stopped; history is in %s", args.store)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
