"""Start-up checks shared by every process type.

``manage.py`` commands (``grpcserver``, ``migrate``, ``mint_token`` ...) run Django's system checks
on their own; daphne and Celery do not, so ``eventrelay.asgi`` and ``eventrelay.celery`` call
:func:`raise_on_configuration_errors` before they serve anything.
"""

from collections.abc import Sequence

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.core.management.base import SystemCheckError


@checks.register("eventrelay")
def check_jwt_secret(app_configs: Sequence[AppConfig] | None = None, **_kwargs: object) -> list[checks.CheckMessage]:
    secret = settings.ER_JWT_SECRET
    minimum = settings.ER_JWT_SECRET_MIN_LENGTH
    if not secret:
        return [
            checks.Error(
                "ER_JWT_SECRET is not set: EventRelay signs and verifies every API token with it.",
                hint=f"Set ER_JWT_SECRET to a random string of at least {minimum} characters "
                "(`make run` writes one into .env).",
                id="eventrelay.E001",
            )
        ]
    if len(secret) < minimum:
        return [
            checks.Error(
                f"ER_JWT_SECRET is too short ({len(secret)} characters): at least {minimum} are required "
                "so that HS256 tokens cannot be brute-forced.",
                hint="Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'",
                id="eventrelay.E002",
            )
        ]
    return []


def raise_on_configuration_errors() -> None:
    """Run EventRelay's checks and raise ``SystemCheckError`` (refusing to start) on any error."""
    errors = [message for message in checks.run_checks(tags=["eventrelay"]) if message.is_serious()]
    if errors:
        lines = "\n".join(f"{error.msg} HINT: {error.hint}" for error in errors)
        raise SystemCheckError(f"EventRelay refuses to start:\n{lines}")
