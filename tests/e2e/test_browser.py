"""The web page in headless Chromium (Debian's, driven by Selenium; no browser is downloaded).

Submits an order from the form, sees its stages advance to ``confirmed`` and
both venues' quotes with the chosen route, and the recent-orders table update
over the multiplexed socket. Saves a screenshot; with UPDATE_SCREENSHOT=1 it
replaces docs/web-page.png, the one the README shows.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.support.mesh import ROOT, Mesh

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
SCREENSHOT = ROOT / "docs" / "web-page.png"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    assert not missing, f"{', '.join(missing)} missing: `make browser` installs Debian's chromium and chromium-driver"
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a driver or a browser
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,720"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


class Waiter:
    """WebDriverWait that, on a timeout, says what the page showed."""

    def __init__(self, browser: webdriver.Chrome, timeout: float = 30) -> None:
        self.browser = browser
        self.wait = WebDriverWait(browser, timeout, poll_frequency=0.1)

    def until(self, condition: Callable[[webdriver.Chrome], object]) -> None:
        try:
            self.wait.until(condition)
        except TimeoutException:
            page = {
                element: self.browser.find_element(By.ID, element).get_attribute("outerHTML")
                for element in ("connection", "form-error", "live-id", "stages", "live-status", "recent")
            }
            raise AssertionError(f"page: {page}; console: {self.browser.get_log('browser')}") from None


def test_the_page_submits_an_order_and_watches_it_to_confirmed(
    mesh: Mesh, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    wait = Waiter(browser)
    browser.get(f"{mesh.http}/")
    assert browser.title == "DEX order engine"
    wait.until(lambda d: d.find_element(By.ID, "connection").text == "live")
    wait.until(lambda d: len(Select(d.find_element(By.ID, "token-in")).options) >= 2)
    Select(browser.find_element(By.ID, "token-in")).select_by_visible_text("SOL")
    Select(browser.find_element(By.ID, "token-out")).select_by_visible_text("USDC")
    amount = browser.find_element(By.ID, "amount")
    amount.clear()
    amount.send_keys("2")
    browser.find_element(By.ID, "submit").click()

    wait.until(lambda d: len(d.find_element(By.ID, "live-id").text) == 36)
    order_id = browser.find_element(By.ID, "live-id").text
    confirmed = 'li[data-stage="confirmed"]'
    wait.until(
        lambda d: "done" in cast(str, d.find_element(By.CSS_SELECTOR, f"#stages {confirmed}").get_attribute("class"))
    )
    stages = browser.find_elements(By.CSS_SELECTOR, "#stages li.done")
    assert [li.get_attribute("data-stage") for li in stages] == [
        "pending",
        "routing",
        "building",
        "submitted",
        "confirmed",
    ]
    # Stages that went by before the socket's snapshot get their times from the order's history.
    wait.until(lambda d: all(t.text for t in d.find_elements(By.CSS_SELECTOR, "#stages li.done time")))
    assert "confirmed" in browser.find_element(By.ID, "live-status").text

    venues = [
        row.find_elements(By.TAG_NAME, "td")[0].text
        for row in browser.find_elements(By.CSS_SELECTOR, "#quotes tbody tr")
    ]
    assert sorted(venues) == ["meteora", "raydium"], "both venues' quotes"
    assert browser.find_elements(By.CSS_SELECTOR, "#quotes tr.chosen"), "the chosen venue is marked"
    assert browser.find_element(By.ID, "route").text.startswith("Route: ")

    row = f'#recent tbody tr[data-order-id="{order_id}"]'
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"{row} .status").text == "confirmed")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors

    shot = tmp_path / "web-page.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)
