"""A real browser: headless Chromium (Debian's chromium and chromium-driver, which .ci/run
installs) opens GraphiQL on a running server, a query is typed into it and run, and the
result appears. Run alone with `pytest -m browser`."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from api.app import create_app
from api.settings import Settings
from tests.server import free_port

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [pytest.mark.browser, pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
    "(.ci/run installs them; apt-get install chromium chromium-driver)")]


@pytest.fixture
def server() -> Iterator[str]:
    port = free_port()
    app = create_app(Settings())  # the embedded store, seeded, as `make serve` runs it
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                       ws="websockets-sansio"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    for _ in range(1000):
        if uv.started:
            break
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(10)


def test_graphiql_runs_a_typed_query(server: str, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(DRIVER)),
                               options=options)
    try:
        browser.get(f"{server}/graphql")
        wait = WebDriverWait(browser, 30)
        editor = wait.until(ready.element_to_be_clickable(
            (By.CSS_SELECTOR, ".graphiql-query-editor .CodeMirror")))
        editor.click()
        typing = browser.switch_to.active_element
        typing.send_keys(Keys.CONTROL, "a")
        typing.send_keys(Keys.DELETE)
        typing.send_keys('{ ImagingStudy(id: "example-xr") { id status numberOfInstances } }')
        browser.find_element(By.CSS_SELECTOR, ".graphiql-execute-button").click()
        wait.until(lambda b: "numberOfInstances" in b.find_element(
            By.CSS_SELECTOR, ".result-window").text)
        result = browser.find_element(By.CSS_SELECTOR, ".result-window").text
    finally:
        browser.quit()
    assert '"id": "example-xr"' in result
    assert '"numberOfInstances": 2' in result
