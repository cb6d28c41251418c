"""The sandbox contains hostile programs and reports each one; these run real processes,
a second or two each. Where bubblewrap is missing they run in the weak sandbox (the boundary's own tests
skip); tests/eval/test_hostile.py holds the programs written to get past the guard."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from labkit.eval import sandbox
from labkit.eval.sandbox import Boundary, Sandbox, SandboxUnavailable, boundary, run_python

HAVE_BOUNDARY = boundary().available
needs_boundary = pytest.mark.skipif(not HAVE_BOUNDARY, reason=f"no OS sandbox here: {boundary().reason}")


@pytest.fixture(autouse=True)
def _weak_where_no_boundary(monkeypatch):
    """Without bwrap the guard and OS-layer tests still run, in the weak sandbox they opt into."""
    if not HAVE_BOUNDARY:
        session = Sandbox._session
        def weak(self, *args, **kwargs):
            return session(dataclasses.replace(self, allow_weak=True), *args, **kwargs)

        monkeypatch.setattr(Sandbox, "_session", weak)


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
    assert listing == "['notes.txt']"
    if HAVE_BOUNDARY:  # a tmpfs of the sandbox's own: nothing of it exists outside
        assert scratch == "/scratch" and "scratch-tmpfs" in r.layers
    else:
        assert not os.path.exists(scratch)


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


# ---- the OS boundary ---------------------------------------------------------------------------------------

@needs_boundary
def test_the_boundary_layers_are_recorded_and_the_program_sees_only_itself():
    r = run_python("import os\nprint(os.getpid(), os.getuid(), sorted(os.listdir('/')), "
                   "sorted(e for e in os.listdir('/proc') if e.isdigit()), dict(os.environ)['HOME'])")
    assert r.ok, r.stderr
    pid, uid, *_ = r.stdout.split()
    assert (pid, uid) == ("1", "65534")  # PID 1 of its own namespace, nobody inside
    assert "'1']" in r.stdout and "'tmp'" not in r.stdout and "'etc'" not in r.stdout
    for layer in ("bwrap", "pid-ns", "mount-ns", "user-ns", "no-network", "rlimits", "session", "guard"):
        assert layer in r.layers, (layer, r.layers)
    assert "pids-cgroup" in r.layers or "nproc" in r.layers or os.geteuid() != 0
    assert "weak" not in r.layers


@needs_boundary
def test_rlimits_apply_inside_the_boundary():
    r = run_python("print(open('/proc/self/limits').read())", timeout=3, memory_mb=256, max_open_files=40)
    limits = {" ".join(line.split()[:-3]): line.split()[-3] for line in r.stdout.splitlines()[1:] if line}
    assert limits["Max cpu time"] == "3" and limits["Max address space"] == str(256 << 20)
    assert limits["Max open files"] == "40" and limits["Max core file size"] == "0"


def test_without_a_boundary_labkit_refuses_unless_told_otherwise(monkeypatch):
    monkeypatch.setattr(sandbox, "boundary", lambda: Boundary(False, reason="bwrap is not installed"))
    monkeypatch.setattr(Sandbox, "_session", _REAL_SESSION)
    with pytest.raises(SandboxUnavailable, match="bwrap is not installed.*apt-get install bubblewrap.*"
                                                 "allow_weak=True"):
        run_python("print(1)")
    r = run_python("print(1)", allow_weak=True)
    assert r.ok and r.layers[0] == "weak" and "bwrap" not in r.layers


def test_check_passes_only_on_the_tests_own_verdict():
    tests = "def f(x):\n    pass\n\ndef check(candidate):\n" \
            "    assert candidate([1, 2.5, 'a', b'b', (None, True), " \
            "{3: frozenset({1j})}]) == [1, 2.5, 'a', b'b', (None, True), {3: frozenset({1j})}]\n" \
            "    assert candidate(x=-2 ** 100) == -2 ** 100\n"
    assert Sandbox().check("def f(x):\n    return x\n", tests, "f").ok
    wrong = Sandbox().check("def f(x):\n    return [x]\n", tests, "f")
    assert wrong.status == "failed" and "AssertionError" in wrong.stderr
    raised = Sandbox().check("def f(x):\n    raise KeyError('no')\n", tests, "f")
    assert raised.status == "failed" and "KeyError: " in raised.stderr and "no" in raised.stderr
    exited = Sandbox().check("import sys\ndef f(x):\n    sys.exit(0)\n", tests, "f")
    assert exited.status == "failed" and exited.returncode == 0 and "stopped answering" in exited.stderr


def test_the_card_shows_the_sandbox_layers():
    from labkit.eval.card import EvalCard

    card = EvalCard("m", [], [], {}, {"info": {"humaneval": {"sandbox_layers": ["bwrap", "pid-ns"]}}})
    assert "humaneval sandbox layers: bwrap, pid-ns" in card._repr_html_()
    card.meta["info"]["humaneval"]["sandbox_layers"] = ["weak", "rlimits"]
    assert "WEAK" in card._repr_html_()


_REAL_SESSION = Sandbox._session
