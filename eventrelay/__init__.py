"""EventRelay project package: settings, routing, the Celery app and the cross-cutting pieces
every transport shares (token authentication, errors)."""

from eventrelay.celery import app as celery_app

__all__ = ("celery_app",)
