"""Every process refuses to start without a usable ER_JWT_SECRET (the README's "Processes" and "Configuration").

Each test starts the real process from the repository, the way the Procfile does. An explicit value in
the environment wins over ``.env`` (settings load it with ``override=False``), so ``ER_JWT_SECRET=""``
really is "not set" whatever the developer's ``.env`` holds.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.processes import free_port

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
PYTHON = str(BIN / "python") if (BIN / "python").exists() else sys.executable

BAD_SECRETS = [
    pytest.param("", "ER_JWT_SECRET is not set", id="empty"),
    pytest.param("x" * 31, "ER_JWT_SECRET is too short (31 characters)", id="31-chars"),
]


def environment(secret: str) -> dict[str, str]:
    return {**os.environ, "ER_JWT_SECRET": secret, "PYTHONUNBUFFERED": "1"}


def start(command: list[str], secret: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``command`` until it exits; if it is still running at ``timeout``, kill it and fail the test."""
    try:
        return subprocess.run(
            command, cwd=REPO, env=environment(secret), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as running:  # subprocess.run has already killed it
        still_running = running
    output = "\n".join(
        part.decode(errors="replace") if isinstance(part, bytes) else part
        for part in (still_running.stdout, still_running.stderr)
        if part
    )
    name = Path(command[0]).name
    pytest.fail(f"{name} was still running after {timeout:.0f}s instead of refusing to start:\n{output[-3000:]}")


@pytest.mark.parametrize(("secret", "message"), BAD_SECRETS)
def test_manage_py_refuses_to_start_without_a_usable_secret(secret: str, message: str) -> None:
    finished = start([PYTHON, "manage.py", "check"], secret, timeout=60)

    assert finished.returncode != 0
    assert message in finished.stderr


@pytest.mark.parametrize(("secret", "message"), BAD_SECRETS)
def test_mint_token_refuses_to_sign_with_an_unusable_secret(secret: str, message: str) -> None:
    finished = start([PYTHON, "manage.py", "mint_token", "--topics", "users"], secret, timeout=60)

    assert finished.returncode != 0
    assert message in finished.stderr
    assert finished.stdout.strip() == "", "no token may be printed"


def test_manage_py_starts_with_a_48_char_secret() -> None:
    finished = start([PYTHON, "manage.py", "check"], "s" * 48, timeout=60)

    assert finished.returncode == 0, finished.stderr
    assert "ER_JWT_SECRET" not in finished.stdout + finished.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(("secret", "message"), BAD_SECRETS)
def test_daphne_refuses_to_start_without_a_usable_secret(secret: str, message: str) -> None:
    command = [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(free_port()), "eventrelay.asgi:application"]

    finished = start(command, secret, timeout=30)

    assert finished.returncode != 0
    assert message in finished.stdout + finished.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(("secret", "message"), BAD_SECRETS)
def test_grpcserver_refuses_to_start_without_a_usable_secret(secret: str, message: str) -> None:
    command = [PYTHON, "manage.py", "grpcserver", "--host", "127.0.0.1", "--port", str(free_port())]

    finished = start(command, secret, timeout=30)

    assert finished.returncode != 0
    assert message in finished.stdout + finished.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(("secret", "message"), BAD_SECRETS)
def test_the_celery_worker_refuses_to_start_without_a_usable_secret(secret: str, message: str) -> None:
    # A queue nobody publishes to: should the worker wrongly start, it must not take real work.
    command = [
        str(BIN / "celery"),
        "-A",
        "eventrelay",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "-Q",
        "er_startup_check_nowhere",
    ]

    finished = start(command, secret, timeout=60)

    assert finished.returncode != 0
    assert message in finished.stdout + finished.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(("secret", "message"), BAD_SECRETS)
def test_celery_beat_refuses_to_start_without_a_usable_secret(secret: str, message: str, tmp_path: Path) -> None:
    # The schedule file goes to tmp_path: beat would otherwise write it into the repository.
    command = [str(BIN / "celery"), "-A", "eventrelay", "beat", "--schedule", str(tmp_path / "schedule")]

    finished = start(command, secret, timeout=30)

    assert finished.returncode != 0
    assert message in finished.stdout + finished.stderr
