"""Make docs/serve_page.png: serve a checkpoint, open the page in headless Chromium, upload a
photo, set the score slider, save a screenshot (palette PNG, small).

    python docs/serve_screenshot.py --weights runs/demo/train/best.pt --image runs/demo/data/images/00116.png --score 0.08
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the benchmarks package (run as a file, this script's folder is docs/)
sys.path.insert(0, str(REPO / "tests"))

from test_serve_process import CHROME_FLAGS, CHROMEDRIVER, CHROMIUM  # noqa: E402

from benchmarks.serve_load import ServerProcess  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--score", type=float, default=0.3, help="where to put the score slider")
    parser.add_argument("--out", default=str(REPO / "docs" / "serve_page.png"))
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as tmp, \
            ServerProcess(["--weights", args.weights, "--score-threshold", "0.05", "--device", "cpu"],
                          Path(tmp) / "server.log") as server:
        server.wait_ready(timeout=300)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROME_FLAGS:
            options.add_argument(flag)
        options.add_argument("--window-size=680,600")
        options.add_argument(f"--user-data-dir={tmp}/profile")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            driver.get(server.url + "/")
            wait = WebDriverWait(driver, 120)
            wait.until(lambda d: "classes" in d.find_element(By.ID, "model-info").text)
            driver.find_element(By.ID, "file-input").send_keys(str(Path(args.image).resolve()))
            wait.until(lambda d: d.find_element(By.ID, "overlay").get_attribute("data-shown") is not None)
            driver.execute_script("const s = document.getElementById('score-slider'); s.value = arguments[0];"
                                  "s.dispatchEvent(new Event('input'));", args.score)
            png = driver.get_screenshot_as_png()
        finally:
            driver.quit()
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128)
    image.save(args.out, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KiB, {image.width}x{image.height})")


if __name__ == "__main__":
    main()
