"""The Celery application (``celery -A eventrelay worker`` / ``beat``).

Workers refuse to start with a bad configuration, exactly like the web and gRPC processes: the
same system checks run when the worker or beat initialises.
"""

import os
import sys
from typing import Any

from celery import Celery, signals

from eventrelay import logs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventrelay.settings")

# The message header a task's request id travels in (eventrelay.logs).
REQUEST_ID_HEADER = "request_id"

app = Celery("eventrelay")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
@signals.beat_init.connect
def refuse_to_start_when_misconfigured(**_kwargs: object) -> None:
    from django.core.management.base import SystemCheckError

    from eventrelay.checks import raise_on_configuration_errors

    try:
        raise_on_configuration_errors()
    except SystemCheckError as error:
        # Celery logs and swallows any Exception a signal handler raises; SystemExit stops the process.
        sys.stderr.write(f"{error}\n")
        raise SystemExit(1) from None


@signals.worker_init.connect
def serve_worker_metrics(**_kwargs: object) -> None:
    """The worker's /metrics (eventrelay.metrics), from the main process: a prefork pool's children add theirs
    through PROMETHEUS_MULTIPROC_DIR."""
    from django.conf import settings

    from eventrelay import metrics

    metrics.start_server(settings.ER_WORKER_METRICS_PORT, settings.ER_BIND_HOST, "worker", "ER_WORKER_METRICS_PORT")


@signals.beat_init.connect
def serve_beat_metrics(**_kwargs: object) -> None:
    from django.conf import settings

    from eventrelay import metrics

    metrics.start_server(settings.ER_BEAT_METRICS_PORT, settings.ER_BIND_HOST, "beat", "ER_BEAT_METRICS_PORT")


@signals.worker_process_shutdown.connect
def forget_child_gauges(pid: int | None = None, **_kwargs: object) -> None:
    """A prefork child that exits takes its live gauges with it (multiprocess mode only)."""
    if pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


# --- Logs: the worker and beat log as the other processes do, and a task carries its request's id ----------------


@signals.setup_logging.connect
def log_as_the_other_processes_do(loglevel: int | str | None = None, **_kwargs: object) -> None:
    """Celery would replace the root logger's handlers with its own format; instead the worker and beat log through
    settings.LOGGING (``ER_LOG_FORMAT``, ``ER_LOG_LEVEL``, request ids) like the web and gRPC processes. Celery's own
    lines ("ready.", a task received and done) keep the level its ``--loglevel`` asks for, as they always had."""
    import logging

    from django.conf import settings
    from django.utils.log import configure_logging

    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
    if loglevel is not None:
        logging.getLogger("celery").setLevel(loglevel)


@signals.celeryd_init.connect
def log_from_the_start(instance: Any = None, **_kwargs: object) -> None:
    """The worker's checks at start-up warn before Celery sets up logging: set it up now. With JSON logs, no
    start-up banner either (Celery prints it, unformatted, to stdout; ``celery inspect`` tells as much)."""
    from django.conf import settings

    log_as_the_other_processes_do()
    if instance is not None and settings.ER_LOG_FORMAT == "json":
        instance.quiet = True


@signals.before_task_publish.connect
def send_the_request_id_along(headers: dict[str, object] | None = None, **_kwargs: object) -> None:
    """A task queued while serving a request (or running a task that one queued) carries that request's id."""
    rid = logs.current_request_id()
    if rid and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, rid)


@signals.task_prerun.connect
def log_the_task_under_its_request_id(task: Any = None, **_kwargs: object) -> None:
    # A worker thread runs one task at a time: the id holds for what this task logs, Celery's own lines included.
    logs.request_id.set(str(getattr(task.request, REQUEST_ID_HEADER, None) or "") if task is not None else "")


@signals.task_postrun.connect
def forget_the_request_id(**_kwargs: object) -> None:
    logs.request_id.set("")
