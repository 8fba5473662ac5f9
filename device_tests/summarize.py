"""Print the parity and latency summary of a device_tests JSON report.

Usage::

    python device_tests/summarize.py build/device-report.json            # everything
    python device_tests/summarize.py --parity-only build/device-report.json

Also used by ``conftest.py`` for the end-of-session summary. Standard library only.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _num(value: Any, fmt: str = ".2e") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, fmt)
    return str(value)


def format_summary(data: dict[str, Any]) -> list[str]:
    """Human-readable lines: platform, parity per artifact, accelerators, latency."""
    plat = data.get("platform", {})
    pk = data.get("packages", {})
    lines = [
        f"profile {data.get('profile')} | {plat.get('machine')} {plat.get('cpu_model') or ''} "
        f"| board {plat.get('device_model') or '-'} | python {plat.get('python_version')}",
        f"edgerec {pk.get('edgerec')} numpy {pk.get('numpy')} "
        f"ai-edge-litert {pk.get('ai-edge-litert')} "
        f"onnxruntime {pk.get('onnxruntime') or pk.get('onnxruntime-gpu')}",
    ]
    parity = data.get("parity") or {}
    if parity:
        lines.append("")
        lines.append(
            f"{'artifact':<22} {'backend':<7} {'prec':<13} {'max|err|':>9} {'tol':>8} "
            f"{'top10':>6} {'exact':>5} {'vs student':>10}  result"
        )
        for name, p in parity.items():
            if "skipped" in p:
                lines.append(f"{name:<22} skipped: {p['skipped']}")
                continue
            if "backend" not in p:  # the end-to-end Recommender check
                lines.append(
                    f"{name:<22} via {p.get('artifact')}: top-10 overlap with its reference "
                    f"{p.get('top10_overlap', 0):.3f}  {'ok' if p.get('passed') else 'FAIL'}"
                )
                continue
            tol = p.get("tolerance", {})
            student = p.get("vs_student") or {}
            lines.append(
                f"{name:<22} {p.get('backend', '-'):<7} {p.get('precision', '-'):<13} "
                f"{_num(p.get('max_abs_err')):>9} {_num(tol.get('max_abs_err')):>8} "
                f"{p.get('top10_overlap', 0):>6.3f} {'yes' if p.get('bit_exact') else 'no':>5} "
                f"{_num(student.get('max_abs_err')):>10}  {'ok' if p.get('passed') else 'FAIL'}"
            )
    acc = data.get("accelerator") or {}
    if acc:
        lines.append("")
        for key, value in acc.items():
            lines.append(f"accelerator {key}: {value}")
    series = (data.get("latency") or {}).get("series") or {}
    if series:
        lines.append("")
        note = " (emulated: meaningless)" if data.get("profile_info", {}).get("emulated") else ""
        lines.append(f"recommend() latency, ms{note}")
        lines.append(
            f"{'series':<26} {'artifact':<22} {'acc':<5} {'p50':>8} {'p95':>8} {'calls':>6}"
        )
        for key, s in series.items():
            lines.append(
                f"{key:<26} {s.get('artifact', '-'):<22} {s.get('accelerator', '-'):<5} "
                f"{s['p50_ms']:>8.3f} {s['p95_ms']:>8.3f} {s['calls']:>6}"
            )
    store = data.get("history_store") or {}
    if store.get("record_per_s"):
        fs = store.get("filesystem") or {}
        lines.append(
            f"history store: {store['record_per_s']:.0f} durable record()/s on "
            f"{fs.get('type', '?')} ({fs.get('mount', '?')})"
        )
    counts = (data.get("tests") or {}).get("counts")
    if counts:
        lines.append("tests: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return lines


def parity_verdict(data: dict[str, Any]) -> list[str]:
    """One line per artifact plus an overall verdict (for scripts and CI logs)."""
    plat = data.get("platform", {})
    where = f"{plat.get('machine')} ({plat.get('cpu_model') or '?'}, profile {data.get('profile')})"
    parity = {k: v for k, v in (data.get("parity") or {}).items() if "backend" in v}
    lines = []
    for name, p in parity.items():
        lines.append(
            f"parity on {plat.get('machine')}: {name:<22} max|err| {p['max_abs_err']:.2e} "
            f"top-10 {p['top10_overlap']:.3f} {'ok' if p.get('passed') else 'FAIL'}"
        )
    skipped = [k for k, v in (data.get("parity") or {}).items() if "skipped" in v]
    ok = sum(bool(p.get("passed")) for p in parity.values())
    verdict = f"PARITY {'OK' if parity and ok == len(parity) else 'FAILED'}: {ok}/{len(parity)}"
    lines.append(
        f"{verdict} artifacts within tolerance on {where}"
        + (f"; skipped: {', '.join(skipped)}" if skipped else "")
    )
    return lines


def main(argv: list[str]) -> int:
    parity_only = "--parity-only" in argv
    args = [a for a in argv if a != "--parity-only"]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as fh:
        data = json.load(fh)
    print("\n".join(parity_verdict(data) if parity_only else format_summary(data)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
