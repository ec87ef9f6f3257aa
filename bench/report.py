# ruff: noqa: E501, RUF001, RUF028
"""Turn bench/results.json into bench/RESULTS.md and the PNG plots beside it.

    python bench/report.py [results.json]

bench/NOTES.md (hand-written: what limits pgxjob where it trails, and what would help) is copied
into RESULTS.md verbatim.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PGX, PGX_OFF = "pgxjob", "pgxjob-nolog"
PEERS = ["pgqueuer", "oban", "procrastinate"]
NAMES = {
    "pgxjob": "pgxjob (run log on)",
    "pgxjob-nolog": "pgxjob (run log off)",
    "pgxjob-defaults": "pgxjob (start_worker defaults)",
    "pgqueuer": "PgQueuer",
    "oban": "oban-py",
    "procrastinate": "procrastinate",
    "bare": "bare psycopg",
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
    cols = [s for s in (PGX, PGX_OFF, "pgxjob-defaults", *peers, "bare") if s in systems]
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
    out = ["| Target (issue 5) | Measured | Met? |", "|---|---|---|"]

    def row(name: str, measured: str, ok: bool | None) -> None:
        out.append(
            f"| {name} | {measured} | {'yes' if ok else ('n/a' if ok is None else '**no**')} |"
        )

    pq = g("pgqueuer", "drain1"), g("pgqueuer", "drain2")
    pq_best = max([v for v in pq if v] or [0])
    off = max([v for v in (g(PGX_OFF, "drain1"), g(PGX_OFF, "drain2")) if v] or [0])
    if pq_best and off:
        row("Drain ≥ 1.5× PgQueuer's best, run log off",
            f"{off:,.0f} vs {pq_best:,.0f} jobs/s = {off / pq_best:.2f}×", off / pq_best >= 1.5)  # fmt: skip
    on = max([v for v in (g(PGX, "drain1"), g(PGX, "drain2")) if v] or [0])
    peers_best = max([g(p, k) or 0 for p in PEERS for k in ("drain1", "drain2")] or [0])
    if on and peers_best:
        row("Drain ahead of every peer, run log on",
            f"{on:,.0f} vs {peers_best:,.0f} jobs/s = {on / peers_best:.2f}×", on > peers_best)  # fmt: skip
    bp = best_peer(res, "bulk", True)
    if bp and g(PGX, "bulk"):
        r = g(PGX, "bulk") / bp[1]
        row("Bulk enqueue ≥ 2× the fastest peer",
            f"{g(PGX, 'bulk'):,.0f} vs {SHORT[bp[0]]} {bp[1]:,.0f} jobs/s = {r:.2f}×", r >= 2)  # fmt: skip
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
    if g(PGX, "timed_p99") is not None:
        row("Timed jobs start within 50 ms of due (p99)", f"{g(PGX, 'timed_p99'):.1f} ms",
            g(PGX, "timed_p99") <= 50)  # fmt: skip
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
    fig.savefig(BENCH / "throughput.png", dpi=110)
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
        fig.savefig(BENCH / "bulk.png", dpi=110)
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
    fig.savefig(BENCH / "latency.png", dpi=110)
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
    fig.savefig(BENCH / "scaling.png", dpi=110)
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
    fig.savefig(BENCH / "memory.png", dpi=110)
    plt.close(fig)
    made.append("memory.png")
    return made


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else BENCH / "results.json"
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
    L.append("## Results")
    L.append("")
    L.extend(table(res, systems))
    L.append("")
    L.append("## Issue 5 targets")
    L.append("")
    L.extend(targets(res))
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
    L.append("## Sizes (reduced from the issue's to fit about 20 minutes on 2 cores)")
    L.append("")
    L.append("| Workload | Issue asks | Measured here |")
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
    L.append("## Versions")
    L.append("")
    L.append("| System | Versions (own virtualenv under .bench/) |")
    L.append("|---|---|")
    for s, v in meta["versions"].items():
        L.append(f"| {NAMES.get(s, s)} | " + ", ".join(f"{k} {x}" for k, x in v.items()) + " |")
    L.append("")
    L.append("## Configurations")
    L.append("")
    for s, c in meta["configs"].items():
        L.append(f"- **{NAMES.get(s, s)}**: `{json.dumps(c)}`")
    L.append("")
    (BENCH / "RESULTS.md").write_text("\n".join(L) + "\n")
    print(f"wrote {BENCH / 'RESULTS.md'} and {', '.join(made)}")


if __name__ == "__main__":
    main()
