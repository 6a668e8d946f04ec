"""The console in headless Chromium (Debian's chromium and chromium-driver, driven by Selenium): the
pages render with live data, a value changes without a reload, the lock button works with the token
and is refused without it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from qxedge.testing.console import LivePlant, chromium, chromium_missing

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing())),
]
TOKEN = "browser-token-for-tests-0123"
WAIT_S = 30


@pytest.fixture(scope="module")
def plant() -> Iterator[LivePlant]:
    with LivePlant(token=TOKEN) as live:
        yield live


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


def wait(browser: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT_S, poll_frequency=0.1).until(condition)


def text(browser: Any, css: str) -> str:
    """The element's text, read in one script (the page re-renders under the test's feet)."""
    return str(
        browser.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css
        )
    )


def attribute(browser: Any, css: str, name: str) -> str:
    script = "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : ''"
    return str(browser.execute_script(script, css, name))


def test_the_plant_renders_live_and_updates_without_reload(plant: LivePlant, browser: Any) -> None:
    browser.get(plant.url + "/")
    wait(browser, lambda b: text(b, 'tr[data-asset="line1/pump1"] td.readings').startswith("load_cap"))
    assert text(browser, "#site") == "demo" and text(browser, "#link") == "live"
    assert "mqtt" in text(browser, "#connectors") and "up" in text(browser, "#connectors")
    wait(
        browser, lambda b: "/ 4" in text(b, 'tr[data-asset="line1/pump1"] td.score-cell')
    )  # score / threshold
    before = text(browser, 'tr[data-asset="line1/pump1"] td.readings')
    marker = browser.execute_script("window.notReloaded = true; return window.notReloaded")
    assert marker is True
    wait(browser, lambda b: text(b, 'tr[data-asset="line1/pump1"] td.readings') != before)
    assert browser.execute_script("return window.notReloaded") is True  # the same page: pushed, not reloaded


def test_an_asset_page_plots_its_readings_and_score(plant: LivePlant, browser: Any) -> None:
    browser.get(plant.url + "/#/asset/line1/pump1")
    wait(browser, lambda b: attribute(b, '.chart[data-key="score/anomaly"] polyline', "points"))
    keys = set(
        browser.execute_script("return [...document.querySelectorAll('.chart')].map(c => c.dataset.key)")
    )
    assert {"temp", "power", "vibration", "score/anomaly"} <= keys
    assert attribute(browser, '.chart[data-key="score/anomaly"] line.threshold', "class") == "threshold"
    points = attribute(browser, '.chart[data-key="temp"] polyline', "points")
    wait(browser, lambda b: attribute(b, '.chart[data-key="temp"] polyline', "points") != points)


def lock_with(browser: Any, asset: str, token: str) -> str:
    from selenium.webdriver.common.by import By

    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, f'button.lock[data-asset="{asset}"]'))
    browser.find_element(By.CSS_SELECTOR, f'button.lock[data-asset="{asset}"]').click()
    wait(browser, lambda b: b.find_element(By.ID, "lock-dialog").is_displayed())
    for field, value in (("lock-by", "j.kim"), ("lock-reason", "bearing inspection")):
        browser.find_element(By.ID, field).clear()
        browser.find_element(By.ID, field).send_keys(value)
    field = browser.find_element(By.ID, "lock-token")
    field.clear()
    if token:
        field.send_keys(token)
    browser.execute_script("document.getElementById('flash').hidden = true")
    browser.find_element(By.ID, "lock-confirm").click()
    wait(browser, lambda b: b.find_element(By.ID, "flash").is_displayed())
    return str(browser.find_element(By.ID, "flash").text)


def test_the_lock_button_is_refused_without_the_token_and_works_with_it(
    plant: LivePlant, browser: Any
) -> None:
    browser.get(plant.url + "/")
    refused = lock_with(browser, "line1/fan1", "")
    assert refused.startswith("refused (401)")
    assert plant.agent is not None and "line1/fan1" not in plant.agent.safety.locks
    assert lock_with(browser, "line1/fan1", TOKEN) == "line1/fan1 locked"
    assert plant.agent.safety.locks["line1/fan1"] == "console:j.kim"
    wait(browser, lambda b: "locked by console:j.kim" in text(b, 'tr[data-asset="line1/fan1"] td.lock-state'))
    # the audit trail shows who did it, searchable from the page
    browser.get(plant.url + "/#/audit")
    from selenium.webdriver.common.by import By

    search = browser.find_element(By.NAME, "text")
    search.send_keys("j.kim")
    browser.find_element(By.ID, "audit-search").click()
    wait(browser, lambda b: "requested" in text(b, "#audit tbody") and "locked" in text(b, "#audit tbody"))
