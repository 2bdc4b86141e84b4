"""A test run leaves the checkout as it found it: the browser tests' screenshots go to the ignored .test-logs/
folder; only ``make screenshots`` (``REFRESH_SCREENSHOTS=1``) writes the committed ones in docs/screenshots/."""

import re
import subprocess
from pathlib import Path

import pytest

from harness.processes import LOG_DIR, REPO
from tests import browser


class FakePage:
    """Records where ``screenshot`` asked the page to save itself (no browser needed)."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def screenshot(self, *, path: str, **options: object) -> None:
        self.paths.append(Path(path))


def is_under(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def test_a_test_run_writes_its_screenshots_to_the_ignored_test_logs_not_to_docs(monkeypatch):
    monkeypatch.delenv(browser.REFRESH_SCREENSHOTS, raising=False)
    page = FakePage()

    path = browser.screenshot(page, "topic-list")

    assert page.paths == [path]
    assert is_under(path, LOG_DIR), path
    assert not is_under(path, REPO / "docs"), path
    ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO).returncode == 0
    assert ignored, f"{path} is not ignored by git"


@pytest.mark.parametrize("value", ["", "0"])
def test_only_a_refresh_asked_for_writes_the_committed_screenshots(monkeypatch, value):
    monkeypatch.setenv(browser.REFRESH_SCREENSHOTS, value)

    assert not is_under(browser.screenshots_dir(), REPO / "docs")

    monkeypatch.setenv(browser.REFRESH_SCREENSHOTS, "1")
    assert browser.screenshots_dir() == REPO / "docs" / "screenshots"


def test_make_screenshots_refreshes_every_committed_screenshot_and_the_readme_shows_them():
    makefile = (REPO / "Makefile").read_text()
    readme = (REPO / "README.md").read_text()
    committed = {path.stem for path in (REPO / "docs" / "screenshots").glob("*.png")}
    taken = set()
    for test_file in (REPO / "tests").glob("test_*.py"):
        taken |= set(re.findall(r'\bscreenshot\(\s*page,\s*"([^"]+)"', test_file.read_text()))

    assert re.search(r"^screenshots:", makefile, re.MULTILINE)
    assert f"{browser.REFRESH_SCREENSHOTS}=1" in makefile
    assert "`make screenshots`" in readme
    assert taken == committed
    assert all(f"docs/screenshots/{name}.png" in readme for name in committed)
