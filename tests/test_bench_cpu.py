"""The bench's CPU accounting (``bench.common.cpu_seconds``), which its notes use to say where the time goes."""

import os
import subprocess
import sys
import time

from bench.common import cpu_seconds, machine_cpu_seconds
from bench.scenarios.publish import budget_note, cores_at_rate


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


def test_the_cores_a_rate_needs_scale_with_the_cpu_each_call_used():
    # 5,000 calls/s on 1.0 core of server and 0.5 of load generator: 200 and 100 µs a call.
    measured = {"events_per_s": 5000.0, "cpu_cores": {"grpc server": 1.0, "load generator": 0.5}}
    needed = cores_at_rate(measured, 9000.0)
    assert needed == {"grpc server": 1.8, "load generator": 0.9}
    assert budget_note(needed, 9000.0) == (
        f"at 9,000/s it would need grpc server 1.80 + load generator 0.90 = 2.70 of this machine's {os.cpu_count()} cores"
    )
