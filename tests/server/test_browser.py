"""The page in a real browser: Debian's headless Chromium, driven by Selenium through Debian's
ChromeDriver, loads the page, types a token and a prompt, generates, sees the live preview
change and the result appear, and the result's PNG carries the parameters typed; in inpaint
mode it uploads an image, paints (and erases part of) a mask with real mouse actions, and the
result carries the painted mask's hash and keeps every unpainted pixel. Screenshots are saved
under the tests' tmp_path."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffuse.pipelines.image_to_image import image_hash
from diffuse.pngmeta import params_from_bytes
from diffuse.shapes.render import render_scene
from diffuse.shapes.scenes import sample_split_scene

webdriver = pytest.importorskip("selenium.webdriver", reason="needs the 'serve' extra")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (installed by .ci/run)",
)
TOKEN = "browser-test-token"
PROMPT = "a large yellow star in the top left"


@pytest.fixture
def browser(tmp_path):
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_the_page_generates_with_live_previews(live, browser, tmp_path):
    server = live(token=TOKEN)
    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 120, poll_frequency=0.05)
    token = browser.find_element(By.ID, "token")
    token.send_keys(TOKEN)
    browser.find_element(By.ID, "prompt").click()  # leaving the field commits the token
    wait.until(lambda d: d.find_element(By.ID, "status").text == "Ready.")
    assert len(Select(browser.find_element(By.ID, "sampler")).options) > 5
    browser.find_element(By.ID, "prompt").send_keys(PROMPT)
    steps = browser.find_element(By.ID, "steps")
    steps.clear()
    steps.send_keys("12")
    seed = browser.find_element(By.ID, "seed")
    seed.clear()
    seed.send_keys("7")
    Select(browser.find_element(By.ID, "sampler")).select_by_value("euler")
    browser.find_element(By.ID, "generate").click()

    preview = browser.find_element(By.ID, "preview")
    sources = set()

    def previews_changed(driver) -> bool:
        src = preview.get_attribute("src")
        if src and src.startswith("data:image/png"):
            sources.add(src)
        return len(sources) >= 2

    wait.until(previews_changed)
    card = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery .result"))[0]
    assert browser.find_element(By.ID, "status").text == "Done."
    assert int(preview.get_attribute("data-count")) >= 2
    image = card.find_element(By.TAG_NAME, "img")
    wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", image) > 0)
    caption = card.find_element(By.TAG_NAME, "figcaption").text
    assert PROMPT in caption and "seed 7" in caption and "12 steps" in caption
    assert card.find_element(By.LINK_TEXT, "Download").get_attribute("download").endswith(".png")
    shot = tmp_path / "page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 1000

    job_id, index = card.get_attribute("data-job"), card.get_attribute("data-index")
    status, headers, png = server.request("GET", f"/api/jobs/{job_id}/images/{index}", token=TOKEN)
    assert status == 200
    params = params_from_bytes(png)
    assert params["prompt"] == PROMPT and params["seed"] == 7
    assert params["steps"] == 12 and params["sampler"] == "euler"
    # the browser shows the very PNG the API serves
    shown = browser.execute_async_script(
        "const done = arguments[1];"
        "fetch(arguments[0]).then(r => r.arrayBuffer())"
        ".then(b => done(Array.from(new Uint8Array(b)))).catch(e => done(String(e)));",
        image.get_attribute("src"),
    )
    assert bytes(shown) == png


def unpack_data_url(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def login(browser, server):
    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 120, poll_frequency=0.05)
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "prompt").click()  # leaving the field commits the token
    wait.until(lambda d: d.find_element(By.ID, "status").text == "Ready.")
    return wait


def test_the_page_inpaints_a_painted_mask(live, browser, pipe, tmp_path):
    server = live(token=TOKEN)
    wait = login(browser, server)
    picture = render_scene(sample_split_scene(3, 0, "heldout"), pipe.size)
    upload = tmp_path / "scene.png"
    Image.fromarray(picture).save(upload)
    browser.find_element(By.ID, "mode-inpaint").click()
    canvas = browser.find_element(By.ID, "mask-canvas")
    assert canvas.is_displayed() and not browser.find_element(By.ID, "strength").is_displayed()
    browser.find_element(By.ID, "image-file").send_keys(str(upload))
    wait.until(lambda d: "image loaded" in d.find_element(By.ID, "image-note").text)

    def painted() -> int:
        return int(canvas.get_attribute("data-painted"))

    # a stroke across the top half with the mouse, then part of it erased
    ActionChains(browser).move_to_element_with_offset(
        canvas, -90, -60
    ).click_and_hold().move_by_offset(60, 0).move_by_offset(60, 10).move_by_offset(
        50, 0
    ).release().perform()
    stroke = painted()
    assert stroke > 0
    browser.find_element(By.ID, "erase").click()
    ActionChains(browser).move_to_element_with_offset(
        canvas, 70, -55
    ).click_and_hold().move_by_offset(15, 0).release().perform()
    assert 0 < painted() < stroke
    browser.find_element(By.ID, "clear-mask").click()
    assert painted() == 0
    browser.find_element(By.ID, "paint").click()
    ActionChains(browser).move_to_element_with_offset(
        canvas, -80, 40
    ).click_and_hold().move_by_offset(120, 0).move_by_offset(0, 30).release().perform()
    assert painted() > 0
    mask = unpack_data_url(browser.execute_script("return maskPng()"))
    mask = mask[..., 0] if mask.ndim == 3 else mask
    assert set(np.unique(mask)) == {0, 255} and int((mask == 255).sum()) == painted()
    assert (mask[pipe.size // 2 :] == 255).any() and not (mask[: pipe.size // 4] == 255).any()

    browser.find_element(By.ID, "prompt").send_keys("a green star in the bottom left")
    steps = browser.find_element(By.ID, "steps")
    steps.clear()
    steps.send_keys("10")
    seed = browser.find_element(By.ID, "seed")
    seed.clear()
    seed.send_keys("5")
    browser.find_element(By.ID, "generate").click()
    preview = browser.find_element(By.ID, "preview")
    sources = set()

    def previews_changed(driver) -> bool:
        src = preview.get_attribute("src")
        if src and src.startswith("data:image/png"):
            sources.add(src)
        return len(sources) >= 2

    wait.until(previews_changed)
    card = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery .result"))[0]
    assert browser.find_element(By.ID, "status").text == "Done."
    image = card.find_element(By.TAG_NAME, "img")
    wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", image) > 0)
    caption = card.find_element(By.TAG_NAME, "figcaption").text
    assert "inpaint" in caption and image_hash(mask) in caption
    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "inpaint.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 1000

    job_id, index = card.get_attribute("data-job"), card.get_attribute("data-index")
    status, _, png = server.request("GET", f"/api/jobs/{job_id}/images/{index}", token=TOKEN)
    assert status == 200
    params = params_from_bytes(png)
    assert params["task"] == "inpaint" and params["seed"] == 5 and params["steps"] == 10
    assert params["mask_hash"] == image_hash(mask)  # the mask painted is the mask used
    assert params["image_hash"] == image_hash(picture)
    result = np.asarray(Image.open(io.BytesIO(png)))
    keep = mask == 0
    assert np.array_equal(result[keep], picture[keep])  # unpainted pixels come back exactly
    assert not np.array_equal(result[~keep], picture[~keep])
