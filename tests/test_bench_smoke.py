"""The benchmark harness runs end to end in its quick mode (CI smoke test: its numbers are not asserted)."""

import json
import math
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bench.run import SCENARIOS

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent


# The rows whose peer SPEC.md names (NATS): measured whenever nats-server is on PATH (bench/nats_peer.py).
PEER_SCENARIOS = ("publish_batch", "publish_single", "consumers", "ws_fanout")
HAVE_NATS = shutil.which("nats-server") is not None


def numbers_in(figure: dict) -> list[object]:
    return [
        figure["value"],
        *([figure["baseline_value"]] if figure["baseline_measured"] else []),
        *([figure["peer_value"]] if HAVE_NATS and figure["peer_name"] else []),
    ]


def test_the_quick_bench_runs_every_scenario_and_writes_numeric_figures(tmp_path: Path) -> None:
    # A database of its own (the harness drops and recreates it), dropped again afterwards.
    database = f"eventrelay_bench_smoke_{uuid.uuid4().hex[:8]}"
    database_url = f"postgres://postgres@127.0.0.1:5432/{database}"
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.run",
                "--quick",
                "--results-dir",
                str(tmp_path),
                "--database-url",
                database_url,
                # Other tests may share the machine (pytest-xdist): waiting for it to be idle would only add time.
                "--settle-s",
                "0",
            ],
            cwd=REPO,
            env={**os.environ},
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        import psycopg

        with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    # A failed scenario's traceback is in the results file; the printed output alone cuts it off.
    results_file = tmp_path / "latest.json"
    if results_file.exists():
        for name, scenario in json.loads(results_file.read_text())["scenarios"].items():
            assert scenario["error"] is None, f"{name}: {scenario['error']}"
    assert run.returncode == 0, f"bench exited {run.returncode}\n{run.stdout[-5000:]}\n{run.stderr[-5000:]}"
    assert "met?" in run.stdout  # the table was printed
    results = json.loads((tmp_path / "latest.json").read_text())
    assert results["mode"] == "quick"
    assert results["machine"]["cores"] and results["machine"]["cpu_model"]
    assert set(results["scenarios"]) == set(SCENARIOS)
    for name, scenario in results["scenarios"].items():
        assert scenario["error"] is None, f"{name}: {scenario['error']}"
        assert scenario["figures"], name
        for figure in scenario["figures"]:
            for number in numbers_in(figure):
                assert isinstance(number, int | float) and math.isfinite(number), (name, figure)
    # Every row SPEC.md gives a peer has one (numeric whenever nats-server is on PATH: numbers_in above).
    for name in PEER_SCENARIOS:
        assert any(figure["peer_name"] for figure in results["scenarios"][name]["figures"]), name
    if HAVE_NATS:
        assert results["machine"]["nats_server"], "the bench's own nats-server answered with its version"
    # The single-event row's target is against the empty call, INSERT+COMMIT reported beside it.
    single = results["scenarios"]["publish_single"]["figures"]
    assert "empty" in single[0]["baseline_name"] and "INSERT+COMMIT" in single[1]["baseline_name"], single
    # The web process's own figures: frames per CPU-second and memory per idle connection, both measured.
    ws_units = {figure["unit"]: figure for figure in results["scenarios"]["ws_fanout"]["figures"]}
    assert ws_units["frames/CPU-s"]["value"] > 0 and ws_units["KB"]["value"] is not None, ws_units
    # Where the time goes: the CPU each side used, the gRPC server's read from /proc during the run.
    publish = results["scenarios"]["publish_single"]["details"]
    for result in (*(run["product"] for run in publish.values() if "product" in run), publish["empty_grpc_calls"]):
        assert result["cpu_cores"]["grpc server"] > 0 and result["cpu_cores"]["load generator"] > 0, result
    assert (tmp_path / "latest.png").stat().st_size > 10_000
