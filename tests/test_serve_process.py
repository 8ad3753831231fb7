"""``fcis serve`` as people use it: a real server process on a free local port (``python -m fcis
serve``), bad uploads, a load test (200 requests from 8 concurrent clients, every answer checked),
and the page driven in headless Chromium (skipped where the browser is absent)."""

from __future__ import annotations

import io
import json
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from pycocotools import mask as mask_utils  # noqa: E402
from serve_helpers import bad_uploads, jpeg_bytes  # noqa: E402

from benchmarks.serve_load import ServerProcess, post_image, run_load, tiny_checkpoint, without_time  # noqa: E402
from fcis.data import make_shapes  # noqa: E402

CHROMIUM = os.environ.get("FCIS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FCIS_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1100,800", "--force-device-scale-factor=1")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    ckpt = tiny_checkpoint(root / "tiny.pt")
    shapes = make_shapes(root / "shapes", num_images=3, seed=2, image_size=(192, 240), max_objects=3,
                         val_fraction=0.0)
    images = sorted(shapes["images"].glob("*.png"))
    args = ["--weights", ckpt, "--score-threshold", "0.0", "--workers", "2", "--threads", "1",
            "--max-queue", "32", "--max-upload-mb", "2", "--device", "cpu"]
    with ServerProcess(args, root / "server.log") as proc:
        proc.wait_ready(timeout=120)
        yield {"proc": proc, "url": proc.url, "images": images, "root": root}


def test_real_server_answers_bad_uploads_and_keeps_serving(server):
    url = server["url"]
    good = jpeg_bytes(Image.open(server["images"][0]))
    with httpx.Client(timeout=60) as client:
        assert client.get(f"{url}/healthz").json() == {"status": "ok"}
        assert client.get(f"{url}/v1/model").json()["classes"][0] == {"id": 11, "name": "circle"}
        for what, files, status, word in bad_uploads(good):
            r = client.post(f"{url}/v1/predict", files=files)
            assert r.status_code == status, (what, r.text)
            assert word in r.json()["detail"], (what, r.text)
            assert client.get(f"{url}/healthz").status_code == 200, what
        r = client.post(f"{url}/v1/predict", files={"image": ("big.bin", b"\0" * (3 * 2**20))})
        assert r.status_code == 413
        status, body, _ = post_image(client, url, good, "good.jpg")
        assert status == 200 and body["image"] == {"width": 240, "height": 192} and body["instances"]
    assert server["proc"].proc.poll() is None


def test_load_200_requests_from_8_clients_all_correct(server):
    url = server["url"]
    payloads = [(p.name, p.read_bytes()) for p in server["images"]]
    with httpx.Client(timeout=60) as client:
        reference = [without_time(post_image(client, url, data, name)[1]) for name, data in payloads]
    assert all(ref["instances"] for ref in reference)
    assert len({json.dumps(ref, sort_keys=True) for ref in reference}) == len(reference)  # answers tell images apart
    results = run_load(url, payloads, clients=8, requests=200)
    assert len(results) == 200
    assert [r["status"] for r in results] == [200] * 200
    wrong = [r["index"] for r in results if without_time(r["body"]) != reference[r["image"]]]
    assert not wrong, f"requests {wrong[:10]} got another answer than their image sent alone"
    assert server["proc"].proc.poll() is None
    with httpx.Client(timeout=10) as client:
        queue = client.get(f"{url}/v1/model").json()["queue"]
    assert queue["refused"] == 0 and queue["admitted"] == 0 and queue["served"] >= 200


# --- the page in headless Chromium ------------------------------------------------------------------

def _browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"headless Chromium not found ({CHROMIUM}, {CHROMEDRIVER}); apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads"),
                                              "download.prompt_for_download": False})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _canvas_pixels(driver) -> np.ndarray:
    from selenium.webdriver.common.by import By

    png = driver.find_element(By.ID, "overlay").screenshot_as_png
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


@pytest.mark.browser
def test_page_in_headless_chromium(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    photo_path = server["images"][0]
    photo = np.asarray(Image.open(photo_path).convert("RGB")).astype(np.int16)
    with httpx.Client(timeout=60) as client:
        answer = post_image(client, server["url"], photo_path.read_bytes(), photo_path.name)[1]
    instances = answer["instances"]
    driver = _browser(tmp_path)
    try:
        driver.get(server["url"] + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: "fcis_resnet18" in d.find_element(By.ID, "model-info").text)
        assert not driver.find_element(By.ID, "key-row").is_displayed()          # no key needed here
        driver.find_element(By.ID, "file-input").send_keys(str(photo_path))
        canvas = driver.find_element(By.ID, "overlay")
        wait.until(lambda d: canvas.get_attribute("data-shown") is not None)
        assert int(canvas.get_attribute("data-shown")) == len(instances)
        assert f"{len(instances)} of {len(instances)} instances" in driver.find_element(By.ID, "status").text
        assert (canvas.size["width"], canvas.size["height"]) == (240, 192)      # shown 1:1
        shot_all = _canvas_pixels(driver)
        driver.save_screenshot(str(tmp_path / "page.png"))

        # masks only: the changed pixels are the union of the instances' RLE masks
        driver.find_element(By.ID, "show-boxes").click()
        changed = np.abs(_canvas_pixels(driver) - photo).max(-1) > 8
        union = np.zeros(photo.shape[:2], dtype=bool)
        for inst in instances:
            seg = inst["segmentation"]
            union |= mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
        iou = (changed & union).sum() / max(1, (changed | union).sum())
        assert union.any() and iou > 0.9, f"overlay pixels vs the masks: IoU {iou:.3f}"
        driver.find_element(By.ID, "show-boxes").click()

        # the score slider to its top: nothing above it, the photo alone (no new request)
        slider = driver.find_element(By.ID, "score-slider")
        slider.send_keys(Keys.END)
        wait.until(lambda d: canvas.get_attribute("data-shown") == "0")
        assert np.abs(_canvas_pixels(driver) - photo).max() <= 8
        slider.send_keys(Keys.HOME)
        wait.until(lambda d: canvas.get_attribute("data-shown") == str(len(instances)))
        assert np.abs(_canvas_pixels(driver) - shot_all).max() <= 8

        # toggle the class with the most instances off
        ids = [inst["category_id"] for inst in instances]
        top = max(set(ids), key=ids.count)
        box = driver.find_element(By.CSS_SELECTOR, f'#class-toggles input[data-category-id="{top}"]')
        box.click()
        wait.until(lambda d: canvas.get_attribute("data-shown") == str(len(ids) - ids.count(top)))
        toggled = _canvas_pixels(driver)
        assert (np.abs(toggled - shot_all).max(-1) > 8).sum() > 50
        box.click()
        wait.until(lambda d: canvas.get_attribute("data-shown") == str(len(instances)))

        # download the JSON: the API's answer
        driver.find_element(By.ID, "download").click()
        target = tmp_path / "downloads" / f"{photo_path.stem}.json"
        deadline = time.monotonic() + 20
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert without_time(json.loads(target.read_text())) == without_time(answer)

        # an error is shown, not swallowed
        bad = tmp_path / "notes.txt"
        bad.write_text("not a photo")
        driver.find_element(By.ID, "file-input").send_keys(str(bad))
        wait.until(lambda d: "400" in d.find_element(By.ID, "status").text)
    finally:
        driver.quit()
    if os.environ.get("FCIS_KEEP_SCREENSHOT"):
        shutil.copy(tmp_path / "page.png", os.environ["FCIS_KEEP_SCREENSHOT"])
