"""Tables (Markdown) and plots (PNG, matplotlib's Agg backend) from a results dict."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

LABEL = {"kubernetes": "kubernetes (fake API server)"}


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); with 30 samples p99 is the largest."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _short(backend: str) -> str:
    return "kubernetes\n(fake)" if backend == "kubernetes" else backend


def _label(backend: str) -> str:
    return LABEL.get(backend, backend)


def handover_rows(out: dict[str, Any]) -> list[list[str]]:
    rows = []
    for backend, entry in out["backends"].items():
        base = entry["impls"].get("leadercron", {}).get("graceful")
        for key, impl in entry["impls"].items():
            samples = impl.get("graceful")
            if samples is None:
                if "graceful_error" in impl:
                    rows.append([_label(backend), key, "-", impl["graceful_error"], "", "", ""])
                continue
            p50 = statistics.median(samples)
            ratio = f"{p50 / statistics.median(base):.1f}x" if base else "-"
            rows.append(
                [
                    _label(backend),
                    key,
                    str(len(samples)),
                    _ms(p50),
                    _ms(pct(samples, 0.99)),
                    _ms(max(samples)),
                    "1x" if key == "leadercron" else ratio,
                ]
            )
    return rows


def crash_rows(out: dict[str, Any]) -> list[list[str]]:
    rows = []
    for backend, entry in out["backends"].items():
        for key, impl in entry["impls"].items():
            samples = impl.get("crash")
            if samples is None:
                if "crash_error" in impl:
                    rows.append([_label(backend), key, "-", "-", impl["crash_error"], "", "", ""])
                continue
            ttl = impl["ttl"]
            p50 = statistics.median(samples)
            rows.append(
                [
                    _label(backend),
                    key,
                    f"{ttl:g}",
                    str(len(samples)),
                    f"{min(samples):.3f}",
                    f"{p50:.3f}",
                    f"{max(samples):.3f}",
                    f"{p50 / ttl:.2f}",
                ]
            )
    return rows


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def steady_rows(out: dict[str, Any]) -> list[list[str]]:
    rows = []
    for backend, entry in out["backends"].items():
        for key, row in entry.get("steady", {}).items():
            result = row.get("result")
            if result is None:
                error = row.get("result_error", "?")
                rows.append([_label(backend), key, "-", error, "", "", "", ""])
                continue
            for role in ("leader", "follower"):
                r = result[role]
                calls = r.get("calls_per_s") or {}
                call_text = ", ".join(f"{k} {v:.2f}" for k, v in sorted(calls.items()) if v > 0)
                wire = r.get("wire_per_s")
                no_server = row.get("instrumented") and wire is None
                wire_text = "no server" if no_server else _rate(wire)
                server = result.get("server_per_s")
                server_text = "" if role == "follower" else _rate(server)
                rows.append(
                    [
                        _label(backend),
                        key,
                        role,
                        wire_text,
                        server_text,
                        call_text or "-",
                        f"{r['cpu_percent']:.2f}",
                        f"{r['rss_mb']:.1f}",
                    ]
                )
    return rows


def herd_summary(result: dict[str, Any]) -> dict[str, float]:
    windows = result["windows"]
    wire = [w.get("wire", 0) for w in windows]
    acquires = [w.get("call.acquire", 0) for w in windows]
    waits = [w.get("call.wait_for_change", 0) for w in windows]
    idle = result["idle_counts"]
    return {
        "wire_median": statistics.median(wire),
        "wire_max": max(wire),
        "acquire_median": statistics.median(acquires),
        "acquire_max": max(acquires),
        "wait_median": statistics.median(waits),
        "idle_wire_per_s": idle.get("wire", 0) / result["idle_seconds"],
    }


def herd_rows(out: dict[str, Any]) -> list[list[str]]:
    rows = []
    for backend, entry in out["herd"].items():
        result = entry.get("result")
        if result is None:
            rows.append([backend, "-", "-", entry.get("result_error", "?"), "", "", "", ""])
            continue
        s = herd_summary(result)
        lat = result["latencies"]
        rows.append(
            [
                backend,
                str(result["candidates"]),
                str(len(lat)),
                _ms(statistics.median(lat)),
                _ms(pct(lat, 0.99)),
                f"{s['wire_median']:g} (max {s['wire_max']:g})",
                f"{s['acquire_median']:g} (max {s['acquire_max']:g})",
                f"{s['idle_wire_per_s']:.1f}",
            ]
        )
    return rows


def claims_rows(out: dict[str, Any]) -> list[list[str]]:
    rows = []
    local = out["meta"].get("local_check_seconds")
    for backend, entry in out["claims"].items():
        result = entry.get("result")
        if result is None:
            rows.append([_label(backend), entry.get("result_error", "?"), "", "", ""])
            continue
        if not result["supported"]:
            rows.append([_label(backend), "no claims", "", "", ""])
            continue
        ratio = f"{result['median'] / local:,.0f}x" if local else "-"
        rows.append(
            [
                _label(backend),
                f"{result['median'] * 1e3:.3f}",
                f"{result['p99'] * 1e3:.3f}",
                f"{result['per_second']:,.0f}",
                ratio,
            ]
        )
    return rows


def tables(out: dict[str, Any]) -> str:
    parts = []
    rows = handover_rows(out)
    if rows:
        parts.append("### Graceful handover (SIGTERM to the leader -> another leads), ms\n")
        parts.append(
            _table(
                ["backend", "implementation", "n", "p50", "p99", "max", "p50 vs leadercron"], rows
            )
        )
    rows = crash_rows(out)
    if rows:
        parts.append("### Crash takeover (kill -9 of the leader -> another leads), seconds\n")
        parts.append(
            _table(
                ["backend", "implementation", "ttl", "n", "min", "p50", "max", "p50 / ttl"], rows
            )
        )
    rows = steady_rows(out)
    if rows:
        parts.append("### Steady state per replica (ttl 15s, renew 10s, retry 2s where set)\n")
        parts.append(
            _table(
                [
                    "backend",
                    "implementation",
                    "role",
                    "requests/s (client)",
                    "server-side, both",
                    "backend calls/s",
                    "CPU %",
                    "RSS MB",
                ],
                rows,
            )
        )
    rows = herd_rows(out)
    if rows:
        parts.append("### Handover among many candidates (leader resigns -> next leads)\n")
        parts.append(
            _table(
                [
                    "backend",
                    "candidates",
                    "n",
                    "p50 ms",
                    "p99 ms",
                    "requests per handover",
                    "acquire calls per handover",
                    "idle requests/s (all)",
                ],
                rows,
            )
        )
    rows = claims_rows(out)
    if rows:
        local = out["meta"].get("local_check_seconds")
        head = f"x local check ({local * 1e6:.2f} us)" if local else "x local check"
        parts.append("### Claim overhead per fire\n")
        parts.append(_table(["backend", "median ms", "p99 ms", "claims/s", head], rows))
    return "\n".join(parts)


# -- plots -------------------------------------------------------------------------------------

COLORS = {
    "leadercron": "#1f77b4",
    "etcdctl elect": "#ff7f0e",
    "consul lock": "#2ca02c",
    "tooz": "#d62728",
    "redis-py Lock": "#9467bd",
}


def plots(out: dict[str, Any], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = directory / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    # 1. graceful handover, box per (backend, implementation)
    groups = [
        (backend, key, impl["graceful"])
        for backend, entry in out["backends"].items()
        for key, impl in entry["impls"].items()
        if impl.get("graceful")
    ]
    if groups:
        fig, ax = plt.subplots(figsize=(max(7, 0.7 * len(groups) + 2), 4.8))
        data = [[s * 1e3 for s in g[2]] for g in groups]
        positions, ticks, labels = [], [], []
        x = 0.0
        previous = None
        for backend, _key, _ in groups:
            x += 1.0 if backend == previous else 1.8
            previous = backend
            positions.append(x)
        box = ax.boxplot(data, positions=positions, widths=0.7, patch_artist=True)
        for patch, (_, key, _) in zip(box["boxes"], groups, strict=True):
            patch.set_facecolor(COLORS.get(key, "#888888"))
        for backend in dict.fromkeys(g[0] for g in groups):
            xs = [p for p, g in zip(positions, groups, strict=True) if g[0] == backend]
            ticks.append(sum(xs) / len(xs))
            labels.append(_label(backend).replace(" (", "\n("))
        ax.set_xticks(ticks, labels)
        ax.set_yscale("log")
        ax.set_ylabel("SIGTERM to leader -> next leads (ms, log)")
        ax.set_title("Graceful handover")
        handles = [
            plt.Rectangle((0, 0), 1, 1, color=COLORS.get(k, "#888888"))
            for k in dict.fromkeys(g[1] for g in groups)
        ]
        ax.legend(handles, list(dict.fromkeys(g[1] for g in groups)), fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        save(fig, "handover.png")

    # 2. crash takeover vs ttl
    points = [
        (backend, key, impl["ttl"], impl["crash"])
        for backend, entry in out["backends"].items()
        for key, impl in entry["impls"].items()
        if impl.get("crash")
    ]
    if points:
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
        names = [f"{_label(b)}\n{k}" for b, k, _, _ in points]
        medians = [statistics.median(s) for *_, s in points]
        ratios = [m / ttl for m, (_, _, ttl, _) in zip(medians, points, strict=True)]
        colors = [COLORS.get(k, "#888888") for _, k, _, _ in points]
        ys = range(len(points))
        for y, (_, _, ttl, samples), color in zip(ys, points, colors, strict=True):
            left.scatter(samples, [y] * len(samples), color=color, s=18, zorder=3)
            left.scatter([ttl], [y], marker="|", color="black", s=200, zorder=4)
        left.set_yticks(list(ys), names, fontsize=7)
        left.invert_yaxis()
        left.set_xscale("log")
        largest = max(max(*samples, ttl) for _, _, ttl, samples in points)
        left.set_xlim(1e-3, 2 * largest)
        left.set_xlabel("kill -9 of leader -> next leads (s); | marks the ttl")
        left.set_title("Crash takeover")
        left.grid(axis="x", alpha=0.3)
        right.barh(list(ys), ratios, color=colors)
        right.axvline(1.0, color="black", linestyle="--", linewidth=1)
        right.set_yticks(list(ys), names, fontsize=7)
        right.invert_yaxis()
        right.set_xlabel("median takeover / ttl")
        right.set_title("Relative to the ttl")
        save(fig, "crash.png")

    # 3. steady state
    steady = [
        (backend, key, row["result"])
        for backend, entry in out["backends"].items()
        for key, row in entry.get("steady", {}).items()
        if row.get("result")
    ]
    if steady:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 0.95 * len(steady) + 2), 7))
        names = [f"{_short(b)}\n{k}" for b, k, _ in steady]
        xs = range(len(steady))
        width = 0.38
        for offset, role, hatch in ((-width / 2, "leader", ""), (width / 2, "follower", "//")):
            wire = [r[role]["wire_per_s"] or 0 for _, _, r in steady]
            cpu = [r[role]["cpu_percent"] for _, _, r in steady]
            colors = [COLORS.get(k, "#888888") for _, k, _ in steady]
            top.bar([x + offset for x in xs], wire, width, color=colors, hatch=hatch, label=role)
            bottom.bar([x + offset for x in xs], cpu, width, color=colors, hatch=hatch, label=role)
        for x, (_, _, r) in zip(xs, steady, strict=True):
            if r["leader"]["wire_per_s"] is None:
                top.text(x, 0.05, "not\ncounted", ha="center", va="bottom", fontsize=7)
        top.set_ylabel("requests/s (client-counted)")
        top.set_yscale("symlog", linthresh=1)
        top.set_title("Steady state per replica (solid: leader, hatched: follower)")
        bottom.set_ylabel("CPU %")
        for ax in (top, bottom):
            ax.set_xticks(list(xs), names, fontsize=7)
            ax.grid(axis="y", alpha=0.3)
        save(fig, "steady.png")

    # 4. herd
    herd = [(b, e["result"]) for b, e in out["herd"].items() if e.get("result")]
    if herd:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
        left.boxplot([[s * 1e3 for s in r["latencies"]] for _, r in herd])
        left.set_xticks(range(1, len(herd) + 1), [b for b, _ in herd])
        left.set_ylabel("resign -> next leads (ms)")
        left.set_title(f"{herd[0][1]['candidates']} candidates: handover")
        left.grid(axis="y", alpha=0.3)
        summaries = [herd_summary(r) for _, r in herd]
        xs = range(len(herd))
        right.bar(
            [x - 0.2 for x in xs], [s["wire_median"] for s in summaries], 0.4, label="requests"
        )
        right.bar(
            [x + 0.2 for x in xs],
            [s["acquire_median"] for s in summaries],
            0.4,
            label="acquire calls",
        )
        right.set_xticks(list(xs), [b for b, _ in herd])
        right.set_ylabel("per handover, all candidates (median)")
        right.set_title("What one handover sets off")
        right.legend(fontsize=8)
        right.grid(axis="y", alpha=0.3)
        save(fig, "herd.png")

    # 5. claims
    claim_rows = [
        (b, e["result"])
        for b, e in out["claims"].items()
        if e.get("result") and e["result"].get("supported")
    ]
    if claim_rows:
        fig, ax = plt.subplots(figsize=(8, 4))
        xs = range(len(claim_rows))
        ax.bar([x - 0.2 for x in xs], [r["median"] * 1e3 for _, r in claim_rows], 0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], [r["p99"] * 1e3 for _, r in claim_rows], 0.4, label="p99")
        ax.set_xticks(list(xs), [_label(b).replace(" (", "\n(") for b, _ in claim_rows])
        ax.set_yscale("log")
        ax.set_ylabel("ms per claim (log)")
        ax.set_title("Claim overhead per fire")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        save(fig, "claims.png")
    return written
