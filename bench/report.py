# ruff: noqa: E501, RUF001, RUF028
"""Turn bench/results.json into bench/RESULTS.md and the PNG plots beside it.

    python bench/report.py [results.json] [--dest DIR]   # DIR: where RESULTS.md and plots go

bench/NOTES.md (hand-written: what limits pgxjob where it trails, and what would help) is copied
into RESULTS.md verbatim.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
DEST = BENCH  # where RESULTS.md and the plots are written (--dest)
PGX, PGX_OFF = "pgxjob", "pgxjob-nolog"
PEERS = ["pgqueuer", "oban", "procrastinate"]
OTEL = ["pgxjob-otel", "pgxjob-otel-api"]
NAMES = {
    "pgxjob": "pgxjob (run log on)",
    "pgxjob-nolog": "pgxjob (run log off)",
    "pgxjob-defaults": "pgxjob (start_worker defaults)",
    "pgxjob-async": "pgxjob (async handlers)",
    "pgxjob-otel": "pgxjob (OpenTelemetry SDK)",
    "pgxjob-otel-api": "pgxjob (OpenTelemetry API, no SDK)",
    "pgqueuer": "PgQueuer",
    "oban": "oban-py",
    "procrastinate": "procrastinate",
    "bare": "bare psycopg (raw SQL)",
}
SHORT = {"pgqueuer": "PgQueuer", "oban": "oban-py", "procrastinate": "procrastinate"}

# key, label, unit, higher_is_better, digits
METRICS: list[tuple[str, str, str, bool, int]] = [
    ("single1", "Enqueue, 1 job/txn, 1 client", "jobs/s", True, 0),
    ("single10", "Enqueue, 1 job/txn, 10 clients", "jobs/s", True, 0),
    ("bulk", "Bulk enqueue (batches of 5,000)", "jobs/s", True, 0),
    ("drain1", "Drain backlog, 1 worker process", "jobs/s", True, 0),
    ("drain1_handled", "  same, until the last handler finished", "jobs/s", True, 0),
    ("drain2", "Drain backlog, 2 worker processes", "jobs/s", True, 0),
    ("drain2_handled", "  same, until the last handler finished", "jobs/s", True, 0),
    ("steady", "Produce + consume at once", "jobs/s", True, 0),
    ("asap_p50", "ASAP latency p50 (commit to start)", "ms", False, 2),
    ("asap_p99", "ASAP latency p99", "ms", False, 2),
    ("asap_max", "ASAP latency max", "ms", False, 2),
    ("timed_p50", "Timed latency p50 (due to start)", "ms", False, 1),
    ("timed_p99", "Timed latency p99", "ms", False, 1),
    ("timed_max", "Timed latency max", "ms", False, 1),
    ("wal_per_job", "WAL per job, enqueue + drain", "bytes", False, 0),
    ("wal_enqueue_per_job", "  of which enqueue", "bytes", False, 0),
    ("wal_drain_per_job", "  of which run + acknowledge", "bytes", False, 0),
    ("dead_made_per_100k", "Dead tuples made per 100k jobs", "tuples", False, 0),
    ("peak_rss_mb", "Worker peak RSS, drain (1,000 prefetched for pgxjob)", "MiB", False, 1),
    ("mixed", "Drain, half the backlog timed (due)", "jobs/s", True, 0),
]


def fmt(v: Any, digits: int) -> str:
    if v is None or isinstance(v, str):
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def ratio(pgx: Any, peer: Any, higher: bool) -> str:
    if (
        not isinstance(pgx, (int, float))
        or not isinstance(peer, (int, float))
        or not pgx
        or not peer
    ):
        return "n/a"
    r = pgx / peer if higher else peer / pgx
    return f"**{r:.2f}×**" if r >= 1 else f"{r:.2f}×"


def value(res: dict[str, Any], system: str, key: str) -> Any:
    r = res.get(system, {})
    if key in r:
        return r[key]
    for wl in ("single", "drain1", "drain2", "steady", "latency", "mixed"):
        if f"{wl}_error" in r and key.startswith(wl[:5]):
            return "failed"
    if system == PGX_OFF and key in ("single1", "single10", "bulk", "wal_enqueue_per_job"):
        return res.get(PGX, {}).get(key)
    return None


def spread(res: dict[str, Any], system: str, key: str) -> str:
    runs = res.get(system, {}).get(key + "__runs")
    if not runs or len(runs) < 2:
        return ""
    return f" ({min(runs):,.0f}–{max(runs):,.0f})" if max(runs) >= 100 else ""


def table(res: dict[str, Any], systems: list[str]) -> list[str]:
    peers = [p for p in PEERS if p in systems]
    cols = [
        s
        for s in (PGX, PGX_OFF, "pgxjob-defaults", "pgxjob-async", *OTEL, *peers, "bare")
        if s in systems
    ]
    head = [
        "Workload",
        "Unit",
        *(NAMES[c] for c in cols),
        *(f"pgxjob vs {SHORT[p]}" for p in peers),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, unit, higher, digits in METRICS:
        row = [label, unit]
        for c in cols:
            v = value(res, c, key)
            row.append(fmt(v, digits) + (spread(res, c, key) if unit == "jobs/s" else ""))
        for p in peers:
            mine = value(res, PGX, key)
            if key in (
                "drain1",
                "drain2",
                "drain1_handled",
                "drain2_handled",
                "steady",
                "mixed",
                "wal_per_job",
                "wal_drain_per_job",
            ):
                off = value(res, PGX_OFF, key)
                row.append(
                    f"{ratio(mine, value(res, p, key), higher)} / off {ratio(off, value(res, p, key), higher)}"
                )
            else:
                row.append(ratio(mine, value(res, p, key), higher))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def scal(res: dict[str, Any], system: str, n: int) -> Any:
    r = res.get(system, {})
    if f"drain_{n}" in r:
        return r[f"drain_{n}"]
    if r.get("drain_n") == n:
        return r.get("drain1")
    return None


def scaling_sizes(data: dict[str, Any]) -> list[int]:
    drained = {r["drain_n"] for r in data["results"].values() if isinstance(r.get("drain_n"), int)}
    return sorted(set(data["meta"]["sizes"]["scaling"]) | {data["meta"]["sizes"]["n"]} | drained)


def scaling_table(res: dict[str, Any], systems: list[str], sizes: list[int]) -> list[str]:
    cols = [s for s in (PGX, PGX_OFF, *PEERS) if s in systems]
    lines = [
        "| Backlog | " + " | ".join(NAMES[c] for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for n in sizes:
        lines.append(f"| {n:,} | " + " | ".join(fmt(scal(res, c, n), 0) for c in cols) + " |")
    return lines


def best_peer(res: dict[str, Any], key: str, higher: bool) -> tuple[str, float] | None:
    vals = [(p, res.get(p, {}).get(key)) for p in PEERS]
    vals = [(p, v) for p, v in vals if isinstance(v, (int, float))]
    if not vals:
        return None
    return max(vals, key=lambda x: x[1]) if higher else min(vals, key=lambda x: x[1])


def targets(res: dict[str, Any]) -> list[str]:
    g = lambda s, k: res.get(s, {}).get(k)  # noqa: E731
    out = ["| Target | Measured | Met? |", "|---|---|---|"]

    def row(name: str, measured: str, ok: bool | None) -> None:
        out.append(
            f"| {name} | {measured} | {'yes' if ok else ('n/a' if ok is None else '**no**')} |"
        )

    pq = g("pgqueuer", "drain1"), g("pgqueuer", "drain2")
    pq_best = max([v for v in pq if v] or [0])
    off = max([v for v in (g(PGX_OFF, "drain1"), g(PGX_OFF, "drain2")) if v] or [0])
    on = max([v for v in (g(PGX, "drain1"), g(PGX, "drain2")) if v] or [0])
    if pq_best and off:
        row("Drain ≥ 3× PgQueuer's best, run log off",
            f"{off:,.0f} vs {pq_best:,.0f} jobs/s = {off / pq_best:.2f}×", off / pq_best >= 3)  # fmt: skip
    if pq_best and on:
        row("Drain ≥ 2.5× PgQueuer's best, run log on",
            f"{on:,.0f} vs {pq_best:,.0f} jobs/s = {on / pq_best:.2f}×", on / pq_best >= 2.5)  # fmt: skip
    limit = raw_limit(res)
    if limit and off:
        row("Drain ≥ 75% of the raw SQL limit, run log off",
            f"{off:,.0f} vs {limit:,.0f} jobs/s = {off / limit:.0%}", off / limit >= 0.75)  # fmt: skip
    aio = max([v for v in (g("pgxjob-async", "drain1"), g("pgxjob-async", "drain2")) if v] or [0])
    if pq_best and aio:
        row("Async handlers: drain no slower than PgQueuer's best (both asyncio)",
            f"{aio:,.0f} vs {pq_best:,.0f} jobs/s = {aio / pq_best:.2f}×", aio >= pq_best)  # fmt: skip
    if g("pgxjob-async", "asap_p50") is not None and g("pgqueuer", "asap_p50") is not None:
        row("Async handlers: ASAP latency p50 no worse than PgQueuer's",
            f"{g('pgxjob-async', 'asap_p50'):.2f} ms vs {g('pgqueuer', 'asap_p50'):.2f} ms",
            g("pgxjob-async", "asap_p50") <= g("pgqueuer", "asap_p50"))  # fmt: skip
    peers_best = max([g(p, k) or 0 for p in PEERS for k in ("drain1", "drain2")] or [0])
    if on and peers_best:
        row("Drain ahead of every peer, run log on",
            f"{on:,.0f} vs {peers_best:,.0f} jobs/s = {on / peers_best:.2f}×", on > peers_best)  # fmt: skip
    if g(PGX, "keyed_ratio"):
        row("Drain with priorities and unique keys within 10% of the plain drain",
            f"{g(PGX, 'keyed'):,.0f} vs {g(PGX, 'keyed_plain'):,.0f} jobs/s = "
            f"{g(PGX, 'keyed_ratio'):.2f}× (median of paired rounds)",
            g(PGX, "keyed_ratio") >= 0.9)  # fmt: skip
    bp = best_peer(res, "bulk", True)
    if bp and g(PGX, "bulk"):
        r = g(PGX, "bulk") / bp[1]
        row("Bulk enqueue ≥ 3× the fastest peer",
            f"{g(PGX, 'bulk'):,.0f} vs {SHORT[bp[0]]} {bp[1]:,.0f} jobs/s = {r:.2f}×", r >= 3)  # fmt: skip
    for k, label in (("single1", "1 client"), ("single10", "10 clients")):
        if g(PGX, k) and g("bare", k):
            r = g(PGX, k) / g("bare", k)
            row(f"Single enqueue within 15% of bare INSERT + pg_notify ({label})",
                f"{g(PGX, k):,.0f} vs {g('bare', k):,.0f} jobs/s = {r:.2f}×", r >= 0.85)  # fmt: skip
    for k in ("asap_p50", "asap_p99"):
        bp = best_peer(res, k, False)
        if bp and g(PGX, k) is not None:
            row(f"ASAP latency {k[5:]} no worse than the best peer",
                f"{g(PGX, k):.2f} ms vs {SHORT[bp[0]]} {bp[1]:.2f} ms", g(PGX, k) <= bp[1])  # fmt: skip
    if g(PGX, "asap_p99") is not None:
        row("ASAP latency p99 below 2 ms", f"{g(PGX, 'asap_p99'):.2f} ms", g(PGX, "asap_p99") < 2)
    if g(PGX, "timed_p99") is not None:
        row("Timed jobs start within 20 ms of due (p99)", f"{g(PGX, 'timed_p99'):.1f} ms",
            g(PGX, "timed_p99") < 20)  # fmt: skip
    for kind, label in (("claimed", "with jobs ahead claimed by another worker"),
                        ("snapshot", "with a snapshot held open")):  # fmt: skip
        if g(PGX, f"adverse_{kind}_ratio"):
            row(f"Drain {label} ≥ 70% of the plain drain",
                f"{g(PGX, f'adverse_{kind}'):,.0f} vs {g(PGX, 'adverse_plain'):,.0f} jobs/s = "
                f"{g(PGX, f'adverse_{kind}_ratio'):.2f}×",
                g(PGX, f"adverse_{kind}_ratio") >= 0.7)  # fmt: skip
    if g(PGX, "periodic_p99") is not None:
        missed, doubled = g(PGX, "periodic_missed") or 0, g(PGX, "periodic_doubled") or 0
        row("Periodic job starts within 100 ms of its fire time (p99), none missed or doubled",
            f"{g(PGX, 'periodic_p99'):.1f} ms over {g(PGX, 'periodic_fires'):,.0f} fires, "
            f"{missed:,.0f} missed, {doubled:,.0f} doubled",
            g(PGX, "periodic_p99") <= 100 and not missed and not doubled)  # fmt: skip
    bp = best_peer(res, "wal_per_job", False)
    if bp and g(PGX, "wal_per_job"):
        row("WAL bytes per job ≤ best peer's (run log on)",
            f"{g(PGX, 'wal_per_job'):,.0f} vs {SHORT[bp[0]]} {bp[1]:,.0f} B",
            g(PGX, "wal_per_job") <= bp[1])  # fmt: skip
        if g(PGX_OFF, "wal_per_job"):
            row("WAL bytes per job ≤ best peer's (run log off)",
                f"{g(PGX_OFF, 'wal_per_job'):,.0f} vs {SHORT[bp[0]]} {bp[1]:,.0f} B",
                g(PGX_OFF, "wal_per_job") <= bp[1])  # fmt: skip
    trace = g(PGX, "big_rss_trace")
    if trace and len(trace) > 8:
        vals = [kb for _, kb in trace]
        q = len(vals) // 4
        first, last = max(vals[q : 2 * q]), max(vals[-q:])
        row("Memory flat over a long drain",
            f"RSS {first / 1024:.1f} MiB in the 2nd quarter, {last / 1024:.1f} MiB in the last",
            last <= first * 1.1)  # fmt: skip
    if g(PGX, "big_rate") and g(PGX, "drain1"):
        r = g(PGX, "big_rate") / g(PGX, "drain1")
        row("The long drain's rate within 20% of the short drain's (1 process, run log on)",
            f"{g(PGX, 'big_rate'):,.0f} vs {g(PGX, 'drain1'):,.0f} jobs/s = {r:.2f}×", r >= 0.8)  # fmt: skip
    return out


def num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def best_config(res: dict[str, Any], meta: dict[str, Any], system: str) -> tuple[str, int | None]:
    """(what the configuration was, the worker process count of the headline drain)."""
    chosen = meta["configs"].get(system, {}).get("chosen")
    if chosen:
        src = "" if chosen["by"] == system else f", {NAMES.get(chosen['by'], chosen['by'])}'s"
        how = f"`{chosen['knob']}={json.dumps(chosen['value'])}`, {chosen['procs']} process"
        how += ("es" if chosen["procs"] > 1 else "") + f" (sweep{src})"
        return how, chosen["procs"]
    d1, d2 = res.get(system, {}).get("drain1"), res.get(system, {}).get("drain2")
    if not num(d1) and not num(d2):
        return "n/a", None
    procs = 2 if num(d2) and (not num(d1) or d2 >= d1) else 1
    pinned = " (`--config`)" if system in meta.get("pinned", []) else " (no sweep in this run)"
    return "as configured" + pinned, procs


def raw_limit(res: dict[str, Any]) -> float | None:
    """Bare psycopg's claim-and-delete drain with 2 processes at its best batch size."""
    v = res.get("bare", {}).get("drain2")
    return v if num(v) else None


def share(v: Any, limit: float | None) -> str:
    if not num(v) or not limit:
        return "n/a"
    return f"{v / limit:.0%}" if v / limit >= 0.1 else f"{v / limit:.1%}"


def headline(res: dict[str, Any], meta: dict[str, Any], systems: list[str]) -> list[str]:
    limit = raw_limit(res)
    lines = [
        "| System | Best configuration found | Drain in it, jobs/s | Share of the raw SQL limit |"
        " Drain, 1 process (share) | Drain, 2 processes (share) |",
        "|---|---|---|---|---|---|",
    ]
    for s in (PGX, PGX_OFF, "pgxjob-async", *PEERS, "bare"):
        if s not in systems:
            continue
        how, procs = best_config(res, meta, s)
        r = res.get(s, {})
        best = r.get(f"drain{procs}") if procs else None
        cells = [NAMES[s], how, fmt(best if num(best) else None, 0), share(best, limit)]
        for k in ("drain1", "drain2"):
            cells.append(
                f"{fmt(r.get(k) if num(r.get(k)) else None, 0)} ({share(r.get(k), limit)})"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def sweep_table(res: dict[str, Any], meta: dict[str, Any], systems: list[str]) -> list[str]:
    lines = ["| System | Knob | Value | 1 process, jobs/s | 2 processes, jobs/s |",
             "|---|---|---|---|---|"]  # fmt: skip
    for s in (PGX, *PEERS, "bare"):
        points = res.get(s, {}).get("sweep_points") if s in systems else None
        if not points:
            continue
        spec = meta["configs"][s]["sweep"]
        best = (res[s].get("sweep_value"), res[s].get("sweep_procs"))
        for value in spec["values"]:
            cells = [NAMES[s], f"`{spec['knob']}`", json.dumps(value)]
            for procs in (1, 2):
                p = [x for x in points if x["value"] == value and x["procs"] == procs]
                if not p:
                    cells.append("–")
                    continue
                txt = fmt(p[0]["rate"], 0) if p[0]["rate"] else "failed"
                cells.append(f"**{txt}**" if (value, procs) == best else txt)
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def keyed_table(res: dict[str, Any]) -> list[str]:
    r = res.get(PGX, {})
    if not num(r.get("keyed")):
        return []
    ratio_runs = r.get("keyed_ratio__runs") or []
    rng = f" ({min(ratio_runs):.2f}–{max(ratio_runs):.2f})" if len(ratio_runs) > 1 else ""
    return [
        "| pgxjob (run log on), 1 worker process | Plain drain | With priorities and unique keys"
        " | Keyed ÷ plain |",
        "|---|---|---|---|",
        f"| Drain, jobs/s | {fmt(r.get('keyed_plain'), 0)}{spread(res, PGX, 'keyed_plain')} | "
        f"{fmt(r.get('keyed'), 0)}{spread(res, PGX, 'keyed')} | {r.get('keyed_ratio', 0):.2f}×{rng} |",
        f"| Enqueue of that backlog, jobs/s | {fmt(r.get('keyed_plain_enqueue'), 0)} | "
        f"{fmt(r.get('keyed_enqueue'), 0)} | "
        + (
            f"{r['keyed_enqueue'] / r['keyed_plain_enqueue']:.2f}×"
            if num(r.get("keyed_plain_enqueue")) and num(r.get("keyed_enqueue"))
            else "n/a"
        )
        + " |",
    ]


def runtime_table(meta: dict[str, Any]) -> list[str]:
    rt = meta.get("runtime")
    if not rt:
        out = ["| System | Versions (own virtualenv under .bench/) |", "|---|---|"]
        for s, v in meta["versions"].items():
            out.append(
                f"| {NAMES.get(s, s)} | " + ", ".join(f"{k} {x}" for k, x in v.items()) + " |"
            )
        return out
    out = ["| System | Driver | Client | Library build | libpq | Python | Packages |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    for s, info in rt.items():
        pk = ", ".join(f"{k} {x}" for k, x in info.get("versions", {}).items() if k != "python")
        out.append(
            f"| {NAMES.get(s, s)} | `bench/drivers/{info.get('driver')}` | {info.get('client')} | "
            f"{info.get('impl')} | {info.get('libpq')} | {info.get('python')} | {pk} |"
        )
    return out


def plots(data: dict[str, Any]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    res = data["results"]
    systems = [s for s in (PGX, PGX_OFF, *PEERS) if s in res]
    colors = {PGX: "#1f77b4", PGX_OFF: "#6baed6", "pgqueuer": "#ff7f0e", "oban": "#2ca02c",
              "procrastinate": "#d62728", "bare": "#7f7f7f"}  # fmt: skip
    made = []

    keys = [("single1", "enqueue\n1 client"), ("single10", "enqueue\n10 clients"),
            ("drain1", "drain\n1 process"), ("drain2", "drain\n2 processes"),
            ("steady", "produce +\nconsume"), ("mixed", "drain, half\ntimed")]  # fmt: skip
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(systems)
    for k, s in enumerate(systems):
        ys = [value(res, s, key) for key, _ in keys]
        ys = [y if isinstance(y, (int, float)) else 0 for y in ys]
        xs = [i + k * width for i in range(len(keys))]
        ax.bar(xs, ys, width, label=NAMES[s], color=colors[s])
    ax.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(keys))])
    ax.set_xticklabels([lab for _, lab in keys])
    ax.set_ylabel("jobs per second (median of rounds)")
    ax.set_title("Throughput, no-op jobs")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(DEST / "throughput.png", dpi=110)
    plt.close(fig)
    made.append("throughput.png")

    bulk = [
        s
        for s in (PGX, *PEERS, "bare")
        if s in res and isinstance(res[s].get("bulk"), (int, float))
    ]
    if bulk:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.bar(
            [NAMES[s] for s in bulk],
            [res[s]["bulk"] for s in bulk],
            color=[colors[s] for s in bulk],
        )
        ax.set_ylabel("jobs per second")
        ax.set_title("Bulk enqueue")
        ax.grid(axis="y", alpha=0.3)
        plt.setp(ax.get_xticklabels(), rotation=15)
        fig.tight_layout()
        fig.savefig(DEST / "bulk.png", dpi=110)
        plt.close(fig)
        made.append("bulk.png")

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, kind, title in ((axes[0], "asap", "ASAP: commit to handler start"),
                            (axes[1], "timed", "Timed: due time to handler start")):  # fmt: skip
        for s in systems:
            lat = res[s].get(f"{kind}_all")
            if not lat:
                continue
            xs = sorted(lat)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.plot(xs, ys, label=NAMES[s], color=colors[s])
        ax.set_xscale("log")
        ax.set_xlabel("milliseconds (log scale)")
        ax.set_ylabel("fraction of jobs")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(DEST / "latency.png", dpi=110)
    plt.close(fig)
    made.append("latency.png")

    sizes = scaling_sizes(data)
    fig, ax = plt.subplots(figsize=(7, 4))
    for s in systems:
        ys = [scal(res, s, n) for n in sizes]
        pts = [(n, y) for n, y in zip(sizes, ys, strict=True) if isinstance(y, (int, float))]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=NAMES[s], color=colors[s])
    ax.set_xscale("log")
    ax.set_xlabel("backlog size (jobs)")
    ax.set_ylabel("drain, jobs per second")
    ax.set_title("Drain speed by backlog size, 1 worker process")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(DEST / "scaling.png", dpi=110)
    plt.close(fig)
    made.append("scaling.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    for s in (PGX, PGX_OFF):
        tr = res.get(s, {}).get("big_rss_trace")
        if tr:
            ax.plot(
                [t for t, _ in tr], [kb / 1024 for _, kb in tr], label=NAMES[s], color=colors[s]
            )
    ax.set_xlabel("seconds since the worker started")
    ax.set_ylabel("RSS, MiB")
    ax.set_ylim(bottom=0)
    ax.set_title(f"pgxjob worker memory over a {data['meta']['sizes']['big_n']:,}-job drain")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(DEST / "memory.png", dpi=110)
    plt.close(fig)
    made.append("memory.png")
    return made


def scaleout_section(pgx: dict[str, Any]) -> list[str]:
    """The scaleout workload's points (bench/scaleout.py), which docs/scaling.md reads."""
    points = [p for p in pgx.get("scaleout_points") or [] if "rate" in p]
    if not points:
        return []
    L = ["## Scale-out: worker processes and groups (pgxjob only)", ""]
    L.append(
        f"One round, each point a drain of a ready backlog of {points[0]['n']:,} no-op jobs on a "
        "fresh database with pgxjob's configuration above (run log on); server CPU is the "
        "PostgreSQL postmaster "
        "and all its backends, read from /proc (10 ms ticks: 0.5 µs per job at this size); "
        "transactions are `xact_commit`, the round trips of pgxjob's autocommit calls. "
        "docs/scaling.md reads the curve."
    )
    L.append("")
    L.append(
        "| Processes | Groups | Drain, jobs/s | Server CPU µs/job | Worker CPU µs/job "
        "| Server cores | Worker cores | WAL B/job | Transactions per 1,000 jobs "
        "| Enqueue: server CPU µs/job | Enqueue: WAL B/job |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for p in points:
        L.append(
            f"| {p['procs']} | {p['groups']} | {fmt(p['rate'], 0)} "
            f"| {fmt(p.get('db_cpu_us_per_job'), 1)} | {fmt(p.get('worker_cpu_us_per_job'), 1)} "
            f"| {fmt(p.get('db_cores'), 2)} | {fmt(p.get('worker_cores'), 2)} "
            f"| {fmt(p.get('wal_bytes_per_job'), 0)} | {fmt(p['xacts_per_job'] * 1000, 1)} "
            f"| {fmt(p.get('enqueue_db_cpu_us_per_job'), 1)} "
            f"| {fmt(p.get('enqueue_wal_bytes_per_job'), 0)} |"
        )
    L.append("")
    return L


def main() -> None:
    global DEST
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("results", nargs="?", default=str(BENCH / "results.json"))
    ap.add_argument("--dest", default=str(BENCH), help="directory for RESULTS.md and the plots")
    args = ap.parse_args()
    DEST = Path(args.dest)
    DEST.mkdir(parents=True, exist_ok=True)
    path = Path(args.results)
    data = json.loads(path.read_text())
    res, meta = data["results"], data["meta"]
    systems = list(res)
    sz = meta["sizes"]
    made = plots(data)
    L: list[str] = []
    L.append("# pgxjob benchmarks: side by side with procrastinate, PgQueuer and oban-py")
    L.append("")
    L.append(
        f"Generated by `make bench` (`bench/run.py`, then `bench/report.py`) on {meta['date']} in "
        f"{meta['elapsed_s'] // 60} min {meta['elapsed_s'] % 60} s. Each figure is the **median of "
        f"{sz['rounds']} rounds** (range in brackets for rates); every system runs in the same "
        "invocation, interleaved round by round, each workload on a fresh scratch database. "
        "No-op handlers. **Ratios: > 1 means pgxjob is better** (for rates pgxjob ÷ peer, for "
        "latency, WAL, dead tuples and memory peer ÷ pgxjob); for drain and steady-state the "
        "second ratio is pgxjob with the run log off."
    )
    L.append("")
    L.append("## Headline: each system in its best configuration")
    L.append("")
    L.append(
        "Each system's configuration is the fastest its sweep found (below), and every workload "
        "of the run used it. The drain is the median over the rounds of the drain workload with "
        "that many worker processes. **The raw SQL limit** is bare psycopg draining the same "
        "backlog with 2 processes, each claiming a batch with `update ... for update skip locked` "
        "and deleting it (no job runner, no listener, no run log), at its best batch size: a "
        "share of it reads as the part of what this server can do for a queue table that the "
        "system delivers."
    )
    L.append("")
    L.extend(headline(res, meta, systems))
    L.append("")
    L.append("## Results")
    L.append("")
    L.extend(table(res, systems))
    L.append("")
    keyed = keyed_table(res)
    if keyed:
        L.append("## pgxjob drain with priorities and unique keys")
        L.append("")
        L.append(
            f"The same backlog size ({sz['n']:,}) drained by one worker process: jobs spread "
            f"over {sz.get('keyed_levels', 5)} priority levels and {sz.get('keyed_share', 0.5):.0%} "
            "of them holding distinct unique keys, both shuffled over the insertion order (so "
            "fetch follows the priority index, not the id order, and every keyed job's key is "
            "released when it is acknowledged), next to a plain drain of the same size, each "
            "twice per round in the order keyed, plain, plain, keyed (mirrored every other round), "
            "rates averaged per kind. The ratio is the median of the rounds' ratios "
            f"(range in brackets). Unique keys left after the keyed drains: {fmt(res[PGX].get('keyed_keys_left'), 0)}."
        )
        L.append("")
        L.extend(keyed)
        L.append("")
    L.append("## Targets")
    L.append("")
    L.extend(targets(res))
    L.append("")
    sweep = sweep_table(res, meta, systems)
    if len(sweep) > 2:
        caps = [f"{NAMES[s]} {c['sweep_max_n']:,}" for s, c in meta["configs"].items()
                if c.get("sweep_max_n")]  # fmt: skip
        L.append("## Configuration sweep")
        L.append("")
        passes = meta.get("sweep_passes", 1)
        how = (
            "once per knob value and worker process count"
            if passes == 1
            else f"{passes} times per knob value and worker process count, in passes of "
            "alternating order, each point keeping its fastest drain"
        )
        L.append(
            f"Run first: each system drains the same backlog ({sz['n']:,} jobs; "
            f"capped: {', '.join(caps) or 'none'}) {how}. "
            "The fastest (bold) is kept for every later workload of the run; pgxjob (run log "
            "off) takes pgxjob's choice. The raw SQL limit sweeps its batch size with 2 "
            "processes only."
        )
        L.append("")
        L.extend(sweep)
        L.append("")
    L.append("## Drain speed by backlog size")
    L.append("")
    L.extend(scaling_table(res, systems, scaling_sizes(data)))
    L.append("")
    L.append(
        "One round, except the rows that are a system's drain-workload backlog, which are that "
        "workload's median. Backlogs above a "
        "system's cap were not run (n/a): "
        + (
            ", ".join(
                f"{NAMES[s]} capped at {c['max_n']:,} jobs"
                for s, c in meta["configs"].items()
                if c.get("max_n")
            )
            or "none"
        )  # fmt: skip
        + "; a capped system's drain, mixed and scaling figures use that smaller backlog."
    )
    if res.get(PGX, {}).get("big_rate"):
        L.append("")
        L.append(
            f"Long drain, pgxjob only ({sz['big_n']:,} jobs, one round): run log on "
            f"{fmt(res[PGX].get('big_rate'), 0)} jobs/s, peak RSS {fmt(res[PGX].get('big_peak_rss_mb'), 1)} MiB; "
            f"run log off {fmt(res.get(PGX_OFF, {}).get('big_rate'), 0)} jobs/s, peak RSS "
            f"{fmt(res.get(PGX_OFF, {}).get('big_peak_rss_mb'), 1)} MiB (plot: memory.png)."
        )
    L.append("")
    L.extend(scaleout_section(res.get(PGX, {})))
    if made:
        L.append("## Plots")
        L.append("")
        for m in made:
            L.append(f"![{m[:-4]}]({m})")
        L.append("")
    notes = BENCH / "NOTES.md"
    if notes.exists():
        L.append(notes.read_text().rstrip())
        L.append("")
    L.append("## Sizes (reduced from the target sizes to fit the run on 2 cores)")
    L.append("")
    L.append("| Workload | Target size | Measured here |")
    L.append("|---|---|---|")
    L.append(
        f"| Single enqueue | (not given) | {sz['single1_n']:,} jobs from 1 client; {sz['single10_n']:,} from 10 |"
    )
    L.append(f"| Bulk enqueue | 100,000 | {sz['n']:,} |")
    L.append(f"| Drain, 1 and 2 processes | 100,000 | {sz['n']:,} |")
    L.append(
        f"| Produce + consume | 20 s | {sz['steady_s']} s (producer: batches of 100, backlog capped at 2,000) |"
    )
    L.append(
        f"| Latency | 500 jobs | {sz['latency_n']:,} ASAP + {sz['latency_n']:,} timed, {sz['latency_gap'] * 1000:.0f} ms apart, timed due {sz['timed_delay']} s after enqueue |"
    )
    L.append(
        f"| WAL, dead tuples | per 100,000 | measured over the {sz['n']:,}-job bulk enqueue + drain, scaled |"
    )
    L.append(
        f"| Configuration sweep, raw SQL limit | (not given) | {sz['n']:,} per point, "
        f"{meta.get('sweep_passes', 1)} pass(es) |"
    )
    L.append(
        f"| Drain with priorities and unique keys | (not given) | {sz['n']:,}, paired with a plain drain |"
    )
    L.append(f"| Memory over a long drain | 1,000,000 | {sz['big_n']:,}, pgxjob only, one round |")
    L.append(f"| Backlog scaling | 10k, 100k, 1M | {', '.join(f'{n:,}' for n in sz['scaling'])} |")
    L.append(
        f"| Timed jobs mixed in | (not given) | {sz['mixed_n']:,}: half ASAP, half timed and already due |"
    )
    L.append("")
    L.append("## Machine and server")
    L.append("")
    m = meta["machine"]
    L.append(f"- CPU: {m['cpu']}, {m['cores']} cores; {m['mem_mb']:,} MiB RAM; Linux {m['kernel']}")
    L.append(f"- {meta['postgres']}")
    if meta.get("private_cluster"):
        L.append(
            "- A private cluster started by the runner under `.bench/pgdata` (port 55432): stock "
            "settings except "
            + ", ".join(f"{k}={v}" for k, v in meta.get("pg_settings", {}).items())
            + "; pg_stat_statements loaded but not tracking. WAL is read with "
            "pg_current_wal_lsn() after a CHECKPOINT, so it includes full-page images."
        )
    if meta.get("load"):
        ld = meta["load"]
        L.append(
            f"- Host load average (1 min) during the run: median {ld['median']:.1f}, max {ld['max']:.1f}. "
            "The host is shared: other sessions' test suites ran at the same time, so absolute "
            "numbers are noisy; the interleaved rounds and medians are what make the ratios comparable."
        )
    L.append("")
    L.append("## What each system ran on")
    L.append("")
    L.append(
        "Each system in its own virtualenv under `.bench/`, through its driver. The library build "
        "is read inside that virtualenv: `psycopg.pq.__impl__` for psycopg, and for asyncpg "
        "(which speaks the protocol itself, without libpq) whether its protocol module is compiled."
    )
    L.append("")
    L.extend(runtime_table(meta))
    L.append("")
    L.append("## Configurations")
    L.append("")
    for s, c in meta["configs"].items():
        L.append(f"- **{NAMES.get(s, s)}**: `{json.dumps(c)}`")
    L.append("")
    (DEST / "RESULTS.md").write_text("\n".join(L) + "\n")
    print(f"wrote {DEST / 'RESULTS.md'} and {', '.join(made)}")


if __name__ == "__main__":
    main()
