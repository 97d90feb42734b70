"""The explorer in a real browser: JupyterLab on localhost, Debian's Chromium driven by Selenium.

The notebook ``tests/data/explorer.ipynb`` is opened in JupyterLab and executed *from the
browser* (Shift+Enter in its code cell); the test then picks another response in the explorer's
``response`` dropdown, as a user would, and checks that the rendered token spans changed. A
screenshot lands in the pytest tmp dir and, when ``DQO_SCREENSHOT_DIR`` is set, there too.

Only Debian's ``chromium`` and ``chromium-driver`` are used (``apt-get install -y chromium
chromium-driver``); nothing downloads a browser or a driver (``SE_OFFLINE``). The test skips
only when ``chromium`` is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _chromium import CHROMIUM, MISSING, headless_chrome

NOTEBOOK = Path(__file__).parent / "data" / "explorer.ipynb"
TOKEN = "dqo-browser-test"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason=MISSING),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except OSError:
        return 0


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on localhost serving a copy of the notebook; isolated settings."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)  # no news/update pop-up over the notebook
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    port = _free_port()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
    ]  # fmt: skip
    log = (tmp_path / "jupyterlab.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while _get(f"{base}/api/status?token={TOKEN}") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(
                    "JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text()
                )
            time.sleep(0.3)
        yield base
    finally:
        req = urllib.request.Request(f"{base}/api/shutdown?token={TOKEN}", method="POST")
        try:
            urllib.request.urlopen(req, timeout=10).close()  # also shuts its kernels down
            proc.wait(timeout=30)
        except Exception:
            proc.terminate()
            proc.wait(timeout=30)
        log.close()


@pytest.fixture
def browser():
    with headless_chrome("1500,1150", script_timeout=30) as driver:
        yield driver


def _keep(shot: Path) -> None:
    if os.environ.get("DQO_SCREENSHOT_DIR"):
        out = Path(os.environ["DQO_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / shot.name)


def test_explorer_runs_and_reacts_in_chromium(jupyterlab, browser, tmp_path):
    try:
        _drive(jupyterlab, browser, tmp_path)
    except BaseException:
        shot = tmp_path / "explorer-failure.png"  # what the page looked like when it failed
        if browser.save_screenshot(str(shot)):
            _keep(shot)
        raise


def _drive(jupyterlab, browser, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    start = time.perf_counter()
    wait = WebDriverWait(
        browser, 150, poll_frequency=0.25, ignored_exceptions=[StaleElementReferenceException]
    )
    browser.get(f"{jupyterlab}/lab/tree/{NOTEBOOK.name}?token={TOKEN}")

    # execute the code cell from the browser, as a user would (Shift+Enter in its editor); a
    # keystroke sent while JupyterLab is still settling can be lost, so retry until the cell's
    # prompt shows it queued or run ("[*]:" / "[1]:")
    cell = ".jp-Notebook .jp-CodeCell"
    for _ in range(6):
        editor = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"{cell} .cm-content")))
        editor.click()
        ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(
            Keys.SHIFT
        ).perform()
        try:
            WebDriverWait(browser, 15, ignored_exceptions=[StaleElementReferenceException]).until(
                lambda d: d.execute_script(
                    "const p = document.querySelector(arguments[0] + ' .jp-InputPrompt');"
                    "return p && /\\[(\\*|\\d+)\\]/.test(p.textContent);",
                    cell,
                )
            )
            break
        except TimeoutException:
            continue
    else:
        pytest.fail("the notebook cell never started running")

    def read(d):  # one atomic read of the rendered view: (innerHTML, token texts, titles)
        return d.execute_script(
            "const v = document.querySelector('.jp-OutputArea .dqo-viz');"
            "if (!v) return null;"
            "const t = [...v.querySelectorAll('.dqo-tok')];"
            "return t.length ? [v.innerHTML, t.map(s => s.textContent), t.map(s => s.title)]"
            " : null;"
        )

    before_html, before_tokens, _ = wait.until(read)
    rendered = time.perf_counter() - start
    assert len(before_tokens) > 5 and "dqo-line" in before_html
    assert browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea script") == []

    # change a control in the browser: the response dropdown → a solution with a slip
    dropdown = None
    for box in browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .widget-dropdown"):
        if box.find_element(By.CSS_SELECTOR, "label").text.strip() == "response":
            dropdown = box.find_element(By.CSS_SELECTOR, "select")
    assert dropdown is not None, "no 'response' dropdown rendered"
    Select(dropdown).select_by_visible_text("slip at step 1")

    def changed(d):
        now = read(d)
        return now if now is not None and now[0] != before_html else None

    _, after_tokens, titles = wait.until(changed)
    assert after_tokens != before_tokens  # the rendered token spans changed
    assert all("log π_θ(a|s) = " in t for t in titles)  # tooltips carry the exact values

    view = browser.find_element(By.CSS_SELECTOR, ".jp-OutputArea .dqo-viz")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", view)
    time.sleep(0.5)
    shot = tmp_path / "explorer.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    _keep(shot)
    total = time.perf_counter() - start
    print(f"browser: rendered after {rendered:.1f} s, whole interaction {total:.1f} s; {shot}")
