"""A real sweep's dashboard, opened in a real headless browser with networking off.

Debian's chromium and chromedriver, driven by Selenium; ``tests/setup_browser.sh``
(part of the README's test command) installs them. Without them the test skips on
a developer's machine and fails in CI (``CI`` set), so it never silently vanishes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import run_harness
from dashboard_store import write_ds_cim_sweep

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

# Every panel's points and table rows as the browser laid them out: a point counts
# only if it has a box on screen inside its plot's frame.
_PANELS_JS = """
return Array.from(document.querySelectorAll('.panel')).map(function (p) {
  var pts = Array.from(p.querySelectorAll('circle.pt'));
  var inside = pts.filter(function (c) {
    var r = c.getBoundingClientRect(), f = c.closest('svg').querySelector('rect.frame').getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.left >= f.left - 6 && r.right <= f.right + 6 && r.top >= f.top - 6 && r.bottom <= f.bottom + 6;
  });
  return {kind: p.getAttribute('data-kind'), title: p.querySelector('h2').textContent, points: pts.length,
          shown: inside.length, claims: p.querySelectorAll('.claim').length, rows: p.querySelectorAll('tbody tr').length,
          lines: p.querySelectorAll('path.series-line').length};
});
"""


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and DRIVER):
        message = "chromium/chromedriver missing: run `bash tests/setup_browser.sh`"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run the browser test)")
        pytest.skip(message)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("selenium missing: install the test extra (pip install -e '.[test]')")
        pytest.skip("selenium missing: install the test extra (pip install -e '.[test]')")

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a driver online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'profile'}",
                # Networking off: any request the page made would fail and be logged.
                "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER, log_output=str(tmp_path / "chromedriver.log")), options=options)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                               {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        yield driver
    finally:
        driver.quit()


def _open(driver, page: Path) -> list[dict]:
    driver.get(page.resolve().as_uri())
    assert driver.execute_script("return document.body.getAttribute('data-ready')") == str(
        driver.execute_script("return document.querySelectorAll('.panel').length")), "the page's script did not finish"
    errors = [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
    assert not errors, errors
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0  # fetched nothing
    return driver.execute_script(_PANELS_JS)


def test_quickstart_sweep_dashboard_renders_in_a_browser(browser, workdir):
    from mlflow.tracking import MlflowClient

    result = run_harness(["run", "-m", "+experiment=quickstart", "workload.count=64"], workdir, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Dashboard 'quickstart':" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("quickstart")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`harness.sweep_parent` = 'true'")
    page = Path(client.download_artifacts(parent.info.run_id, "dashboard/quickstart.html", str(workdir)))
    panels = _open(browser, page)
    assert [p["kind"] for p in panels] == ["line", "line", "table"]
    for p in panels[:2]:
        assert p["points"] == 4 and p["shown"] == 4, p  # 2 sparsities x 2 seeds, all inside their frames
        assert p["lines"] >= 2, p
    assert panels[2]["rows"] == 4
    # Hovering a point highlights its run's row in the table (the page's script works).
    # The event goes to the element itself: two seeds' points may sit on top of each other.
    from selenium.webdriver.common.by import By

    point = browser.find_element(By.CSS_SELECTOR, "#panel-0 circle.pt")
    run_id = point.get_attribute("data-run")
    browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('mouseenter'))", point)
    row = browser.find_element(By.CSS_SELECTOR, f'#panel-2 tr[data-run="{run_id}"]')
    assert "hl" in row.get_attribute("class").split()


def test_claims_are_drawn_next_to_the_measured_points(browser, tmp_path, monkeypatch):
    from harness.dashboard import render_dashboard

    monkeypatch.chdir(tmp_path)
    uri, _ = write_ds_cim_sweep(tmp_path)
    page = render_dashboard("ds_cim_accuracy", uri, png=False, progress=False).path
    panels = _open(browser, page)
    accuracy = panels[0]
    # Both variants' 3 points, both variants' lines plus the exact-INT8 reference, and the paper's 6 points.
    assert (accuracy["points"], accuracy["shown"], accuracy["lines"], accuracy["claims"]) == (6, 6, 3, 6), accuracy
    claims = next(p for p in panels if p["kind"] == "claims")
    assert claims["rows"] == 7  # every ds_cim claim some run's setting matches gets a row with a verdict


def test_the_check_fails_on_a_page_that_fetches_or_breaks(browser, tmp_path):
    # The checks above can fail: a page that loads a remote script is caught...
    fetching = tmp_path / "fetching.html"
    fetching.write_text('<html><body data-ready="0"><script src="https://cdn.example.com/plot.js"></script></body></html>')
    with pytest.raises(AssertionError):
        _open(browser, fetching)
    # ... and so is a script error.
    broken = tmp_path / "broken.html"
    broken.write_text('<html><body data-ready="0"><script>undefinedFunction();</script></body></html>')
    with pytest.raises(AssertionError, match="undefinedFunction"):
        _open(browser, broken)
