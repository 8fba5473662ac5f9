"""Simulated devices for a federated round on one machine (see README "Federated round").

Each device is what a phone would run: a :class:`~edgerec.runtime.Recommender` on the
bundle, its own on-device history store (a MovieLens-100K user's ratings, oldest first)
and a :class:`~edgerec.runtime.sync.SyncClient` with its own state folder. Nothing but
keys, ciphertexts, the masked update and Shamir shares leaves a device.

::

    python examples/federated_devices.py --bundle bundles/ml100k \\
        --url http://127.0.0.1:8080 --enroll-key-file secrets/enroll.key --enroll-only
    # ... open a round (edgerec coordinator open-round ...), then:
    python examples/federated_devices.py --bundle bundles/ml100k \\
        --url http://127.0.0.1:8080 --enroll-key-file secrets/enroll.key

The second call syncs every device until the open round has ended and prints what each
phase cost and the new head version.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from edgerec.runtime import HistoryStore, Recommender
from edgerec.runtime.sync import SyncClient


def device_histories(count: int) -> list[tuple[str, list[tuple[str, int]]]]:
    """The first ``count`` MovieLens-100K users' (item, time) events, oldest first."""
    from edgerec.data.sources import load_raw

    _, log = load_raw("movielens-100k")
    out = []
    for code in range(count):
        rows = [i for i in range(len(log)) if log.users[i] == code]
        rows.sort(key=lambda i: (log.timestamps[i], i))
        events = [(log.item_ids[log.items[i]], int(log.timestamps[i])) for i in rows]
        out.append((log.user_ids[code], events))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", required=True, type=Path)
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--enroll-key-file", required=True, type=Path)
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--state", type=Path, default=Path("runs/devices"), help="device folders")
    p.add_argument("--enroll-only", action="store_true", help="create and enroll the devices")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the round")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    key = args.enroll_key_file.read_text().split()[0]

    rec = Recommender.open(args.bundle)
    clients = []
    for user, events in device_histories(args.devices):
        folder = args.state / f"device-{user}"
        fresh = not (folder / "history.db").exists()
        store = HistoryStore(folder / "history.db")
        if fresh:
            store.record_many((user, item, float(t), "view") for item, t in events)
        clients.append(SyncClient(args.url, rec, folder / "sync", enroll_key=key, store=store))
    if args.enroll_only:
        for c in clients:
            if c.device_id is None:
                c.enroll()
        print(f"{len(clients)} devices enrolled (state in {args.state})")
        return 0

    deadline = time.monotonic() + args.timeout
    sent = 0
    while time.monotonic() < deadline:
        reports = [c.sync() for c in clients]
        sent += sum(r.bytes_sent for r in reports)
        errors = [r.error for r in reports if r.error]
        if errors:
            print("device errors:", *sorted(set(errors))[:3], sep="\n  ")
        if reports and all(r.round_state in ("done", "failed") or not r.selected for r in reports):
            break
        time.sleep(0.5)
    final = clients[0].sync()
    declined = [r.declined for r in reports if r.declined]
    if declined:  # the round was below the devices' privacy floors (min_noise_multiplier...)
        print("devices sat out:", declined[0])
    print(
        f"round {final.round}: {final.round_state} (status {final.status}); devices hold head "
        f"v{final.head_version}; {sum(r.selected for r in reports)} selected; "
        f"{sent / len(clients) / 1024:.1f} KiB sent per device; device 0 has spent "
        f"epsilon={final.privacy_epsilon} over {final.privacy_rounds} rounds"
    )
    return 0 if final.round_state == "done" else 1


if __name__ == "__main__":
    raise SystemExit(main())
