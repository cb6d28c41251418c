"""The sandbox contains hostile programs and reports each one; these run real processes,
a second or two each."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from labkit.eval.sandbox import Sandbox, run_python


def test_a_correct_program_passes_and_its_output_is_captured():
    r = run_python("import math, re, collections, itertools, heapq, hashlib\nprint(math.factorial(5))")
    assert r.status == "passed" and r.ok and r.stdout.strip() == "120" and r.returncode == 0
    assert "session" in r.layers and "rlimits" in r.layers


def test_a_failing_assert_is_failed_not_blocked():
    r = run_python("assert 1 + 1 == 3, 'arithmetic'")
    assert r.status == "failed" and "AssertionError: arithmetic" in r.stderr and not r.violations


@pytest.mark.parametrize("guard", [True, False])
def test_infinite_loop_times_out(guard):
    r = run_python("while True: pass", timeout=1.0, guard=guard)
    assert r.status == "timeout" and 0.9 < r.seconds < 3


@pytest.mark.parametrize("code", ["x = bytearray(10**11)", "x = []\nwhile True: x.append(' ' * 10**6)"])
@pytest.mark.parametrize("guard", [True, False])
def test_memory_bombs_hit_the_memory_limit(code, guard):
    r = run_python(code, memory_mb=256, timeout=5, guard=guard)
    assert r.status == "memory", r.stderr


def _running_in_group(pgid: int) -> list[int]:
    """Processes of a process group that are still running (killed ones may linger as zombies until
    reaped)."""
    alive = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive.append(int(entry))
    return alive


def test_fork_bomb_is_blocked_by_the_guard():
    r = run_python("import os\nwhile True:\n    os.fork()", timeout=2)
    assert r.status == "blocked" and r.violations[0] == "os.fork"


def test_fork_bomb_without_the_guard_is_contained_by_the_os_layer():
    # The OS layer alone: a process cap (pids cgroup as root, RLIMIT_NPROC otherwise) and the group kill.
    r = run_python("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                   timeout=1.5, guard=False, max_procs=16)
    assert r.status in ("timeout", "failed")
    assert "pids-cgroup" in r.layers or "nproc" in r.layers, r.layers
    assert _running_in_group(r.pid) == []  # nothing of it is left running


def test_subprocess_and_shell_are_blocked_even_when_the_program_swallows_the_error():
    r = run_python("import os, subprocess\nfor f in (lambda: os.system('true'), lambda: "
                   "subprocess.run(['true'])):\n    try:\n        f()\n    except Exception:\n        "
                   "pass\nprint('carried on')")
    assert r.status == "blocked" and r.stdout.strip() == "carried on"
    assert r.violations == ["os.system", "subprocess.Popen"]


def test_writing_outside_scratch_is_blocked_and_nothing_is_left(tmp_path):
    target = tmp_path / "escaped.txt"
    r = run_python(f"open({str(target)!r}, 'w').write('x')")
    assert r.status == "blocked" and "outside the scratch dir" in r.violations[0]
    assert not target.exists()
    r = run_python(f"import os\nos.remove({str(tmp_path)!r})")
    assert r.status == "blocked" and tmp_path.exists()


def test_scratch_is_writable_and_deleted_afterwards():
    r = run_python("import os\nopen('notes.txt', 'w').write('hi')\n"
                   "print(os.getcwd())\nprint(os.listdir('.'))")
    assert r.status == "passed", r.stderr
    scratch, listing = r.stdout.splitlines()
    assert listing == "['notes.txt']" and not os.path.exists(scratch)


def test_sockets_are_blocked():
    for code in ("import socket; socket.socket()", "import socket; socket.getaddrinfo('example.com', 80)",
                 "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9/')"):
        r = run_python(code)
        assert r.status == "blocked" and r.violations[0].startswith("socket."), (code, r)


def test_without_the_guard_the_network_namespace_stops_a_local_connection():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted = []
    server.settimeout(3)
    thread = threading.Thread(target=lambda: accepted.append(_accept(server)), daemon=True)
    thread.start()
    r = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)", guard=False)
    thread.join()
    server.close()
    assert "no-network" in r.layers
    assert r.status == "failed" and accepted == [False]


def _accept(server) -> bool:
    try:
        server.accept()[0].close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("code", ["import os; os.kill(os.getppid(), 9)", "import os; os.kill(-1, 9)",
                                  "import os; os.killpg(os.getpgid(os.getppid()), 9)",
                                  "import os, signal; os.kill(0, signal.SIGTERM)"])
def test_signals_to_other_processes_are_blocked(code):
    # Run through a middle process: if containment failed, the middle one dies, not pytest.
    driver = textwrap.dedent(f"""
        from labkit.eval.sandbox import run_python
        r = run_python({code!r})
        print(r.status, *r.violations)
    """)
    out = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "blocked" and out.stdout.split()[1] in ("os.kill", "os.killpg")


def test_ctypes_is_blocked_so_the_hook_cannot_be_bypassed():
    r = run_python("import ctypes\nctypes.CDLL(None).fork()")
    assert r.status == "blocked" and r.violations[0].startswith("ctypes.")


def test_sandbox_object_carries_limits():
    box = Sandbox(timeout=1.0, memory_mb=128)
    assert box.run("print(1)").ok and box.run("while True: pass").status == "timeout"
