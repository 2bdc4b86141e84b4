"""Logging filters for eventrelay/settings.py ``LOGGING``."""

import logging


class ClientErrorsAtInfo(logging.Filter):
    """A client's mistake (a 4xx) is logged at INFO, once, without a traceback.

    Django reports every 4xx at WARNING (``django.request``: "Not Found: /api/v1/..."; ``django.security.csrf``),
    and a few at ERROR with a traceback (``django.security.DisallowedHost`` for a bad Host header): a client's
    mistake read like a problem of ours. On the console handler, so it sees the records of every logger, this
    lowers any record carrying a 4xx ``status_code`` to INFO and drops its traceback; WARNING and above then mean
    something is wrong on our side. 5xx stay at ERROR with their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500 and record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            record.exc_info, record.exc_text = None, None
            # The logger let it through at its old level: decide again, at the new one.
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True
