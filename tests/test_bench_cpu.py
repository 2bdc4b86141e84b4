"""The bench's CPU accounting (``bench.common.cpu_seconds``), which its notes use to say where the time goes."""

import os
import subprocess
import sys
import time

from bench.common import cpu_seconds, machine_cpu_seconds


def spin(cpu: float) -> None:
    start = time.process_time()
    while time.process_time() - start < cpu:
        pass


def test_it_reads_what_this_process_spent_from_proc():
    before = cpu_seconds(os.getpid())
    spin(0.3)
    assert 0.25 <= cpu_seconds(os.getpid()) - before < 5


def test_it_tells_a_busy_process_from_an_idle_one():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.5)  # both started
        busy_before, idle_before = cpu_seconds(busy.pid), cpu_seconds(idle.pid)
        time.sleep(0.5)
        assert cpu_seconds(busy.pid) - busy_before > 0.1
        assert cpu_seconds(idle.pid) - idle_before < 0.05
    finally:
        busy.kill()
        idle.kill()
        busy.wait()
        idle.wait()


def test_the_machine_counts_a_busy_process_as_busy_cores():
    before = machine_cpu_seconds()
    spin(0.3)
    after = machine_cpu_seconds()
    assert after["busy"] - before["busy"] >= 0.25
    assert after["steal"] >= before["steal"] >= 0
