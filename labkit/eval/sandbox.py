"""A sandbox for model-written Python: run it in a separate, limited process and report what happened.

Two layers, so that one failing does not free the program:

- **OS layer** (set up in the child between fork and exec): its own session and process group, so a
  timeout kills every process it started; rlimits on CPU seconds, address space (memory), file size,
  process count, open files and core dumps; a fresh, empty network namespace when the kernel allows one;
  and, when labkit runs as root, a drop to the unprivileged `nobody` user (root ignores the process limit
  and may signal any process). The working directory is a fresh scratch directory that is deleted
  afterwards, and the environment is scrubbed.
- **Python layer** (`guard=True`): before the program runs, a bootstrap installs an audit hook
  (PEP 578) that denies process creation, sockets, signals to other processes, ctypes, and writes or
  deletions outside the scratch directory. Each denial is also written to a pipe the program cannot
  close from Python, so a program that catches the exception is still reported.

Results: "passed" (exit 0), "failed" (an exception such as a failing assert), "timeout" (wall clock or CPU
limit), "memory" (MemoryError or killed at the memory limit), "blocked" (the guard denied something),
"error" (the sandbox itself could not start).

What it does not stop: a program can burn its CPU and memory allowance, read any file its user may read,
and print. The audit hook is a tripwire for ordinary code, not a security boundary against code written
to evade it: a few calls raise no audit event (`os.open` relative to a `dir_fd`, `os.mknod`), and a
program can close the report pipe so that later denials are still enforced but no longer reported.
When the interpreter is not reachable by `nobody` (a pyenv install under /root) labkit stays root and
only the guard stops signals to other processes; as a normal user the program keeps that user's rights.
Do not run it on a machine holding secrets.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NOBODY = 65534
CLONE_NEWNET = 0x40000000
OUTPUT_LIMIT = 8192
MEMORY_EXIT = 86   # the bootstrap's exit code for MemoryError
try:  # loaded here, not in the child: dlopen between fork and exec can deadlock
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None

# Runs before the untrusted code (passed on the command line; the code itself arrives on stdin). The
# hook is installed first; nothing after it can remove it, and ctypes (the usual way round) is denied.
BOOTSTRAP = r'''
import os, sys
SCRATCH = os.path.realpath(sys.argv[1])
REPORT = int(sys.argv[2])
GUARD = sys.argv[3] == "1"
DENY = ("os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.startfile",
        "subprocess.Popen", "pty.spawn", "socket.", "ctypes.", "os.kill", "os.killpg", "signal.pthread_kill",
        "os.setuid", "os.setgid", "resource.setrlimit", "resource.prlimit", "_posixsubprocess")
WRITES = ("os.remove", "os.unlink", "os.rmdir", "os.rename", "os.replace", "os.mkdir", "os.chmod", "os.chown",
          "os.link", "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move",
          "shutil.copyfile")

class Denied(PermissionError):
    pass

def _inside(path):
    try:
        real = os.path.realpath(os.fsdecode(path) if not isinstance(path, int) else ".")
    except Exception:
        return False
    return real == SCRATCH or real.startswith(SCRATCH + os.sep)

def _deny(event):
    try:
        os.write(REPORT, (event + "\n").encode())
    except OSError:
        pass
    raise Denied(f"sandbox: {event} is not allowed")

def _hook(event, args):
    if event.startswith(DENY):
        if event == "os.kill" and args and args[0] == os.getpid():
            return
        _deny(event)
    if event == "open" and args:
        mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        writing = (any(c in mode for c in "wax+")
                   or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))
        if writing and not _inside(args[0]):
            _deny(f"open for writing outside the scratch dir: {args[0]!r:.80}")
    elif event in WRITES and args and not all(_inside(a) for a in args[:2] if isinstance(a, (str, bytes))):
        _deny(f"{event} outside the scratch dir")

sys.dont_write_bytecode = True  # the import system's .pyc writes would read as violations
if GUARD:
    sys.addaudithook(_hook)
source = sys.stdin.read()
try:
    exec(compile(source, "<sandboxed>", "exec"), {"__name__": "__main__"})
except MemoryError:
    os._exit(86)
'''


@dataclasses.dataclass
class SandboxResult:
    status: str              # passed | failed | timeout | memory | blocked | error
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    violations: list[str]    # what the guard denied, in order
    layers: list[str]        # the OS layers that were actually applied
    pid: int | None = None   # the program's process id, which was also its process group id

    @property
    def ok(self) -> bool:
        return self.status == "passed"


@dataclasses.dataclass(frozen=True)
class Sandbox:
    """Limits for one program. `timeout` is wall-clock seconds; `cpu_seconds` defaults to the timeout."""

    timeout: float = 5.0
    cpu_seconds: int | None = None
    memory_mb: int = 512
    max_file_mb: int = 16
    max_procs: int = 32
    max_open_files: int = 64
    guard: bool = True

    def run(self, code: str) -> SandboxResult:
        scratch = Path(tempfile.mkdtemp(prefix="labkit-sandbox-"))
        report_r, report_w = os.pipe()
        layers_r, layers_w = os.pipe()
        python = os.path.realpath(sys.executable)
        drop = os.geteuid() == 0 and _reachable_by_others(python)
        if drop:
            os.chown(scratch, NOBODY, NOBODY)
        group = _PidsGroup.create(self.max_procs) if os.geteuid() == 0 else None
        procs = group.procs if group else None  # a plain string: the child should not build Path objects
        cpu = int(self.cpu_seconds or max(1, round(self.timeout)))
        start = time.perf_counter()
        proc = None
        try:
            try:
                proc = subprocess.Popen(
                    [python, "-I", "-S", "-B", "-c", BOOTSTRAP, str(scratch), str(report_w),
                     "1" if self.guard else "0"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=scratch,
                    env=_clean_env(scratch), pass_fds=(report_w, layers_w), close_fds=True,
                    preexec_fn=lambda: _limit_child(self, cpu, drop, procs, layers_w))
            except (OSError, subprocess.SubprocessError) as exc:
                return SandboxResult("error", None, "", f"sandbox could not start: {exc}", 0.0, [], [])
            finally:
                os.close(report_w)
                os.close(layers_w)
            timed_out = False
            try:
                out, err = proc.communicate(code.encode(), timeout=self.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc.pid)
                out, err = proc.communicate()
            seconds = time.perf_counter() - start
            violations = _read_all(report_r).splitlines()
            layers = _read_all(layers_r).split()
        finally:
            if proc is not None:
                _kill_group(proc.pid)  # anything the program left running in its group
            if group is not None:
                group.destroy()  # and anything that left the group (setsid) but not the cgroup
            for fd in (report_r, layers_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(scratch, ignore_errors=True)
        status = _status(proc.returncode, timed_out, violations, err)
        return SandboxResult(status, proc.returncode, _text(out), _text(err), seconds, violations, layers,
                             proc.pid)


def run_python(code: str, **limits) -> SandboxResult:
    """Run `code` in a Sandbox with these limits (see Sandbox for their names and defaults)."""
    return Sandbox(**limits).run(code)


def _limit_child(box: Sandbox, cpu: int, drop: bool, procs: str | None, layers_fd: int) -> None:
    """Runs in the child between fork and exec: plain system calls only, no imports."""
    applied = []
    os.setsid()
    applied.append("session")
    if procs is not None and _join(procs, os.getpid()):  # join first: the cap then covers all it starts
        applied.append("pids-cgroup")
    mb = 1024 * 1024
    for res, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, box.memory_mb * mb),
                       (resource.RLIMIT_FSIZE, box.max_file_mb * mb), (resource.RLIMIT_CORE, 0),
                       (resource.RLIMIT_NOFILE, box.max_open_files)):
        resource.setrlimit(res, (value, value))
    applied.append("rlimits")
    if _LIBC is not None and _LIBC.unshare(CLONE_NEWNET) == 0:
        applied.append("no-network")
    if drop:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        applied.append("nobody")
    # Set after the uid change: the process limit counts the new user's processes (and root ignores it).
    resource.setrlimit(resource.RLIMIT_NPROC, (box.max_procs, box.max_procs))
    if os.geteuid() != 0:
        applied.append("nproc")
    os.write(layers_fd, " ".join(applied).encode())


def _join(procs: str, pid: int) -> bool:
    try:
        fd = os.open(procs, os.O_WRONLY)
        try:
            os.write(fd, str(pid).encode())
        finally:
            os.close(fd)
        return True
    except OSError:
        return False


def _reachable_by_others(path: str) -> bool:
    """Whether an unprivileged user can run this file: every directory above it searchable by others.

    A pyenv interpreter under /root is not, and then labkit cannot drop to `nobody`; the process limit
    then comes from a pids cgroup when one can be made, and the Python guard stops fork() either way.
    """
    p = Path(path)
    try:
        return bool(p.stat().st_mode & 0o001) and all(d.stat().st_mode & 0o001 for d in p.parents)
    except OSError:
        return False


@dataclasses.dataclass
class _PidsGroup:
    """A cgroup (v1 `pids` controller, or v2) capping how many processes the program may have, and the way to
    kill every one of them afterwards, wherever they moved in the process tree. Root only;
    None if unavailable."""

    path: Path

    @property
    def procs(self) -> str:
        return str(self.path / "cgroup.procs")

    @classmethod
    def create(cls, max_procs: int) -> _PidsGroup | None:
        for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
            try:
                if not (root / "cgroup.procs").exists():
                    continue
                path = Path(tempfile.mkdtemp(prefix="labkit-sandbox-", dir=root))
                (path / "pids.max").write_text(str(max_procs))
                return cls(path)
            except OSError:
                continue
        return None

    def destroy(self) -> None:
        for _ in range(50):
            try:
                pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            except OSError:
                break
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
        try:
            self.path.rmdir()
        except OSError:
            pass


def _clean_env(scratch: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_all(fd: int) -> str:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _text(data: bytes | None) -> str:
    text = (data or b"").decode(errors="replace")
    return text if len(text) <= OUTPUT_LIMIT else text[:OUTPUT_LIMIT] + "\n… (truncated)"


def _status(code: int | None, timed_out: bool, violations: list[str], stderr: bytes | None) -> str:
    if violations:
        return "blocked"
    if timed_out or code in (-signal.SIGXCPU, -signal.SIGKILL) and b"MemoryError" not in (stderr or b""):
        return "timeout"
    if code == MEMORY_EXIT or b"MemoryError" in (stderr or b""):
        return "memory"
    return "passed" if code == 0 else "failed"
