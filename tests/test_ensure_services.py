"""tools/ensure_services.sh (`make services`) on a machine without PostgreSQL or Redis, as a user who cannot install:
it must say exactly what to install and fail, not hang or start something else.

The path where it installs them with apt as root is checked for real by `make test-fresh-machine`
(tools/fresh_machine.sh: a fresh Debian chroot in a network namespace of its own).
"""

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.processes import REPO, free_port

# What the script needs from the machine besides the servers' own commands.
BASIC_TOOLS = ["bash", "id", "seq", "sleep", "grep", "cut", "head", "od", "tr", "ls", "sort", "tail", "cat", "dirname"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to run as nobody")


@pytest.fixture
def bare_machine() -> Iterator[tuple[Path, Path]]:
    """A copy of the script and a PATH holding only basic tools: no psql, pg_ctlcluster, redis-server or apt-get.
    Outside pytest's own temporary directory, which only root may enter."""
    tmp_path = Path(tempfile.mkdtemp(prefix="er-services-"))
    (tmp_path / "tools").mkdir()
    shutil.copy(REPO / "tools" / "ensure_services.sh", tmp_path / "tools")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in BASIC_TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    tmp_path.chmod(0o755)
    yield tmp_path, bin_dir
    shutil.rmtree(tmp_path)


def run_as_nobody(root: Path, bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("setpriv") or "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(bin_dir / "bash"),
         str(root / "tools" / "ensure_services.sh")],
        env={"PATH": str(bin_dir), "HOME": str(root), **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_without_postgresql_it_names_the_package_to_install_and_fails(bare_machine):
    root, bin_dir = bare_machine
    result = run_as_nobody(root, bin_dir, DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/eventrelay")
    assert result.returncode == 1, result
    assert "PostgreSQL is not installed" in result.stdout
    assert "apt-get install postgresql" in result.stdout
    assert "DATABASE_URL" in result.stdout


def test_without_redis_it_names_the_package_to_install_and_fails(bare_machine):
    root, bin_dir = bare_machine
    # PostgreSQL answers (the machine's own, on its port); Redis is looked for on a port where nothing listens.
    result = run_as_nobody(
        root, bin_dir,
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/eventrelay",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )  # fmt: skip
    assert result.returncode == 1, result
    assert "Redis is not installed" in result.stdout
    assert "apt-get install redis-server" in result.stdout


def test_servers_on_another_host_are_left_alone(bare_machine):
    root, bin_dir = bare_machine
    result = run_as_nobody(
        root, bin_dir,
        DATABASE_URL="postgres://app@db.internal:5432/eventrelay",
        REDIS_URL="redis://cache.internal:6379/0",
    )  # fmt: skip
    assert result.returncode == 0, result
    assert "not managing PostgreSQL" in result.stdout
    assert "not managing Redis" in result.stdout
