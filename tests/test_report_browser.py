"""The demo's report opened in a real browser: headless Chromium renders every section and image.

Chromium and its driver come from Debian (`apt-get install chromium chromium-driver`, which
`.ci/run` does). Locally without them the test skips, unless CLINSYNTH_REQUIRE_BROWSER=1 (set by
CI) makes their absence a failure. The screenshot is kept in test-artifacts/ (or
$CLINSYNTH_ARTIFACTS) for a human to look at.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

SECTIONS = ("summary", "guarantee", "fidelity", "longitudinal", "utility", "attacks", "about")


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        if os.environ.get("CLINSYNTH_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium or chromedriver is missing: apt-get install chromium chromium-driver")
        pytest.skip("Chromium/chromedriver not installed (apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    binary, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    profile = tempfile.mkdtemp(prefix="clinsynth-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,2000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_report_renders_every_section_and_image(demo_release, browser):
    page = demo_release.files["report"]
    browser.get(Path(page).resolve().as_uri())
    for section in SECTIONS:
        element = browser.find_element("id", section)
        assert element.is_displayed() and element.size["height"] > 20, section
        assert element.find_element("tag name", "h2").text.strip()
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);")
    alts = [alt for alt, *_ in images]
    for wanted in ("marginal", "association", "dimension-wise", "trajectories of sbp", "ROC"):
        assert any(wanted in alt for alt in alts), (wanted, alts)
    broken = [alt for alt, complete, width, height in images if not complete or width < 50 or height < 50]
    assert not broken, f"images that did not render: {broken}"
    summary = browser.find_element("id", "summary").text
    assert "no formal guarantee" in summary and "steward" in summary
    # nothing on the page reaches for the network: it must open offline
    html = Path(page).read_text()
    assert "http://" not in html and "https://" not in html
    artefacts = Path(os.environ.get("CLINSYNTH_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
    artefacts.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1280, max(2000, browser.execute_script("return document.body.scrollHeight")))
    assert browser.save_screenshot(str(artefacts / "report.png"))
