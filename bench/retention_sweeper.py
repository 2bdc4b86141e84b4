"""``python -m bench.retention_sweeper <topic> <seconds> <interval_s> <out.json>``: sweep one topic the way beat
schedules it (every ``interval_s``) for ``seconds``, sampling the table's size on disk after each sweep, and write
what it did to ``out.json``. The bench's retention scenario runs it beside a publish load."""

import json
import os
import sys
import time


def main() -> None:
    topic, seconds, interval, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventrelay.settings")
    import django

    django.setup()
    from topics.retention import sweep_topic
    from topics.tables import table_size_bytes

    samples = []
    started = time.monotonic()
    backlog_cleared_at = None
    while time.monotonic() - started < seconds:
        result = sweep_topic(topic)
        now = time.monotonic() - started
        samples.append({"t": round(now, 2), "deleted": result.deleted, "bytes": table_size_bytes(topic)})
        if backlog_cleared_at is None and samples[-1]["deleted"] < 50_000 and len(samples) > 1:
            backlog_cleared_at = now
        time.sleep(max(interval - (time.monotonic() - started - now), 0))
    with open(out, "w") as file:
        json.dump({"samples": samples, "backlog_cleared_at": backlog_cleared_at}, file)


if __name__ == "__main__":
    main()
