"""Report pass: ``report.md``, ``report.json`` and ``report.png`` for a bundle.

A release engineer should see at a glance what shipped: the artifact table
(format, precision, role, bytes, NDCG@10/HR@10, parity, p50 latency, GPU-ready,
gate), the quality gate with its paired-bootstrap interval, every failing check,
and a size-vs-NDCG@10 plot (matplotlib, Agg backend, no display needed).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COLUMNS = (
    ("artifact", "name"),
    ("format", "format"),
    ("precision", "precision"),
    ("role", "roles"),
    ("bytes", "bytes"),
    ("NDCG@10", "NDCG@10"),
    ("HR@10", "HR@10"),
    ("max err", "max_abs_err"),
    ("top10", "top10_overlap"),
    ("p50 ms", "latency_ms_p50"),
    ("GPU-ready", "gpu_ready"),
    ("gate", "gate"),
)


def table_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per artifact from a conversion summary (``ConvertResult.to_json()``)."""
    return list(summary.get("artifacts", []))


def _cell(key: str, row: dict[str, Any]) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if key == "roles":
        return ",".join(value) or "-"
    if key == "bytes":
        return f"{value:,}"
    if key == "gpu_ready":
        return "yes" if value else "no"
    if key == "max_abs_err":
        return f"{value:.2e}"
    if key in ("NDCG@10", "HR@10", "top10_overlap"):
        return f"{value:.4f}"
    if key == "latency_ms_p50":
        return f"{value:.3f}"
    return str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The artifact table as aligned text (what ``edgerec convert`` prints)."""
    header = [c[0] for c in COLUMNS]
    body = [[_cell(key, r) for _, key in COLUMNS] for r in rows]
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [
            c.rjust(w) if i >= 3 else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells[1:], widths[1:], strict=True), start=1)
        ]
        return "  ".join([first, *rest]).rstrip()

    sep = "-" * len(line(header))
    return "\n".join([line(header), sep, *(line(b) for b in body), sep])


def markdown(summary: dict[str, Any]) -> str:
    """``report.md``."""
    rows = table_rows(summary)
    q = summary.get("quality", {})
    status = summary.get("status", "?")
    lines = [
        f"# edgerec bundle report — {summary.get('model', {}).get('id', '')} "
        f"{summary.get('model', {}).get('version', '')}",
        "",
        f"**Status: {status.upper()}**"
        + (
            ""
            if status == "accepted"
            else " — a quality gate failed; the runtime refuses "
            "this bundle (see the failures below)."
        ),
        "",
        f"Protocol: {q.get('protocol', '')}",
        "",
        "| " + " | ".join(c[0] for c in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(_cell(key, r) for _, key in COLUMNS) + " |")
    lines.append("")
    if q:
        boot = q.get("bootstrap", {})
        lines += [
            "## Quality gate",
            "",
            f"- teacher NDCG@10 {q.get('teacher', {}).get('NDCG@10', float('nan')):.4f}, "
            f"HR@10 {q.get('teacher', {}).get('HR@10', float('nan')):.4f}",
            "- Keras student NDCG@10 "
            f"{q.get('student_keras', {}).get('NDCG@10', float('nan')):.4f}",
            f"- default artifact `{q.get('artifact')}` NDCG@10 "
            f"{q.get('default', {}).get('NDCG@10', float('nan')):.4f} = "
            f"{q.get('ratio', float('nan')):.1%} of the teacher (gate >= "
            f"{q.get('min_ratio', 0):.0%}): **{'pass' if q.get('passed') else 'FAIL'}**",
        ]
        if boot:
            lines.append(
                f"- student − teacher NDCG@10: {boot.get('diff', 0):+.4f}, paired bootstrap "
                f"{boot.get('confidence', 0.95):.0%} CI [{boot.get('low', 0):+.4f}, "
                f"{boot.get('high', 0):+.4f}] over {boot.get('n')} users "
                f"({'significant' if boot.get('significant') else 'not significant'}); "
                f"ratio CI [{_num(boot.get('ratio_low'))}, {_num(boot.get('ratio_high'))}]"
            )
        lines.append("")
        lines += baseline_markdown(q)
    failures = summary.get("gates", {}).get("failures", [])
    lines += ["## Gates", ""]
    if failures:
        lines += [f"- {f}" for f in failures]
    else:
        lines.append("- every gate passed")
    warnings = summary.get("gates", {}).get("warnings", [])
    lines += [f"- (experimental, not gating) {w}" for w in warnings]
    lines += ["", "## GPU variant", ""]
    for r in rows:
        gpu = r.get("gpu") or {}
        if "gpu" in (r.get("roles") or []) or gpu.get("ready"):
            lines.append(
                f"- `{r['name']}`: GPU-ready **{'yes' if gpu.get('ready') else 'no'}**"
                + (
                    f", blocking ops {', '.join(gpu.get('blocking_ops', []))}"
                    if gpu.get("blocking_ops")
                    else ""
                )
            )
            lines.append(f"  - method: {gpu.get('method', '')}; source: {gpu.get('source', '')}")
    blocked = [r["name"] for r in rows if (r.get("gpu") or {}).get("blocking_ops")]
    if blocked:
        lines.append(f"- not GPU-ready (ops outside the delegate's list): {', '.join(blocked)}")
    timings = summary.get("timings", {})
    if timings:
        lines += ["", "## Timings", ""]
        lines += [f"- {k}: {v:.1f} s" for k, v in timings.items()]
    lines += ["", "![size vs NDCG@10](report.png)", ""]
    return "\n".join(lines)


def baseline_lines(quality: dict[str, Any]) -> list[str]:
    """Teacher vs each tuned baseline on the quality users, with paired 95% CIs."""
    out = []
    teacher = quality.get("teacher", {}).get("NDCG@10", float("nan"))
    for name, row in quality.get("baselines", {}).get("models", {}).items():
        b = row["bootstrap_ndcg_teacher_minus_baseline"]
        out.append(
            f"{name}: NDCG@10 {row['metrics']['NDCG@10']:.4f} HR@10 "
            f"{row['metrics']['HR@10']:.4f}; teacher ({teacher:.4f}) − it {b['diff']:+.4f}, "
            f"95% paired-bootstrap CI [{b['low']:+.4f}, {b['high']:+.4f}]"
        )
    return out


def baseline_markdown(quality: dict[str, Any]) -> list[str]:
    """The report's baselines section and the teacher gate's verdict."""
    lines = baseline_lines(quality)
    gate = quality.get("teacher_gate")
    if not lines and not gate:
        return []
    out = ["## Teacher vs baselines", "", *(f"- {line}" for line in lines)]
    params = quality.get("baselines", {}).get("params", {})
    for name, chosen in params.items():
        out.append(
            f"- {name} parameters (chosen on validation, NDCG@10 "
            f"{chosen['valid_NDCG@10']:.4f}): {chosen['params']}"
        )
    if gate:
        verdict = "passed" if gate.get("passed") else "FAILED"
        out.append(
            f"- teacher gate on validation (beat {', '.join(gate.get('required', []))}, CI "
            f"excluding 0): **{verdict}**"
            + (
                " — shipped anyway with --allow-weak-teacher"
                if gate.get("allow_weak_teacher") and not gate.get("passed")
                else ""
            )
        )
    out.append("")
    return out


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def plot(summary: dict[str, Any], path: Path) -> None:
    """``report.png``: file size (KB, log scale) vs NDCG@10 per artifact."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table_rows(summary) if r.get("NDCG@10") is not None and r.get("bytes")]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for i, r in enumerate(sorted(rows, key=lambda r: r["bytes"])):
        kb = r["bytes"] / 1024
        fmt_marker = "o" if r["format"] == "tflite" else "s"
        color = "tab:green" if r.get("gate") == "pass" else "tab:red"
        if "default" in (r.get("roles") or []):
            ax.scatter([kb], [r["NDCG@10"]], s=220, facecolors="none", edgecolors="k", zorder=3)
        ax.scatter([kb], [r["NDCG@10"]], marker=fmt_marker, color=color, zorder=4)
        ax.annotate(
            r["name"],
            (kb, r["NDCG@10"]),
            textcoords="offset points",
            xytext=(5, 4 if i % 2 == 0 else -11),
            fontsize=7,
        )
    q = summary.get("quality", {})
    teacher = q.get("teacher", {}).get("NDCG@10")
    if teacher is not None:
        ax.axhline(
            teacher,
            color="tab:blue",
            linestyle="--",
            linewidth=1,
            label=f"teacher NDCG@10 {teacher:.4f}",
        )
        ax.axhline(
            teacher * q.get("min_ratio", 0.97),
            color="tab:blue",
            linestyle=":",
            linewidth=1,
            label=f"quality gate ({q.get('min_ratio', 0.97):.0%})",
        )
    ax.set_xscale("log")
    from matplotlib.ticker import ScalarFormatter

    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("file size (KB, log scale)")
    ax.set_ylabel("NDCG@10 (test split, full ranking)")
    ax.set_title(
        f"{summary.get('model', {}).get('id', 'bundle')}: size vs quality "
        f"(o tflite, □ onnx; circled = default; red = gate failed)",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    if teacher is not None:
        ax.legend(fontsize=8, loc="best", framealpha=0.6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(summary: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.json`` and ``report.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = {
        "report.md": out_dir / "report.md",
        "report.json": out_dir / "report.json",
        "report.png": out_dir / "report.png",
    }
    paths["report.json"].write_text(json.dumps(summary, indent=2, default=_json_default))
    paths["report.md"].write_text(markdown(summary))
    try:
        plot(summary, paths["report.png"])
    except Exception as exc:  # a missing plot must not lose the bundle
        log.warning("report.png not written: %s", exc)
        del paths["report.png"]
    return paths


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
