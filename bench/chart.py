"""The results as one PNG for the README: four panels, one per question users ask."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no screen here
import matplotlib.pyplot as plt

COLORS = {
    "floor": "#888888",
    "relay-push": "#1f77b4",
    "relay-pull": "#17becf",
    "nginx-pyav": "#d62728",
    "nginx-pyav-tuned": "#ff7f0e",
    "websockify-pyav": "#9467bd",
    "nginx-players": "#2ca02c",
}


def _bars(ax: Any, rows: dict[str, Any], key: str, title: str, unit: str, log: bool = False) -> None:
    names = [n for n, r in rows.items() if r["median"].get(key) is not None]
    values = [rows[n]["median"][key] for n in names]
    ax.barh(names, values, color=[COLORS.get(n, "#444") for n in names])
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.0f}" if v >= 10 else f" {v:.1f}", va="center", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(unit)
    if log:
        ax.set_xscale("log")
    ax.invert_yaxis()


def _latency(ax: Any, rows: dict[str, Any]) -> None:
    names = [n for n, r in rows.items() if r["median"].get("latency_p99_ms") is not None]
    p50 = [rows[n]["median"]["latency_p50_ms"] for n in names]
    p99 = [rows[n]["median"]["latency_p99_ms"] for n in names]
    y = range(len(names))
    ax.barh([i + 0.2 for i in y], p99, height=0.4, label="p99", color="#bbbbbb")
    ax.barh([i - 0.2 for i in y], p50, height=0.4, label="p50", color=[COLORS.get(n, "#444") for n in names])
    ax.set_yticks(list(y), names)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_title("latency, publisher write → decoded frame", fontsize=10)
    ax.set_xlabel("ms (symlog)")
    ax.legend(fontsize=8)
    ax.invert_yaxis()


def _scaling(ax: Any, result: dict[str, Any]) -> None:
    """Server (solid) and app (dashed) CPU against streams; the app decoding them (dotted)."""
    load = result["load"]
    counts = sorted(int(n) for n in load)
    for name in load[str(counts[0])]:
        color = COLORS.get(name, "#444")
        for key, style, who in (("server_cpu_pct", "-", "server"), ("app_cpu_pct", "--", "app")):
            values = [load[str(n)][name]["median"][key] for n in counts]
            ax.plot(counts, values, marker="o", linestyle=style, label=f"{name} ({who})", color=color)
    decode = result.get("decode") or {}
    for name in decode[next(iter(decode))] if decode else ():
        ns = sorted(int(n) for n in decode)
        values = [decode[str(n)][name]["median"]["app_cpu_pct"] for n in ns]
        ax.plot(ns, values, marker="x", linestyle=":", label=f"{name} (app decoding)", color="#000")
    ax.set_title("CPU vs concurrent AAC streams", fontsize=10)
    ax.set_xlabel("streams")
    ax.set_ylabel("% of one core")
    ax.legend(fontsize=7)


def _throughput(ax: Any, table: dict[str, Any]) -> None:
    chunks = list(table)
    names = list(table[chunks[0]])
    width = 0.8 / max(1, len(chunks))
    for j, chunk in enumerate(chunks):
        values = [table[chunk][n]["median"]["mb_s"] or 0 for n in names]
        ax.barh(
            [i + (j - (len(chunks) - 1) / 2) * width for i in range(len(names))],
            values,
            height=width,
            label=f"chunk {chunk}",
            alpha=0.6 + 0.4 * j / max(1, len(chunks) - 1),
        )
    ax.set_yticks(range(len(names)), names)
    ax.set_title("H.264 throughput, one stream flooded", fontsize=10)
    ax.set_xlabel("MB/s reaching the app")
    ax.legend(fontsize=8)
    ax.invert_yaxis()


def draw(result: dict[str, Any], path: Path) -> None:
    """Write the chart of a ``bench/run`` result to ``path``."""
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    panels = [
        (
            "first_frame",
            lambda ax, r: _bars(
                ax, r, "first_frame_ms", "first decoded frame after publish", "ms (log)", log=True
            ),
        ),
        ("first_frame", _latency),
        ("load", lambda ax, _: _scaling(ax, result)),
        ("throughput", _throughput),
    ]
    for ax, (section, fn) in zip(axes.flat, panels, strict=True):
        if result.get(section):
            fn(ax, result[section])
        else:
            ax.set_axis_off()
    m = result["machine"]
    fig.suptitle(
        f"rtmp-relay vs alternatives: {m['cpus']} cores, {m['cpu']}, loop {m['relay_loop']}, "
        f"core {m.get('relay_core', 'pure').split(':')[0]}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
