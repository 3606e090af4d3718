"""`scaledb serve` end to end in a real browser: headless Chromium driven by Selenium, against the
CLI serving a workspace whose sweep is in progress (the test writes the log lines a training run
would). Needs Debian's chromium + chromium-driver (scripts/browser-setup): fails under CI when
they are missing, skips with the reason elsewhere.

With SCALEDB_SCREENSHOTS=DIR the tests also save screenshots of the main pages there (the
README's are made this way: `SCALEDB_SCREENSHOTS=docs/images pytest -m browser`).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, engine_unavailable
from scaling_db.store.database import open_store, record_fit
from scaling_db.store.ingest import ingest_runs
from scaling_db.store.query import run_query
from store_fakes import finish_runs, make_workspace, write_log, write_status

pytestmark = pytest.mark.browser

#: How long the page may take to show a change (it polls every 2 s; the server rescans files every 0.2 s).
LIVE_S = 20


def _binary(env: str, name: str) -> str | None:
    return os.environ.get(env) or shutil.which(name)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium (Selenium + the system chromedriver) that saves downloads to a folder."""
    chromium, driver_path = _binary("SCALEDB_CHROMIUM", "chromium"), _binary("SCALEDB_CHROMEDRIVER", "chromedriver")
    if not chromium or not driver_path:
        engine_unavailable("headless Chromium is not installed (chromium/chromedriver not on PATH): "
                           "run `sudo scripts/browser-setup`")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        engine_unavailable(f"selenium is not installed ({exc}): pip install -e '.[dev]'")
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`scaledb serve` (the CLI, in its own process) over a sweep in progress: 3 runs finished and
    ingested (with a stored fit), 1 running with 3 checkpoints, 1 pending. Yields (url, ws, manifests)."""
    ws, manifests = make_workspace(tmp_path_factory.mktemp("serve") / "ws")
    finish_runs(ws, manifests[:3])
    ingest_runs(ws)
    with open_store(ws) as con:
        record_fit(con, {"experiment": "ba_graph", "name": "loss_vs_params", "law": "saturating_power_law",
                         "params": {"E": 2.0, "A": 40.0, "alpha": 0.5},
                         "intervals": {"E": [1.9, 2.1], "A": [30.0, 50.0], "alpha": [0.4, 0.6]}, "n_points": 3})
    running = manifests[3]
    write_log(ws, running.run_id, range(1, 4), n_params=running.counts.n_params)
    write_status(ws, running.run_id, "running", step=3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaling_db", "serve", "-w", str(ws.root), "--port", "0", "--refresh", "0.2"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
    line = proc.stdout.readline()
    found = re.search(r"(http://\S+/)", line)
    if not found:
        proc.kill()
        pytest.fail(f"scaledb serve did not print its URL: {line!r} {proc.stderr.read()}")
    yield found.group(1).rstrip("/"), ws, manifests
    proc.terminate()
    proc.communicate(timeout=30)


def wait(driver, condition, timeout: float = LIVE_S, message: str = ""):
    """Poll `condition` until true; parts of the page are replaced as they refresh, so an element
    found a moment ago may be gone (stale): that counts as "not yet"."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)


def screenshot(driver, name: str) -> None:
    folder = os.environ.get("SCALEDB_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, min(max(height, 600), 2000))
        driver.save_screenshot(str(Path(folder) / f"serve-{name}.png"))
        driver.set_window_size(1400, 1000)


def checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_index_lists_the_experiment_with_status_counts(browser, served):
    from selenium.webdriver.common.by import By

    url, _, _ = served
    browser.get(url + "/")
    row = 'tr[data-experiment="ba_graph"]'
    counts = wait(browser, lambda d: {s: d.find_element(By.CSS_SELECTOR, f"{row} .count-{s}").text
                                      for s in ("pending", "running", "finished")})
    assert counts == {"pending": "1", "running": "1", "finished": "3"}
    screenshot(browser, "experiments")


def test_run_curve_gains_a_point_when_the_run_writes_a_checkpoint(browser, served):
    from selenium.webdriver.common.by import By

    url, ws, manifests = served
    run = manifests[3]
    browser.get(f"{url}/runs/{run.run_id}")
    curve = browser.find_element(By.ID, "curve")
    wait(browser, lambda d: curve.get_attribute("data-points") == "3", message="the curve never showed 3 checkpoints")
    assert curve.find_elements(By.CSS_SELECTOR, ".chart canvas, .chart svg"), "vega-embed drew nothing"
    write_log(ws, run.run_id, [4], n_params=run.counts.n_params, mode="a")
    wait(browser, lambda d: curve.get_attribute("data-points") == "4",
         message="the curve did not gain the new checkpoint")
    assert curve.get_attribute("data-last-step") == "4"
    write_status(ws, run.run_id, "finished", step=4)
    wait(browser, lambda d: d.find_element(By.ID, "run-status").text == "finished",
         message="the run's status did not refresh")
    screenshot(browser, "run")


def test_filter_the_runs_table_and_draw_the_figures(browser, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, _, manifests = served
    browser.get(f"{url}/experiments/ba_graph")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")) == 5
    Select(browser.find_element(By.NAME, "f.d_model")).select_by_visible_text("48")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait(browser, lambda d: d.find_element(By.ID, "runs-count").text.startswith("1 of 5"))
    ids = browser.execute_script(
        "return [...document.querySelectorAll('#runs-table tbody tr')].map(tr => tr.dataset.runId)")
    assert ids == [manifests[2].run_id]
    assert "f.d_model=48" in browser.current_url
    browser.get(f"{url}/experiments/ba_graph")
    figures = browser.find_elements(By.CSS_SELECTOR, "figure[data-figure]")
    assert figures
    wait(browser, lambda d: all(f.get_attribute("data-drawn") == "1" or f.find_elements(By.CSS_SELECTOR, ".note")
                                for f in figures), message="figures neither drawn nor explained")
    assert figures[0].get_attribute("data-drawn") == "1"  # loss curves of the ingested runs
    fits = browser.find_element(By.ID, "fits").text
    assert "loss_vs_params" in fits and "[0.4, 0.6]" in fits
    screenshot(browser, "experiment")


def test_named_query_and_its_csv_download(browser, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, ws, _ = served
    browser.get(f"{url}/sql")
    Select(browser.find_element(By.ID, "query-name")).select_by_value("final_loss")
    field = browser.find_element(By.CSS_SELECTOR, 'fieldset[data-query="final_loss"] input[data-param="experiment"]')
    field.send_keys("ba_graph")
    browser.find_element(By.ID, "run-named").click()
    wait(browser, lambda d: d.find_elements(By.ID, "result"))
    expected = run_query(ws, "final_loss", params={"experiment": "ba_graph"})
    assert len(browser.find_elements(By.CSS_SELECTOR, "#result tbody tr")) == len(expected) > 0
    screenshot(browser, "sql")
    browser.find_element(By.ID, "csv-link").click()
    target = browser.downloads / "final_loss.csv"
    wait(browser, lambda d: target.exists() and not list(browser.downloads.glob("*.crdownload")),
         message="the CSV was not downloaded")
    got = pd.read_csv(io.StringIO(target.read_text()))
    assert list(got.columns) == list(expected.columns)
    assert got["run_id"].tolist() == expected["run_id"].tolist()


def test_writing_statement_is_refused_and_files_unchanged(browser, served):
    from selenium.webdriver.common.by import By

    url, ws, _ = served
    before = checksums(ws.root)
    browser.get(f"{url}/sql")
    box = browser.find_element(By.ID, "free-sql")
    box.send_keys("DELETE FROM checkpoints")
    browser.find_element(By.ID, "run-free").click()
    error = wait(browser, lambda d: d.find_elements(By.ID, "sql-error"))[0].text
    assert "may not modify the database" in error
    assert not browser.find_elements(By.ID, "result")
    assert checksums(ws.root) == before
    assert run_query(ws, sql="SELECT count(*) AS n FROM checkpoints")["n"].iloc[0] == 30
