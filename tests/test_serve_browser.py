"""The demo page in a real browser: Debian's headless Chromium driven by Selenium.

Skipped, with the reason, where /usr/bin/chromium, chromedriver or selenium is missing (.ci/run
installs them). With FACEGAN_SCREENSHOT set, the screenshot is docs/images/serve.png (the README's).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, tiny
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium chromium-driver)", allow_module_level=True)
if shutil.which("chromedriver") is None:
    pytest.skip("no chromedriver on PATH (apt-get install chromium-driver)", allow_module_level=True)
pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install -e '.[serve]')")
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from facegan.serve import Model, create_app
from facegan.train.loop import train

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=900,900")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, data32):
    run = train(tiny(tmp_path_factory.mktemp("browser"), data32, epochs=1), progress=False)
    port = _free_port()
    config = uvicorn.Config(create_app(Model(run)), host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert instance.started, "the server did not start"
    yield f"http://127.0.0.1:{port}/"
    instance.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))
    yield driver
    driver.quit()


def _shown_png(driver) -> bytes:
    """The bytes of the PNG the page shows (its blob URL, read back through fetch)."""
    script = ("const done = arguments[0]; fetch(document.getElementById('face').src).then(r => r.arrayBuffer())"
              ".then(b => { let s = ''; new Uint8Array(b).forEach(x => s += String.fromCharCode(x)); done(btoa(s)); });")
    return base64.b64decode(driver.execute_async_script(script))


def _wait_for_new_image(driver, before: str) -> str:
    WebDriverWait(driver, 20).until(lambda d: (src := d.find_element(By.ID, "face").get_attribute("src")) and src != before)
    return driver.find_element(By.ID, "face").get_attribute("src")


def test_the_page_draws_faces_as_the_seed_and_slider_change(server, browser, tmp_path):
    browser.get(server)
    first_src = _wait_for_new_image(browser, "")
    first = _shown_png(browser)
    image = Image.open(io.BytesIO(first))
    assert image.format == "PNG" and image.size == (32, 32)

    seed = browser.find_element(By.ID, "seed")
    seed.clear()
    seed.send_keys("7")  # each keystroke is an input event: wait for the face of seed 7
    WebDriverWait(browser, 20).until(lambda d: "seed=7" in d.execute_script("return url()"))
    second_src = _wait_for_new_image(browser, first_src)
    second = _shown_png(browser)
    assert second != first

    browser.find_element(By.ID, "walk").click()
    browser.execute_script("const t = document.getElementById('t'); t.value = '0.8'; t.dispatchEvent(new Event('input'));")
    _wait_for_new_image(browser, second_src)
    mixed = Image.open(io.BytesIO(_shown_png(browser)))
    assert mixed.format == "PNG" and mixed.size == (32, 32)
    assert not np.array_equal(np.asarray(mixed), np.asarray(Image.open(io.BytesIO(second))))
    assert browser.find_element(By.ID, "error").text == ""
    assert browser.find_element(By.ID, "download").get_attribute("href").startswith("blob:")

    shot = ROOT / "docs" / "images" / "serve.png" if os.environ.get("FACEGAN_SCREENSHOT") else tmp_path / "serve.png"
    browser.save_screenshot(str(shot))
    assert Image.open(shot).format == "PNG"
