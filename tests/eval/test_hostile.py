"""Hostile programs against the OS boundary and the grader: each is graded as a wrong HumanEval-style answer,
with the Python guard off (as if the program had found its way round the audit hook), and must leave the
machine as it found it.

After every program: a decoy `sleep` process is alive, a canary file outside the scratch dir is unchanged,
the secret in the parent's environment is absent from the program's output, no process of the sandbox is
left running, and the grade is not "passed".
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import threading

import pytest

from labkit.eval.sandbox import Sandbox, boundary

if not boundary().available:
    pytest.skip(f"no OS sandbox here: {boundary().reason}", allow_module_level=True)

# The problem every hostile program answers (wrongly): the tests run in their own sandbox.
TESTS = "def add(a, b):\n    pass\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n" \
        "    assert candidate(-1, 1) == 0\n    assert candidate(10, 5) == 15\n"
WRONG = "def add(a, b):\n    return 0\n"

SIGNALS = {
    "kill-decoy": "import os\nos.kill(DECOY_PID, 9)\n" + WRONG,
    "kill-parent": "import os\nos.kill(os.getppid(), 9)\nos.kill(1, 9)\n" + WRONG,
    "probe-host-pid": "import os\ntry:\n    os.kill(HOST_PID, 0)\n    print('VISIBLE')\nexcept OSError:\n"
                      "    pass\n" + WRONG,
    "kill-all": "import os\nos.kill(-1, 9)\n" + WRONG,
    "killpg-decoy": "import os\nos.killpg(DECOY_PID, 9)\n" + WRONG,
    "killpg-own": "import os\ntry:\n    os.killpg(os.getpgid(os.getppid()), 9)\nexcept OSError:\n    pass\n"
                  + WRONG,
    "pidfd-decoy": "import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(DECOY_PID), 9)\n" + WRONG,
    "pidfd-host": "import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(HOST_PID), 0)\n"
                  "print('VISIBLE')\n"
                  + WRONG,
    "kill-in-body": "def add(a, b):\n    import os\n    os.kill(DECOY_PID, 9)\n    return 0\n",
}
WRITES = {
    "open-write": "open('CANARY_PATH', 'w').write('pwned')\n" + WRONG,
    "unlink": "import os\nos.unlink('CANARY_PATH')\n" + WRONG,
    "dir-fd-unlink": "import os\nfd = os.open('CANARY_DIR', os.O_RDONLY)\n"
                     "os.unlink('canary.txt', dir_fd=fd)\n"
                     + WRONG,
    "dir-fd-open": "import os\nfd = os.open('CANARY_DIR', os.O_RDONLY)\n"
                   "os.write(os.open('canary.txt', os.O_WRONLY | os.O_TRUNC, dir_fd=fd), b'x')\n" + WRONG,
    "rename": "import os\nos.rename('CANARY_PATH', 'CANARY_PATH.moved')\n" + WRONG,
    "rmdir": "import os\nos.rmdir('CANARY_DIR')\n" + WRONG,
    "rmtree": "import shutil\nshutil.rmtree('CANARY_DIR')\n" + WRONG,
    "mknod": "import os, stat\nos.mknod('CANARY_DIR/node', stat.S_IFREG | 0o644)\n" + WRONG,
    "symlink": "import os\nos.symlink('CANARY_PATH', 'link')\nopen('link', 'w').write('pwned')\n" + WRONG,
    "proc-self-root": "open('/proc/self/root/CANARY_PATH', 'w').write('pwned')\n" + WRONG,
    "proc-pid-cwd": "open('/proc/1/cwd/../../CANARY_PATH', 'w').write('pwned')\n" + WRONG,
    "interpreter": "import os, sys\nopen(os.path.dirname(sys.executable) + '/evil', 'w')\n" + WRONG,
    "home": "open('/root/labkit-evil', 'w').write('x')\n" + WRONG,
}
READS = {
    "parent-environ": "print(open('/proc/HOST_PID/environ').read())\n" + WRONG,
    "init-environ": "print(open('/proc/1/environ').read())\n" + WRONG,
    "any-environ": "import os\nfor p in os.listdir('/proc'):\n    try:\n"
                   "        print(open(f'/proc/{p}/environ').read())\n    except OSError:\n        pass\n"
                   "print(dict(os.environ))\n" + WRONG,
    "bashrc": "import os\nprint('READ:', open(os.path.expanduser('~root/.bashrc')).read())\n" + WRONG,
    "home-dirs": "import os, sys\nfor top in ('/root', '/home'):\n    for d, _, files in os.walk(top):\n"
                 "        if files and not d.startswith(sys.base_prefix):\n"
                 "            print('READ:', d, files)\n" + WRONG,
    "shadow": "print('READ:', open('/etc/shadow').read())\n" + WRONG,
    "canary": "print('READ:', open('CANARY_PATH').read())\n" + WRONG,
    "host-tmp": "import os\nprint('READ:', os.listdir('/tmp'))\n" + WRONG,
}
LIMITS = {
    "busy-loop": "while True:\n    pass\n",
    "sleep": "import time\ntime.sleep(60)\n",
    "fork-and-leave": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n" + WRONG,
    "memory-bomb": "x = []\nwhile True:\n    x.append(' ' * 10**6)\n",
    "thread-bomb": "import threading, time\nwhile True:\n"
                   "    threading.Thread(target=time.sleep, args=(60,)).start()\n",
    "fork-bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "disk-fill": "import itertools\nfor i in itertools.count():\n    try:\n"
                 "        open(f'f{i}', 'wb').write(b'x' * 10**6)\n    except OSError as e:\n"
                 "        print('FULL', e.strerror)\n        break\n" + WRONG,
    "hang-in-body": "def add(a, b):\n    while True:\n        pass\n",
}
NETWORK = {
    "tcp-loopback": "import socket\nsocket.create_connection(('127.0.0.1', SERVER_PORT), timeout=1)\n"
                    "print('CONNECTED')\n" + WRONG,
    "tcp-in-body": "def add(a, b):\n    import socket\n"
                   "    socket.create_connection(('127.0.0.1', SERVER_PORT), timeout=1)\n    return a + b\n",
}
EARLY = {
    "os-exit-body": "def add(a, b):\n    import os\n    os._exit(0)\n",
    "os-exit-module": WRONG + "import os\nos._exit(0)\n",
    "sys-exit-module": WRONG + "import sys\nsys.exit(0)\n",
    "systemexit-module": WRONG + "raise SystemExit\n",
    "systemexit-body": "def add(a, b):\n    raise SystemExit(0)\n",
    "atexit": "import atexit, os\natexit.register(lambda: os._exit(0))\n" + WRONG,
    "settrace": "import sys\nsys.settrace(lambda *a: None)\n" + WRONG,
    "setprofile": "import sys\nsys.setprofile(lambda *a: None)\n" + WRONG,
    "patch-builtins": "import builtins\nbuiltins.AssertionError = type('Quiet', (BaseException,), {})\n"
                      "builtins.__import__ = None\n" + WRONG,
    "eq-always": "class Yes:\n    def __eq__(self, other):\n        return True\n"
                 "def add(a, b):\n    return Yes()\n",
    "int-subclass": "class Yes(int):\n    def __eq__(self, other):\n        return True\n"
                    "def add(a, b):\n    return Yes(0)\n",
    "str-subclass-in-list": "class Yes(str):\n    __eq__ = lambda s, o: True\n"
                            "def add(a, b):\n    return [Yes()]\n",
    "close-fds": "import os\nfor fd in range(3, 256):\n    try:\n        os.close(fd)\n    except OSError:\n"
                 "        pass\n" + WRONG,
    "write-fds": "import os\nfor fd in range(1, 256):\n    try:\n        os.write(fd, b'0' * 32 + b'ok\\n')\n"
                 "    except OSError:\n        pass\n" + WRONG,
    "fake-marker": "print('passed')\nprint('ok')\n" + WRONG,
    "excepthook": "import threading, os\nthreading.excepthook = lambda args: os._exit(0)\n"
                  "threading.Thread(target=lambda: 1 / 0).start()\n" + WRONG,
    "right-then-exit": "calls = []\ndef add(a, b):\n    calls.append(1)\n    if len(calls) > 1:\n"
                       "        import os\n        os._exit(0)\n    return a + b\n",
    "forged-reply": "import os\ndef add(a, b):\n    for fd in range(3, 64):\n        try:\n"
                    "            os.write(fd, b'4\\noi5;')\n        except OSError:\n            pass\n"
                    "    return 0\n",
}
CASES = [(kind, name, code) for kind, table in (("signal", SIGNALS), ("write", WRITES), ("read", READS),
                                                 ("limit", LIMITS), ("network", NETWORK), ("early", EARLY))
         for name, code in table.items()]
SLOW = {"busy-loop", "sleep", "hang-in-body", "thread-bomb", "fork-bomb"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A decoy process, a canary file outside any scratch dir, a secret in the environment, a TCP server."""
    decoy = subprocess.Popen(["sleep", "300"])
    root = tmp_path_factory.mktemp("outside")
    canary = root / "canary.txt"
    text = f"canary {secrets.token_hex(8)}"
    canary.write_text(text)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[int] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                server.accept()[0].close()
                accepted.append(1)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    secret = f"labkit-secret-{secrets.token_hex(8)}"
    os.environ["LABKIT_TEST_SECRET"] = secret
    yield {"decoy": decoy, "canary": canary, "text": text, "port": server.getsockname()[1],
           "accepted": accepted, "secret": secret}
    os.environ.pop("LABKIT_TEST_SECRET", None)
    stop.set()
    thread.join()
    server.close()
    decoy.kill()
    decoy.wait()


def _left_in(namespace: str) -> list[int]:
    """Host processes still in the sandbox's PID namespace (there should be none)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == namespace:
                    found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.mark.parametrize(("kind", "name", "code"), CASES, ids=[f"{k}-{n}" for k, n, _ in CASES])
def test_hostile_program_is_contained_and_graded_wrong(world, kind, name, code):
    canary = world["canary"]
    tokens = {"DECOY_PID": world["decoy"].pid, "HOST_PID": os.getpid(), "CANARY_PATH": canary,
              "CANARY_DIR": canary.parent, "SERVER_PORT": world["port"]}
    for token, value in tokens.items():
        code = code.replace(token, str(value))
    before = sorted(os.listdir(canary.parent))
    box = Sandbox(timeout=1.5 if name in SLOW else 3.0, memory_mb=256, max_procs=16, guard=False)
    # Every program first names its PID namespace, so that the test can look for leftovers in it.
    header = "import os\nprint('NS', os.readlink('/proc/self/ns/pid'), flush=True)\n"
    r = box.check(header + code, TESTS, "add")
    output = r.stdout + r.stderr
    namespace = r.stdout.split()[1]

    assert r.status != "passed", (r.status, output[-500:])
    assert world["decoy"].poll() is None, "the decoy process was killed"
    assert canary.read_text() == world["text"] and sorted(os.listdir(canary.parent)) == before
    assert world["secret"] not in output and world["text"] not in output
    assert namespace != os.readlink("/proc/self/ns/pid") and _left_in(namespace) == []
    assert "bwrap" in r.layers and "pid-ns" in r.layers
    if kind == "signal":
        assert "VISIBLE" not in output
    elif kind == "read":
        assert "READ:" not in r.stdout and "LABKIT_TEST_SECRET" not in output
    elif kind == "limit":
        assert r.seconds < 3.5
        if name in ("busy-loop", "sleep", "hang-in-body"):
            assert r.status == "timeout"
        if name == "memory-bomb":
            assert r.status == "memory", output[-300:]
        if name == "disk-fill":
            assert "FULL No space left on device" in r.stdout
    elif kind == "network":
        assert "CONNECTED" not in output and world["accepted"] == []
    elif kind == "early":  # a program that writes to every fd also fakes guard reports: "blocked"
        assert r.status in ("failed", "timeout", "blocked") and not r.ok


def test_the_same_programs_with_the_guard_on_are_reported():
    """With the guard on (the default), ordinary hostile calls are also named in `violations`."""
    r = Sandbox(timeout=3).check("import os\nos.kill(4242, 9)\n" + WRONG, TESTS, "add")
    assert r.status == "blocked" and r.violations == ["os.kill"] and "guard" in r.layers
