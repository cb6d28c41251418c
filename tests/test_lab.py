"""`labkit lab`: JupyterLab starts on the notebooks, offline, on this Python's kernel, and prints a URL that
answers; Ctrl-C stops it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from labkit.errors import ConfigError
from labkit.runs.lab import OFFLINE_OPTIONS, free_port, lab_argv, start_lab


def test_argv_is_offline_loopback_and_keeps_its_port(tmp_path):
    argv = lab_argv(tmp_path, port=9999, token="t")
    assert set(OFFLINE_OPTIONS) <= set(argv)
    assert "--ServerApp.ip=127.0.0.1" in argv and "--ServerApp.port_retries=0" in argv
    assert "--no-browser" in argv
    assert "--no-browser" not in lab_argv(tmp_path, port=1, token="t", open_browser=True)


def test_bad_folder_or_notebook_fails_before_starting(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        start_lab(tmp_path / "missing")
    with pytest.raises(ConfigError, match="nope.ipynb is not in"):
        start_lab(tmp_path, notebook="nope.ipynb")


def test_free_port_avoids_a_taken_one():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        assert free_port(taken) != taken


def test_labkit_lab_serves_the_notebooks_on_this_python(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "labkit", "lab", f"--port={port}", "--token=lab-test",
         "--notebook=00_setup_and_tour.ipynb"],
        stdout=subprocess.PIPE, stderr=(tmp_path / "lab.log").open("w"), text=True,
        env={"JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
             "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"), **_base_env()})
    try:
        line = proc.stdout.readline()  # the URL comes once the server answers
        url = r"http://127\.0\.0\.1:(\d+)/lab/tree/00_setup_and_tour\.ipynb\?token=lab-test"
        found = re.search(f"JupyterLab: ({url})", line)
        assert found, f"{line!r}\n{(tmp_path / 'lab.log').read_text()[-2000:]}"
        assert int(found[2]) == port
        page = urllib.request.urlopen(found[1], timeout=30)
        assert page.status == 200
        html = page.read().decode()
        config = re.search(r'id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
        config = json.loads(config[1])
        assert config["news"] == {"disabled": True}
        specs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernelspecs?token=lab-test"))
        assert specs["kernelspecs"]["python3"]["spec"]["argv"][0] == sys.executable
        listing = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token=lab-test"))
        assert "00_setup_and_tour.ipynb" in {item["name"] for item in listing["content"]}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
