"""The dashboard in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`)
driven by selenium. It loads the page of a finished 4-node run, then watches a live 3-node run.

Skipped, saying why, only where no Chromium (or its driver, or selenium) is installed; `.ci/run`
installs them. Chromium runs with a fresh profile and everything that would reach out to the
network switched off."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcepl.config import dump_toml
from mcepl.launcher.dashboard.live import ReplayDashboard
from mcepl.launcher.inprocess import run_inprocess_to_dir
from mcepl.topology import generate, save_topology

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--disable-extensions", "--window-size=1400,1050")


def _find_browser() -> tuple[str, str]:
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    browser = os.environ.get("MCEPL_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None)
    driver = os.environ.get("MCEPL_CHROMEDRIVER") or shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("no Chromium and chromedriver on this machine (Debian: apt-get install "
                    "chromium chromium-driver; .ci/run installs them as root)")
    return browser, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = _find_browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=opts)
    d.set_page_load_timeout(60)
    try:
        yield d
    finally:
        d.quit()


def wait_for(d: Any, script: str, timeout: float = 60) -> Any:
    """Until the page's script returns something truthy; returns it."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(d, timeout, poll_frequency=0.1).until(
        lambda drv: drv.execute_script(script))


def page_errors(d: Any) -> list[str]:
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]


def test_finished_run_page(browser: Any, tmp_path: Path, tiny_cfg: Any) -> None:
    cfg = tiny_cfg({"run": {"rounds": 3, "eval_every": 1}})
    run = tmp_path / "ring4"
    topo = generate("ring", 4, retention=[0.5, 0.3, 0.2, 0.4], base_port=25000)
    run_inprocess_to_dir(cfg, topo, run, quiet=True)
    with open(run / "metrics.jsonl", "a") as f:
        f.write("{torn line\n")  # skipped and counted on the page
    dash = ReplayDashboard([run], port=0).start()
    try:
        t0 = time.monotonic()
        browser.get(dash.url)
        counts = wait_for(browser, """
            const d = window.mceplDashboard;
            if (!d || !d.cy || d.runs[0].records < 16) return null;
            return [d.cy.nodes().length, d.cy.edges().length,
                    document.querySelectorAll('#nodes tbody tr').length];""")
        load_s = time.monotonic() - t0
        assert counts == [4, 4, 4]
        assert browser.find_element("id", "round").text == "round 3/3"
        assert browser.find_element("id", "malformed").text == "1 unreadable line skipped"
        assert browser.find_element("id", "status").text.startswith("finished: ok")
        # hovering node 2 shows its numbers and highlights its row and curve
        browser.execute_script("window.mceplDashboard.cy.getElementById('n2').emit('mouseover')")
        tip = browser.find_element("id", "tooltip").text
        assert "node 2" in tip and "r = 0.2" in tip and "labels:" in tip
        assert browser.execute_script("return window.mceplDashboard.hover") == 2
        hl = browser.find_elements("css selector", "#nodes tbody tr.hl")
        assert [r.get_attribute("data-node") for r in hl] == ["2"]
        # the table sorts by a column
        browser.find_element("css selector", "th[data-key='r']").click()
        rows = browser.find_elements("css selector", "#nodes tbody tr")
        assert [r.get_attribute("data-node") for r in rows] == ["2", "1", "3", "0"]
        browser.save_screenshot(str(tmp_path / "dashboard-finished.png"))
        assert (tmp_path / "dashboard-finished.png").stat().st_size > 10_000
        assert page_errors(browser) == [], page_errors(browser)
        print(f"finished run: page loaded and drawn in {load_s:.2f} s")
    finally:
        dash.stop()


def test_live_run_round_advances(browser: Any, tmp_path: Path, tiny_cfg: Any) -> None:
    from mcepl.launcher.resolve import free_base_port

    cfg = tiny_cfg({"run": {"rounds": 40, "eval_every": 5}})
    (tmp_path / "cfg.toml").write_text(dump_toml(cfg))
    topo = generate("ring", 3, retention=[0.5, 0.3, 0.2],
                    base_port=free_base_port(3, start=23000))
    save_topology(topo, tmp_path / "topo.json")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcepl.launcher.cli", "launch",
         "--config", str(tmp_path / "cfg.toml"),
         "--topology", str(tmp_path / "topo.json"), "--out", str(tmp_path / "run"),
         "--dashboard", "0", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("dashboard: http://127.0.0.1:"), line
        browser.get(line.split()[1])
        wait_for(browser, "return window.mceplDashboard && window.mceplDashboard.cy "
                          "&& window.mceplDashboard.cy.nodes().length === 3")
        first = int(wait_for(browser, """
            const r = +document.querySelector('#round').dataset.round;
            return r >= 0 ? String(r) : null;""", timeout=120))
        t0 = time.monotonic()
        later = int(wait_for(browser, f"""
            const r = +document.querySelector('#round').dataset.round;
            return r > {first} ? String(r) : null;""", timeout=120))
        assert later > first
        print(f"live run: round {first} -> {later} on the page in {time.monotonic() - t0:.2f} s")
        text = browser.find_element("id", "round").text
        assert text.startswith("round ") and text.endswith("/40")
        states = browser.execute_script(
            "return [...window.mceplDashboard.runs[0].nodes.values()].map(n => n.state)")
        assert set(states) <= {"training", "done", "waiting"}, states
        browser.save_screenshot(str(tmp_path / "dashboard-live.png"))
        assert page_errors(browser) == [], page_errors(browser)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    # finished, or stopped by the SIGINT above (the launcher reports it and exits 1)
    assert proc.returncode == 0 or "interrupted" in out, out
