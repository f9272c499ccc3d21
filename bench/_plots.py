"""The cost-curve plots: one PNG per curve bench, from its results.json entry.

``write(runs, folder)`` draws every curve that has data (median with a min..max bar per
point, log scales where the x axis grows by factors) and returns ``{bench name: file
name}``; bench/__main__ embeds them in RESULTS.md. matplotlib (the ``bench`` extra) is
imported here only, with the Agg backend, so rendering needs no display.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Doc = dict[str, Any]


def _bars(cells: list[Doc]) -> tuple[list[float], list[list[float]]]:
    """Medians and matplotlib's asymmetric error bars from ``{median, min, max}`` cells."""
    med = [float(c["median"]) for c in cells]
    low = [m - float(c["min"]) for m, c in zip(med, cells, strict=True)]
    high = [float(c["max"]) - m for m, c in zip(med, cells, strict=True)]
    return med, [low, high]


def _line(ax: Any, xs: list[float], cells: list[Doc], label: str, **style: Any) -> None:
    med, err = _bars(cells)
    ax.errorbar(xs, med, yerr=err, marker="o", capsize=3, label=label, **style)


def _functions(doc: Doc, fig: Any) -> None:
    sizes = [int(n) for n in doc["functions"]]
    res = doc["results"]
    axes = fig.subplots(1, 3)
    panels = (
        ("daemon start to /readyz (s)", ["start s"]),
        ("idle memory (MB)", ["idle RSS MB", "idle PSS MB"]),
        ("per warm worker (MB)", ["MB/warm worker", "worker USS MB"]),
    )
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            _line(ax, sizes, [res[key][str(n)] for n in sizes], key)
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.set_xlabel("functions (min_warm 0)")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)


def _partitions(doc: Doc, fig: Any) -> None:
    parts = [int(p) for p in doc["partitions"]]
    res = doc["results"]
    modes = list(res[str(parts[0])])
    rate_ax, cpu_ax = fig.subplots(1, 2)
    for mode in modes:
        cells = [res[str(p)][mode] for p in parts]
        rates = [
            {"median": c["median_rps"], "min": c["min_rps"], "max": c["max_rps"]} for c in cells
        ]
        _line(rate_ax, parts, rates, mode)
        cpu_ax.plot(parts, [c["cpu_us_per_record"] for c in cells], marker="o", label=mode)
    for ax, title in ((rate_ax, "records/s"), (cpu_ax, "dispatcher CPU µs/record")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(parts, [str(p) for p in parts])
        ax.set_xlabel("partitions of the topic")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)


def _store(doc: Doc, fig: Any) -> None:
    depths = [int(d) for d in doc["depths"]]
    res = doc["results"]
    axes = fig.subplots(1, len(res), squeeze=False)[0]
    for ax, (backend, ops) in zip(axes, res.items(), strict=True):
        for op, cells in ops.items():
            _line(ax, depths, [cells[str(d)] for d in depths], op)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("entries in the async queue and in the DLQ")
        ax.set_title(f"{backend}: operations/s")
        ax.legend(fontsize=7)


def _record_size(doc: Doc, fig: Any) -> None:
    sizes = [int(s) for s in doc["sizes"]]
    res = doc["results"]
    axes = fig.subplots(1, len(res), squeeze=False)[0]
    for ax, (broker, by_size) in zip(axes, res.items(), strict=True):
        for key, label in (("plain_mbps", "raw client loop"), ("process_mbps", "eventrun process")):
            _line(ax, sizes, [by_size[str(s)][key] for s in sizes], label)
        for s in sizes:
            cell = by_size[str(s)]
            ax.annotate(
                f"{cell['ratio']:.2f}x",
                (s, cell["process_mbps"]["median"]),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=7,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("record size (bytes)")
        ax.set_title(f"{broker}: MB/s of values (process / raw)")
        ax.legend(fontsize=7)


def _concurrency(doc: Doc, fig: Any) -> None:
    levels = [int(n) for n in doc["levels"]]
    res = doc["results"]
    ax, share_ax = fig.subplots(1, 2)
    _line(ax, levels, [res[str(n)]["rps"] for n in levels], "eventrun (process)")
    ax.plot(levels, [res[str(n)]["ideal_rps"] for n in levels], "--", label="ideal (n / 10 ms)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_title("req/s, 10 ms sleeping handler")
    shares = [
        {
            "median": res[str(n)]["ratio_vs_ideal"],
            "min": res[str(n)]["ratio_vs_ideal_min"],
            "max": res[str(n)]["ratio_vs_ideal_max"],
        }
        for n in levels
    ]
    _line(share_ax, levels, shares, "of ideal")
    share_ax.set_xscale("log", base=2)
    share_ax.set_ylim(0, 1.05)
    share_ax.set_title("share of the ideal")
    for a in (ax, share_ax):
        a.set_xticks(levels, [str(n) for n in levels])
        a.set_xlabel("process workers (= connections)")
        a.legend(fontsize=7)


PLOTS: dict[str, tuple[str, Callable[[Doc, Any], None]]] = {
    "curve_functions": ("Functions per daemon", _functions),
    "curve_partitions": ("Kafka partitions", _partitions),
    "curve_store": ("Store depth", _store),
    "curve_record_size": ("Record size", _record_size),
    "curve_concurrency": ("Process workers", _concurrency),
}


def write(runs: list[Doc], folder: Path) -> dict[str, str]:
    """Draw every curve bench of ``runs`` that has data into ``folder``; ``{name: file}``."""
    wanted = [r for r in runs if r["name"] in PLOTS and isinstance(r.get("data"), dict)]
    if not wanted:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for run in wanted:
        title, draw = PLOTS[run["name"]]
        doc = run["data"]
        fig = plt.figure(figsize=(12, 3.6), layout="constrained")
        try:
            draw(doc, fig)
            fig.suptitle(f"{title} (load average {doc.get('load', '?')}, {doc.get('cpus')} cpus)")
            name = f"{run['name'].removeprefix('curve_')}.png"
            fig.savefig(folder / name, dpi=90)
            written[run["name"]] = name
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            pass  # a partial or failed run: its table in RESULTS.md says what happened
        finally:
            plt.close(fig)
    return written
