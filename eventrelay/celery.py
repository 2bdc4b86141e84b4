"""The Celery application (``celery -A eventrelay worker`` / ``beat``).

Workers refuse to start with a bad configuration, exactly like the web and gRPC processes: the
same system checks run when the worker or beat initialises.
"""

import os
import sys

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventrelay.settings")

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
