"""The pages in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``: ``make chromium``),
driven by Selenium with the driver's path given, so Selenium Manager never runs (it would download a
driver; nothing can be downloaded here). The server is ``modelfmt serve`` in a subprocess.

``/``: submit the prefilled form, read the prediction, compare it with ``/invocations``' answer.
``/docs``: Swagger UI renders the model's document, every file it loads comes from the server.
Both fail on any error in the browser's console; screenshots go to ``build/test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import requests

from modelfmt.serving.testing import serving

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.timeout(240)


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.isfile(p)]
    if missing:
        message = f"{', '.join(missing)} not installed: run `make chromium` (Debian's chromium and chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)  # make test installs them: under CI their absence is a broken setup
        pytest.skip(message)


@pytest.fixture(scope="module")
def server(sklearn_model_path):
    with serving(sklearn_model_path, workers=1) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1600", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A path that is not there: were Selenium Manager asked for a driver, the test would fail at once.
    os.environ["SE_MANAGER_PATH"] = "/nonexistent/selenium-manager"
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    finally:
        os.environ.pop("SE_MANAGER_PATH", None)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _console_errors(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), path
    return path


def _foreign_resources(driver, base: str) -> list[str]:
    names = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [n for n in names if not n.startswith(base + "/")]


def test_the_form_answers_what_invocations_answers(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    assert browser.title.startswith("elasticnet")
    browser.get_log("browser")  # start counting console errors from the loaded page
    body = browser.find_element(By.ID, "body").get_property("value")
    expected = requests.post(server + "/invocations", data=body, headers={"Content-Type": "application/json"},
                             timeout=30)
    assert expected.status_code == 200, expected.text
    browser.find_element(By.ID, "predict").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "try-form").get_attribute("data-state") == "done")
    answer = WebDriverWait(browser, 5).until(ec.visibility_of_element_located((By.ID, "answer")))
    assert not browser.find_element(By.ID, "error").is_displayed(), browser.find_element(By.ID, "error").text
    assert json.loads(answer.text) == expected.json()
    assert len(expected.json()["predictions"]) == 3
    browser.execute_script("arguments[0].scrollIntoView()", answer)
    _screenshot(browser, "pages-index.png")
    assert _console_errors(browser) == []
    assert _foreign_resources(browser, server) == []


def test_a_bad_body_shows_the_servers_error(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    box = browser.find_element(By.ID, "body")
    box.clear()
    box.send_keys('{"dataframe_split": {"columns": ["age"], "data": [["old"]]}}')
    browser.find_element(By.ID, "predict").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "try-form").get_attribute("data-state") == "done")
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and error.text.split(":")[0] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE"), error.text
    assert not browser.find_element(By.ID, "answer").is_displayed()
    # A 400 is logged by Chromium as a failed resource load: the only console error allowed here.
    assert all("400" in e["message"] for e in _console_errors(browser))


def test_docs_renders_the_models_document_from_the_server_alone(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/docs")
    title = WebDriverWait(browser, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title"))
    assert "elasticnet" in title.text
    operation = WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#operations-default-invocations")
    )
    assert not browser.find_elements(By.CSS_SELECTOR, ".swagger-ui .errors-wrapper")
    # Try it out: Swagger UI sends the document's first example (dataframe_split) to /invocations.
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    WebDriverWait(browser, 10).until(lambda d: operation.find_element(By.CSS_SELECTOR, ".try-out__btn")).click()
    WebDriverWait(browser, 10).until(lambda d: operation.find_element(By.CSS_SELECTOR, ".execute")).click()
    status = WebDriverWait(browser, 30).until(
        lambda d: operation.find_element(By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status")
    )
    assert status.text.strip() == "200"
    shown = operation.find_element(By.CSS_SELECTOR, ".live-responses-table tbody .response-col_description pre")
    expected = requests.get(server + "/openapi.json", timeout=30).json()["paths"]["/invocations"]["post"]
    assert json.loads(shown.text) == expected["responses"]["200"]["content"]["application/json"]["example"]
    browser.execute_script("arguments[0].scrollIntoView()", status)
    _screenshot(browser, "pages-docs.png")
    assert _console_errors(browser) == []
    assert _foreign_resources(browser, server) == []
