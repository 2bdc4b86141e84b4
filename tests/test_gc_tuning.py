"""The server processes' garbage-collector settings (eventrelay/gc_tuning.py)."""

import json
import os
import subprocess
import sys

import pytest

from harness.processes import COMMON_ENV, REPO

PROBE = (
    "import django, gc, json; django.setup(); "
    "from eventrelay.gc_tuning import tune_gc_for_serving; "
    "before = gc.get_freeze_count(); tune_gc_for_serving(rarer_full_collections=True); "
    "print(json.dumps({'threshold': gc.get_threshold(), 'frozen_before': before, 'frozen': gc.get_freeze_count()}))"
)


@pytest.mark.parametrize("full_every, expected", [(None, 100), ("10", 10), ("250", 250)])
def test_the_web_process_freezes_startup_objects_and_collects_fully_less_often(full_every, expected):
    env = {**os.environ, **COMMON_ENV, "DJANGO_SETTINGS_MODULE": "eventrelay.settings"}
    env.pop("ER_GC_FULL_EVERY", None)
    if full_every is not None:
        env["ER_GC_FULL_EVERY"] = full_every

    output = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout

    result = json.loads(output)
    young, middle, _ = __import__("gc").get_threshold()
    assert result["threshold"] == [young, middle, expected]
    # Everything imported at startup is frozen: never visited by a collection again.
    assert result["frozen_before"] == 0
    assert result["frozen"] > 10_000


def test_the_grpc_process_only_freezes_startup_objects():
    env = {**os.environ, **COMMON_ENV, "DJANGO_SETTINGS_MODULE": "eventrelay.settings", "ER_GC_FULL_EVERY": "250"}
    probe = PROBE.replace("rarer_full_collections=True", "rarer_full_collections=False")

    output = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )

    result = json.loads(output.stdout)
    assert result["threshold"] == list(__import__("gc").get_threshold())
    assert result["frozen"] > 10_000
