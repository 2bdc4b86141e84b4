"""Retention under load: publishing (batches of 500 from one caller, and one event per call from 32 callers) while
the sweep deletes a backlog of old events, beside the same publish load on a topic without retention, in the same
run.

The retained topic starts with ``retention_backlog`` old events (written straight into its table by SQL, and its
counter set, which is what a year of publishing leaves) and ``retentionMaxEvents`` = ``retention_keep``. A sweeper
process runs the sweep every second, as beat schedules it, for as long as the two publish loads last, and samples
the table's size on disk after each sweep: once the backlog is gone the size should stop growing, however much is
published (autovacuum makes the deleted rows' space reusable).
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bench.children import Child
from bench.common import EVENT_NAME, Figure, ScenarioResult, metadata, progress
from bench.scenarios.publish import grpc_publish, measure

if TYPE_CHECKING:
    from bench.run import Bench

REPO = Path(__file__).resolve().parent.parent.parent
SINGLE_CALLERS = 32
BATCH = 500


def _fill_by_sql(bench: "Bench", topic: str, rows: int) -> None:
    """``rows`` old events in the topic's table and its counter, without going through publish (not timed)."""
    with bench.stack.connect_db(autocommit=True) as conn:
        conn.execute(
            f'INSERT INTO "{topic}_events" ("offset", event_id, name, topic_id, source, user_id, event_occurred_at, '
            "context, data, stored_at) SELECT n, gen_random_uuid(), %s, '', 'grpc', 'user-' || (n %% 1000), "
            "now() - interval '30 days', '{}'::jsonb, jsonb_build_object('seq', n, 'pad', repeat('x', 200)), "
            "now() - interval '30 days' FROM generate_series(1, %s) AS n",
            [EVENT_NAME, rows],
        )
        conn.execute("UPDATE topics_topic SET last_offset = %s WHERE name = %s", [rows, topic])
        conn.execute(f'VACUUM ANALYZE "{topic}_events"')


def _deleted_total(bench: "Bench", topic: str) -> int:
    with bench.stack.connect_db() as conn:
        row = conn.execute(
            "SELECT s.deleted_total FROM topics_retentionstate s JOIN topics_topic t ON t.id = s.topic_id "
            "WHERE t.name = %s",
            [topic],
        ).fetchone()
    return int(row[0]) if row else 0


def _set_retention(bench: "Bench", topic: str, keep: int) -> None:
    from eventrelay.v1 import eventrelay_pb2 as pb
    from eventrelay.v1 import eventrelay_pb2_grpc as pb_grpc

    pb_grpc.TopicsStub(bench.grpc_channel()).UpdateTopic(
        pb.UpdateTopicRequest(name=topic, retention_max_events=keep), metadata=metadata(bench.token), timeout=30
    )


def _publish_child(bench: "Bench", topic: str, batch: int, callers: int, label: str) -> Child:
    return Child(
        *(
            grpc_publish,
            bench.stack.grpc_address,
            bench.stack.process("grpc").pid,
            bench.token,
            topic,
            batch,
            callers,
            bench.mode.warmup,
            bench.mode.duration,
        ),
        label=label,
    )


def retention(bench: "Bench") -> ScenarioResult:
    mode = bench.mode
    result = ScenarioResult("retention", "Publishing while retention deletes a backlog, vs the same without retention")
    timeout = mode.warmup + mode.duration + 120
    plain = bench.new_topic("ret_plain")
    kept = bench.new_topic("ret_kept")
    progress(f"writing {mode.retention_backlog:,} old events into {kept}")
    _fill_by_sql(bench, kept, mode.retention_backlog)

    baseline_batch = measure(bench, _publish_child(bench, plain, BATCH, 1, "publish batches, no retention"), timeout)
    baseline_single = measure(
        bench, _publish_child(bench, plain, 1, SINGLE_CALLERS, "publish 1/call, no retention"), timeout
    )

    _set_retention(bench, kept, mode.retention_keep)
    sweep_seconds = 2 * (mode.warmup + mode.duration) + 10
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        sweeper = subprocess.Popen(
            [sys.executable, "-m", "bench.retention_sweeper", kept, str(sweep_seconds), "1", out.name],
            cwd=REPO,
            env=bench.stack.env,
        )
        try:
            product_batch = measure(bench, _publish_child(bench, kept, BATCH, 1, "publish batches, sweeping"), timeout)
            product_single = measure(
                bench, _publish_child(bench, kept, 1, SINGLE_CALLERS, "publish 1/call, sweeping"), timeout
            )
        finally:
            sweeper.wait(sweep_seconds + 120)
        sweeps = json.loads(Path(out.name).read_text() or "{}")
    samples = sweeps.get("samples", [])
    deleted = _deleted_total(bench, kept)
    cleared = sweeps.get("backlog_cleared_at")
    after_backlog = [sample["bytes"] for sample in samples if cleared is not None and sample["t"] >= cleared]
    size_note = (
        f"table size after the backlog went: {after_backlog[0] / 1e6:.1f} MB at first, "
        f"{max(after_backlog) / 1e6:.1f} MB at most, {after_backlog[-1] / 1e6:.1f} MB at the end"
        if after_backlog
        else "the backlog was not cleared within the run"
    )
    result.details = {
        "backlog": mode.retention_backlog,
        "keep": mode.retention_keep,
        "deleted": deleted,
        "backlog_cleared_at_s": cleared,
        "sweeps": samples,
        "batch": {"product": product_batch, "baseline": baseline_batch},
        "single": {"product": product_single, "baseline": baseline_single},
    }
    for key, label, product, baseline in (
        ("retention_batch", f"Publish batches of {BATCH} while retention deletes", product_batch, baseline_batch),
        (
            "retention_single",
            f"Publish 1 event/call, {SINGLE_CALLERS} callers, while retention deletes",
            product_single,
            baseline_single,
        ),
    ):
        p99_ratio = product["call_ms"]["p99"] / baseline["call_ms"]["p99"] if baseline["call_ms"]["p99"] else None
        met = product["events_per_s"] >= 0.8 * baseline["events_per_s"] and p99_ratio is not None and p99_ratio <= 2
        result.figures.append(
            Figure(
                key,
                label,
                "events/s",
                product["events_per_s"],
                "the same publish load on a topic without retention",
                baseline["events_per_s"],
                "higher",
                ">= 0.8 x baseline and publish p99 <= 2 x",
                met,
                notes=(
                    f"publish p99 {product['call_ms']['p99']:.1f} ms vs {baseline['call_ms']['p99']:.1f} ms "
                    f"({p99_ratio:.2f}x); the sweep deleted {deleted:,} events "
                    f"(backlog {mode.retention_backlog:,}, keeping {mode.retention_keep:,}); {size_note}"
                ),
            )
        )
    return result
