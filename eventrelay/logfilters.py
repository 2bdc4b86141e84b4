"""Logging filters for eventrelay/settings.py ``LOGGING``."""

import logging


class ClientErrorsAtDebug(logging.Filter):
    """Django's ``django.request`` logger reports every 4xx at WARNING ("Not Found: /api/v1/..."): a client's
    mistake read like a problem of ours. This lowers them to DEBUG, so WARNING and above mean something is
    wrong on our side; 5xx stay at ERROR, with their traceback. At INFO the web process's access log already
    has one line per request with its status, so a client error is not lost.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500 and record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
            # The logger let it through at WARNING: decide again, at its new level.
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True
