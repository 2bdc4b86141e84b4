"""The run's outputs: the table on stdout, ``latest.json`` and ``latest.png``."""

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import Figure, ScenarioResult
from bench.stack import REPO, Stack

PACKAGES = (
    "Django",
    "grpcio",
    "protobuf",
    "daphne",
    "Twisted",
    "autobahn",
    "channels",
    "channels-redis",
    "celery",
    "psycopg",
    "requests",
    "websockets",
    "matplotlib",
    "nats-py",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _command(*args: str) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10, cwd=REPO).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def code_version() -> dict[str, Any]:
    """The commit the processes run (taken before they start: they load the code then)."""
    return {
        "git_commit": _command("git", "rev-parse", "--short", "HEAD"),
        # Changes to tracked files not committed yet (product code or not).
        "git_changed_files": _command("git", "status", "--porcelain", "--untracked-files=no").splitlines(),
    }


def machine(stack: Stack) -> dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    postgres = redis_version = None
    try:
        with stack.connect_db() as conn:
            postgres = conn.execute("SHOW server_version").fetchone()[0]
            settings = dict(
                conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN ('synchronous_commit', 'fsync', 'shared_buffers', 'max_connections', 'wal_level')"
                ).fetchall()
            )
    except Exception:  # noqa: BLE001 - description only
        settings = {}
    try:
        import redis

        redis_version = redis.Redis.from_url(stack.env.get("REDIS_URL", "redis://127.0.0.1:6379/0")).info("server")[
            "redis_version"
        ]
    except Exception:  # noqa: BLE001 - description only
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "os": _command("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"),
        "python": platform.python_version(),
        "postgresql": postgres,
        "postgresql_settings": settings,
        "redis": redis_version,
        "packages": versions,
    }


def document(
    mode: str,
    sizes: dict[str, Any],
    results: list[ScenarioResult],
    seconds: float,
    stack: Stack,
    load_at_start: tuple[float, ...],
    code: dict[str, Any],
    nats_server: str | None = None,
) -> dict[str, Any]:
    return {
        "mode": mode,
        "code": code,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(seconds, 1),
        # 1/5/15-minute load averages: a busy machine (another test run) makes every figure noisy.
        "machine": {
            **machine(stack),
            "load_average_at_start": [round(x, 2) for x in load_at_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            # The peer's server (bench/nats_peer.py): its version, or None when it was not on PATH.
            "nats_server": nats_server,
        },
        "sizes": sizes,
        "scenarios": {result.name: result.as_dict() for result in results},
    }


def write_json(doc: dict[str, Any], results_dir: Path) -> Path:
    path = results_dir / "latest.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


# --- the table --------------------------------------------------------------------------------------


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if isinstance(value, int) or float(value).is_integer():
        return f"{value:,.0f}" + (f" {unit}" if unit else "")
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.2f} {unit}"


HEADER = ["figure", "value", "baseline (same run)", "ratio", "peer (same run)", "peer ratio", "target", "met?"]


def _ratio(ratio: float | None) -> str:
    return f"{ratio:.2f}x" if ratio is not None else "-"


def rows(results: list[ScenarioResult]) -> list[list[str]]:
    table = []
    for result in results:
        if result.error:
            table.append([f"{result.name}: FAILED", result.error.splitlines()[0][:80], "", "", "", "", "", "no"])
            continue
        for figure in result.figures:
            baseline = "-"
            if figure.baseline_value is not None:
                baseline = f"{_number(figure.baseline_value, figure.unit)} ({figure.baseline_name}{'' if figure.baseline_measured else '; reference'})"
            peer = "-"
            if figure.peer_value is not None:
                peer = f"{_number(figure.peer_value, figure.unit)} ({figure.peer_name})"
            elif figure.peer_name:
                peer = f"not measured ({figure.peer_name})"
            met = "-" if figure.met is None else ("yes" if figure.met else "NO")
            table.append(
                [
                    figure.name,
                    _number(figure.value, figure.unit),
                    baseline,
                    _ratio(figure.ratio),
                    peer,
                    _ratio(figure.peer_ratio),
                    figure.target or "-",
                    met,
                ]
            )
    return table


def table(results: list[ScenarioResult]) -> str:
    header = HEADER
    body = rows(results)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    line = "-+-".join("-" * width for width in widths)
    out = [line, " | ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)), line]
    out += [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in body]
    out.append(line)
    # What each figure's number does not say (latencies, CPU used, the empty-call ceiling).
    out += [f"{figure.name}: {figure.notes}" for result in results for figure in result.figures if figure.notes]
    return "\n".join(out)


# --- the chart --------------------------------------------------------------------------------------


def chart(doc: dict[str, Any], results_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = doc["scenarios"]
    fig, axes = plt.subplots(2, 2, figsize=(15, 10))
    machine_line = f"{doc['machine']['cores']} cores, {doc['machine']['memory_gib']} GiB, {doc['machine']['cpu_model']}"
    fig.suptitle(f"EventRelay bench ({doc['mode']} mode, {doc['timestamp']}, {machine_line})", fontsize=12)

    # 1. Throughput: product vs its baseline and its peer (a figure of an older file has no peer fields).
    ax = axes[0][0]
    bars = []
    for name in ("publish_batch", "publish_single", "pull", "consumers", "webhooks"):
        for figure in (scenarios.get(name) or {}).get("figures", []):
            if figure["unit"] in ("events/s", "deliveries/s") and (
                figure["baseline_value"] or figure.get("peer_value")
            ):
                bars.append(figure)
    if bars:
        labels = [_wrap(figure["name"], 16) for figure in bars]
        xs = range(len(bars))
        width = 0.27
        nan = float("nan")
        ax.bar([x - width for x in xs], [f["value"] or nan for f in bars], width, label="EventRelay", color="#3b7dd8")
        ax.bar(
            list(xs),
            [f["baseline_value"] or nan for f in bars],
            width,
            label="baseline (same run)",
            color="#999999",
        )
        ax.bar(
            [x + width for x in xs],
            [f.get("peer_value") or nan for f in bars],
            width,
            label="peer: NATS (same run)",
            color="#5bb36b",
        )
        for x, figure in zip(xs, bars, strict=True):
            if figure["ratio"] is not None:
                ax.annotate(
                    f"{figure['ratio']:.2f}x", (x - width, figure["value"]), ha="center", va="bottom", fontsize=8
                )
            if figure.get("peer_ratio") is not None:
                ax.annotate(
                    f"{figure['peer_ratio']:.2f}x\nof NATS",
                    (x + width, figure["peer_value"]),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.set_xticks(list(xs), labels, fontsize=6)
        ax.set_yscale("log")
        ax.set_ylabel("events or deliveries per second (log)")
        ax.legend(fontsize=8)
    ax.set_title("Throughput vs baseline and peer (ratios above the bars)")

    # 2. Latency percentiles of the fan-out scenarios.
    ax = axes[0][1]
    groups = []
    for name, label in (("ws_fanout", "WebSocket"), ("grpc_fanout", "gRPC stream")):
        details = (scenarios.get(name) or {}).get("details") or {}
        run = (
            details.get("run")
            or (details.get("runs") or {}).get(doc["sizes"]["ws_subscribers"])
            or (details.get("runs") or {}).get(str(doc["sizes"]["ws_subscribers"]))
        )
        if run:
            groups.append((f"{label}\n{run['subscribers']:,} subs x {run['rate_per_s']:g}/s", run["latency_ms"]))
        peer_run = details.get("peer_run")
        if peer_run:
            groups.append(
                (
                    f"peer: NATS core\n{peer_run['subscribers']:,} subs x {peer_run['rate_per_s']:g}/s",
                    peer_run["latency_ms"],
                )
            )
    if groups:
        points = ("p50", "p95", "p99", "max")
        width = 0.8 / len(points)
        for index, point in enumerate(points):
            ax.bar(
                [g + index * width for g in range(len(groups))],
                [max(group[1][point] or 0, 0.01) for group in groups],
                width,
                label=point,
            )
        ax.set_xticks([g + 1.5 * width for g in range(len(groups))], [group[0] for group in groups])
        ax.axhline(100, color="green", linestyle="--", linewidth=1, label="target p99 100 ms")
        ax.axhline(200, color="red", linestyle=":", linewidth=1, label="Centrifugo p99 200 ms (reference)")
        ax.set_yscale("log")
        ax.set_ylabel("publish → receive latency, ms (log)")
        ax.legend(fontsize=8)
    ax.set_title("Fan-out latency percentiles")

    # 3. Publish throughput growth.
    ax = axes[1][0]
    for name, marker, color in (("publish_batch", "o", "#3b7dd8"), ("publish_single", "s", "#d8703b")):
        growth = (scenarios.get(name) or {}).get("growth")
        if growth and growth.get("points"):
            xs = [point["x"] for point in growth["points"]]
            ax.plot(
                xs,
                [point["product"] for point in growth["points"]],
                marker=marker,
                color=color,
                label=f"EventRelay: {growth['title'].lower()}",
            )
            ax.plot(
                xs,
                [point["baseline"] for point in growth["points"]],
                marker=marker,
                color=color,
                linestyle="--",
                label=f"baseline: {growth['title'].lower()}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size (events per call) / concurrent callers")
    ax.set_ylabel("events per second (log)")
    ax.set_title("Publish throughput as the batch or the callers grow")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)

    # 4. Fan-out latency growth.
    ax = axes[1][1]
    growth = (scenarios.get("ws_fanout") or {}).get("growth")
    if growth and growth.get("points"):
        xs = [point["x"] for point in growth["points"]]
        for point_name, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
            ax.plot(xs, [max(point[point_name] or 0, 0.01) for point in growth["points"]], style, label=point_name)
        for point in growth["points"]:
            if point["lost"]:
                ax.annotate(
                    f"{point['lost']:,} not received\nwithin the drain window",
                    (point["x"], max(point["p99"] or 0.01, 0.01)),
                    fontsize=8,
                    va="top",
                    ha="right",
                )
        ax.axhline(100, color="green", linestyle="--", linewidth=1, label="target p99 100 ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.set_xlabel("WebSocket subscribers on one topic (10 events/s)")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title("WebSocket fan-out latency as subscribers grow")

    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path = results_dir / "latest.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _wrap(text: str, width: int = 22) -> str:
    words, lines, current = text.split(), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    lines.append(current)
    return "\n".join(lines)


def markdown(doc: dict[str, Any]) -> str:
    """The table of a results file as Markdown (``python -m bench.report [latest.json]``), for docs."""
    results = [
        ScenarioResult(
            name=scenario["name"],
            title=scenario["title"],
            figures=[Figure(**figure) for figure in scenario["figures"]],
            error=scenario["error"],
        )
        for scenario in doc["scenarios"].values()
    ]
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows(results)]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    source = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "bench" / "results" / "latest.json"
    print(markdown(json.loads(source.read_text())))
