"""`labkit lab` / `make lab`: JupyterLab on the notebooks, offline, on this Python's kernel.

Offline means JupyterLab makes no call of its own to the internet: no news feed, no update check, and the
read-only extension manager instead of the one that queries PyPI. The notebooks' kernelspec is "python3";
a private kernelspec of that name, first on JUPYTER_PATH, points at this interpreter, so a user-level
"python3" kernel from another environment cannot take the notebooks over.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from labkit.errors import ConfigError, LabkitError

OFFLINE_OPTIONS = (
    "--LabApp.news_url=None",                                           # no announcements feed
    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",  # no version check
    "--LabApp.extension_manager=readonly",                              # no PyPI extension search
)


def free_port(preferred: int = 0) -> int:
    """`preferred` if nothing listens on it on loopback, else (or for 0) a port the OS picks."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_kernelspec(folder: Path, python: str = sys.executable) -> Path:
    """A "python3" kernelspec in `folder`/kernels that runs `python`; returns `folder` (for JUPYTER_PATH)."""
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python 3 (labkit, {Path(python).parent.parent.name})", "language": "python",
        "metadata": {"debugger": True}}))
    return folder


def lab_argv(root: Path, *, port: int, token: str, open_browser: bool = False) -> list[str]:
    """The JupyterLab command line: loopback only, a fixed port (no silent move to another), the token."""
    argv = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root}", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
            *OFFLINE_OPTIONS]
    if not open_browser:
        argv.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")  # containers and CI run as root; JupyterLab refuses it otherwise
    return argv


def lab_url(port: int, token: str, notebook: str = "") -> str:
    path = f"/lab/tree/{notebook}" if notebook else "/lab"
    return f"http://127.0.0.1:{port}{path}?token={token}"


def wait_until_up(proc: subprocess.Popen, port: int, token: str, timeout: float = 120.0) -> None:
    """Poll the server's status API until it answers; LabkitError if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabkitError(f"JupyterLab exited with code {proc.returncode} before it started "
                              f"(is port {port} taken? is jupyterlab installed?)")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=1)
            return
        except OSError:
            time.sleep(0.3)
    raise LabkitError(f"JupyterLab did not answer on port {port} within {timeout:.0f} s")


def start_lab(root: str | os.PathLike, *, port: int = 8888, token: str = "", open_browser: bool = False,
              notebook: str = "", log=None) -> tuple[subprocess.Popen, str, tempfile.TemporaryDirectory]:
    """Start JupyterLab on `root` and return (process, URL with token, the kernelspec folder to clean up).

    `port` 0, or a taken port, picks a free one; an empty `token` makes a random one. `log`: a file for the
    server's output (default: inherited). The caller stops the process and cleans the folder up.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise ConfigError("dir", f"{root} is not a folder")
    if notebook and not (root / notebook).exists():
        raise ConfigError("notebook", f"{notebook} is not in {root}")
    port, token = free_port(port), token or secrets.token_hex(16)
    specs = tempfile.TemporaryDirectory(prefix="labkit-lab-")
    env = {**os.environ, "JUPYTER_PATH": os.pathsep.join(
        p for p in (str(write_kernelspec(Path(specs.name))), os.environ.get("JUPYTER_PATH", "")) if p)}
    proc = subprocess.Popen(lab_argv(root, port=port, token=token, open_browser=open_browser), cwd=root,
                            env=env, stdout=log, stderr=subprocess.STDOUT if log else None)
    try:
        wait_until_up(proc, port, token)
    except BaseException:
        stop_lab(proc)
        specs.cleanup()
        raise
    return proc, lab_url(port, token, notebook), specs


def stop_lab(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate the server (it shuts its kernels down), killing it if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
