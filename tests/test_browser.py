"""JupyterLab in headless Chromium: notebook 00 runs and its chat box answers a typed message; the live
widgets work in the page (the training dashboard grows while a run trains, the LoRA scale slider, the rollout
browser, the preference-maths sliders) and an exercise check cell answers right and wrong.

Screenshots (mid-run and final) are saved under test-artifacts/browser/ (gitignored; CI keeps them)."""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "00_setup_and_tour.ipynb"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--window-size=1400,1000")


def _browser_or_skip() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    msg = ("Chromium and chromedriver are needed "
           "(apt-get install chromium chromium-driver; make test does it as root)")
    if os.environ.get("CI"):
        pytest.fail(msg)  # CI must run the browser tier, not skip it
    pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    # Serve a copy: JupyterLab autosaves, and outputs must never land in the committed notebook.
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(NOTEBOOK, served / NOTEBOOK.name)
    port, token = _free_port(), "labkit-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"), "HF_HUB_OFFLINE": "1",
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings")}
    # Answer JupyterLab's "notified about Jupyter news?" question up front: its toast covers the page.
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={served}",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None", "--LabApp.check_for_updates_class="
         "jupyterlab.NeverCheckForUpdate"],
        cwd=served, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.browser
def test_notebook_00_chat_box_in_jupyterlab(jupyterlab, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    base, token = jupyterlab
    driver = _chrome(tmp_path)
    try:
        driver.get(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}")
        wait = WebDriverWait(driver, 240, poll_frequency=0.5)
        # The kernel must be idle before "run all", or the command is dropped.
        wait.until(lambda d: d.execute_script(
            "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            "return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
            " && w.sessionContext.session.kernel.status === 'idle');"))
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        chat_input = wait.until(lambda d: d.find_elements(
            By.CSS_SELECTOR, "input[placeholder='Type a message and press Enter']"))[0]
        # The cell after the widget sends one scripted message: wait for its reply bubble first.
        wait.until(lambda d: d.page_source.count("<b>assistant</b>") >= 1)
        driver.execute_script("arguments[0].scrollIntoView()", chat_input)
        chat_input.send_keys("What is 2 + 2?", Keys.ENTER)
        wait.until(lambda d: d.page_source.count("<b>assistant</b>") >= 2)
        assert "What is 2 + 2?" in driver.page_source
        # Every cell ran without an error output.
        wait.until(lambda d: d.execute_script(
            "return window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"))
        assert not driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type="
                                        "'application/vnd.jupyter.stderr'] .jp-RenderedText pre .ansi-red-fg")
        assert "Traceback" not in driver.page_source
    finally:
        driver.save_screenshot(str(tmp_path / "jupyterlab.png"))
        driver.quit()


# ---- the live widgets, in a notebook the test writes: a tiny model keeps it to a minute or two ----------

WIDGETS_NOTEBOOK = """
# %%
import time

from labkit.config import SFTConfig
from labkit.dash import LiveDashboard
from labkit.stages.sft import train

cfg = SFTConfig.from_preset("cpu-smoke", model=MODEL_DIR, output_dir="run", max_steps=16, batch_size=2,
                            n_eval=2, eval_max_new_tokens=4, dtype="float32", learning_rate=1e-2)


class Slow:  # a step every ~0.5 s at least, so the browser can watch the curve grow
    def on_step(self, step, metrics):
        time.sleep(0.5)

# %%
result = train(cfg, callbacks=[LiveDashboard(title="live", update_every_s=0.2), Slow()])

# %%
import torch
from peft import LoraConfig, get_peft_model

from labkit.dash import scale_slider
from labkit.models import load_model

torch.manual_seed(1)
base, tok = load_model(MODEL_DIR, dtype="float32")
peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=64, target_modules="all-linear",
                                             init_lora_weights=False))
scale_slider(peft_model, tok, "Hello", max_new_tokens=6)

# %%
from labkit.dash.rl import RolloutBrowser

RolloutBrowser([{"step": s, "group": g, "prompt": f"question {g}", "completion": f"reply-s{s}-g{g}-{i}",
                 "reward": float(i), "advantage": i - 0.5} for s in (1, 2) for g in (0, 1) for i in (0, 1)])

# %%
from labkit.dash.preference_math import PreferenceMathWidget

PreferenceMathWidget(beta=0.1)

# %%
from labkit.exercises import check

answer_03_1 = ...

# %%
check("03.1", answer_03_1)
"""

# JavaScript run in the page. Cells are addressed by index in the open notebook.
JS_CELL_BUSY = ("const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[arguments[0]];"
                "return !!c && c.querySelector('.jp-InputPrompt').textContent.includes('*');")
JS_POINTS = ("const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[1];"
             "const p = c && c.querySelector('.js-plotly-plot');"
             "return p ? p.querySelectorAll('.scatterlayer path.point').length : 0;")
JS_IDLE = ("const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
           "return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
           " && w.sessionContext.session.kernel.status === 'idle');")
JS_OUTPUT_TEXT = ("const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[arguments[0]];"
                  "return c ? c.querySelector('.jp-OutputArea').innerText : '';")
JS_SET_AND_RUN = ("const nb = window.jupyterapp.shell.currentWidget.content;"
                  "nb.widgets[arguments[0]].model.sharedModel.setSource(arguments[1]);"
                  "nb.activeCellIndex = arguments[0];"
                  "return window.jupyterapp.commands.execute('notebook:run-cell-and-select-next');")
JS_CHECK_STATE = ("const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[arguments[0]];"
                  "const v = c && c.querySelector('.labkit-check'); return v ? v.dataset.ok : null;")
JS_FIRST_LINE = ("const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[arguments[0]];"
                 "const p = c && c.querySelector('.js-plotly-plot .scatterlayer path.js-line');"
                 "return p ? p.getAttribute('d') : null;")


def _chrome(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _browser_or_skip()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (*CHROME_ARGS, f"--user-data-dir={tmp_path / 'chrome'}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_path), options=opts)


def _slider_handle(driver, cell: int, label: str):
    """The keyboard-focusable handle of the slider described `label` in output of cell `cell`."""
    from selenium.webdriver.common.by import By

    cells = driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")
    for slider in cells[cell].find_elements(By.CSS_SELECTOR, ".widget-slider"):
        if slider.find_element(By.CSS_SELECTOR, ".widget-label").text.strip() == label:
            return slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
    raise AssertionError(f"no slider {label!r} in cell {cell}")


def _until(wait, condition, what: str):
    """wait.until, failing with what was awaited and the page's state instead of a bare TimeoutException."""
    from selenium.common.exceptions import TimeoutException

    try:
        return wait.until(condition)
    except TimeoutException:
        d = wait._driver
        state = {"kernel idle": d.execute_script(JS_IDLE), "points": d.execute_script(JS_POINTS),
                 "cells running": [i for i in range(7) if d.execute_script(JS_CELL_BUSY, i)],
                 "plots": d.execute_script("return document.querySelectorAll('.js-plotly-plot').length")}
        raise AssertionError(f"timed out waiting for {what}; page: {state}") from None


def _screenshot(driver, name: str) -> pathlib.Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


@pytest.mark.browser
def test_live_widgets_and_a_check_cell_in_jupyterlab(jupyterlab, tmp_path, tiny_model_dir):
    import jupytext
    import nbformat
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    first_cell = f"# %%\nMODEL_DIR = {tiny_model_dir!r}\n"
    source = textwrap.dedent(WIDGETS_NOTEBOOK).lstrip().replace("# %%\n", first_cell, 1)
    nb = jupytext.reads(source, fmt="py:percent")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "served" / "widgets.ipynb")
    base, token = jupyterlab
    driver = _chrome(tmp_path)
    try:
        driver.get(f"{base}/lab/tree/widgets.ipynb?token={token}")
        wait = WebDriverWait(driver, 300, poll_frequency=0.2)
        wait.until(lambda d: d.execute_script(JS_IDLE))
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")

        # 1. The live dashboard gains points while the training cell still runs: two samples, growing.
        first = _until(wait, lambda d: d.execute_script(JS_CELL_BUSY, 1) and d.execute_script(JS_POINTS),
                       "a first point while training runs")
        assert driver.execute_script(JS_CELL_BUSY, 1), "training ended before the plot showed a point"
        second = _until(wait, lambda d: (n := d.execute_script(JS_POINTS)) > first and n, "more points")
        assert driver.execute_script(JS_CELL_BUSY, 1), "training ended before the plot grew: not live"
        driver.execute_script("document.querySelectorAll('.jp-Notebook .jp-Cell')[1].scrollIntoView()")
        _screenshot(driver, "widgets-mid-run.png")  # a partly drawn curve
        done = lambda d: d.execute_script(JS_IDLE) and not d.execute_script(JS_CELL_BUSY, 6)  # noqa: E731
        _until(wait, done, "every cell to run")
        assert "Traceback" not in driver.page_source
        # Library warnings stay quiet: nothing red above the dashboard.
        assert not driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type="
                                        "'application/vnd.jupyter.stderr'] .ansi-red-fg")
        assert second > first > 0

        # 2. The LoRA scale slider regenerates the reply: from the adapter (× 1) to the base model (× 0).
        before = driver.execute_script(JS_OUTPUT_TEXT, 2)
        assert "× 1" in before
        _slider_handle(driver, 2, "scale").send_keys(Keys.HOME)
        after = _until(wait, lambda d: "× 0" in (t := d.execute_script(JS_OUTPUT_TEXT, 2)) and t, "scale 0")
        reply = lambda text: text.split("Hello", 1)[-1].strip()  # noqa: E731
        assert reply(after) != reply(before), (before, after)

        # 3. The rollout browser shows the last step's completions and moves back to step 1.
        text = driver.execute_script(JS_OUTPUT_TEXT, 3)
        assert "reply-s2-g0-0" in text and "reply-s1-g0-0" not in text
        _slider_handle(driver, 3, "step").send_keys(Keys.HOME)
        _until(wait, lambda d: "reply-s1-g1-1" in d.execute_script(JS_OUTPUT_TEXT, 3), "step 1's rollouts")
        assert "reply-s2-g0-0" not in driver.execute_script(JS_OUTPUT_TEXT, 3)

        # 4. Moving β reshapes the preference-loss curves.
        curve = driver.execute_script(JS_FIRST_LINE, 4)
        assert curve
        _slider_handle(driver, 4, "β").send_keys(Keys.END)
        _until(wait, lambda d: d.execute_script(JS_FIRST_LINE, 4) not in (None, curve), "a new curve")

        # 5. The exercise check cell: not answered, then a wrong answer, then the right one.
        assert driver.execute_script(JS_CHECK_STATE, 6) == "none"
        for answer, state in (("0.5", "false"), ("0.731", "true")):
            cell = f"from labkit.exercises import check\n\nanswer_03_1 = {answer}"
            driver.execute_script(JS_SET_AND_RUN, 5, cell)
            driver.execute_script("window.jupyterapp.commands.execute('notebook:run-cell')")
            _until(wait, lambda d, s=state: d.execute_script(JS_CHECK_STATE, 6) == s, f"verdict {state}")
        assert "right" in driver.execute_script(JS_OUTPUT_TEXT, 6)
        assert "Traceback" not in driver.page_source
    finally:
        _screenshot(driver, "widgets-final.png")
        driver.quit()
