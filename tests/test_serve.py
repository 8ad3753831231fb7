"""``fcis serve``'s app through the framework's test client: every endpoint, the JSON against
``fcis predict``'s predictions.json, bad uploads, limits, the API key and the full queue (503)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import warnings

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # starlette's note that its test client will move to httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402
from serve_helpers import bad_uploads, jpeg_bytes, random_photo  # noqa: E402

from benchmarks.serve_load import CAT_IDS, NAMES, tiny_checkpoint  # noqa: E402
from fcis.cli.main import main  # noqa: E402
from fcis.serve import ModelBackend, ServeConfig, create_app  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    ckpt = tiny_checkpoint(root / "tiny.pt")
    photo = root / "photo.png"
    random_photo(96, 120).save(photo)
    backend = ModelBackend.from_checkpoint(ckpt, device="cpu", score_threshold=0.0)  # threads: leave torch's setting
    return {"root": root, "ckpt": ckpt, "photo": photo, "backend": backend}


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model["backend"], ServeConfig())) as c:
        yield c


def test_health_model_page_and_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    info = client.get("/v1/model").json()
    assert info["name"] == "fcis_resnet18" and info["backend"].startswith("torch")
    assert info["classes"] == [{"id": CAT_IDS[i + 1], "name": n} for i, n in enumerate(NAMES)]
    assert info["input_size"] == {"min_size": 64, "max_size": 80}
    assert info["limits"]["max_image_pixels"] == 40_000_000
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for ref in ("/static/app.js", "/static/style.css", 'id="score-slider"', 'id="class-toggles"', 'id="download"'):
        assert ref in page.text
    assert "http" not in page.text.replace("http-equiv", "")         # nothing fetched from elsewhere
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "rleCounts" in js.text and "http" not in js.text
    assert client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]
    assert client.get("/docs").status_code == 200


def test_predict_json_is_the_cli_coco_results(client, model, tmp_path):
    photo = model["photo"]
    r = client.post("/v1/predict", files={"image": ("photo.png", photo.read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"image", "instances", "model", "time_ms"}
    assert body["image"] == {"width": 120, "height": 96} and body["model"] == "fcis_resnet18"
    instances = body["instances"]
    assert len(instances) > 0
    assert [i["score"] for i in instances] == sorted((i["score"] for i in instances), reverse=True)
    for inst in instances:
        assert set(inst) == {"category_id", "category", "score", "bbox", "segmentation"}
        assert inst["category_id"] in CAT_IDS.values()                       # original ids, not labels
        assert inst["category"] == NAMES[inst["category_id"] - 11]
        mask = mask_utils.decode({"size": inst["segmentation"]["size"],
                                  "counts": inst["segmentation"]["counts"].encode()})
        assert mask.shape == (96, 120)
        x, y, w, h = inst["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 120 + 1e-3 and y + h <= 96 + 1e-3

    assert main(["predict", "--weights", str(model["ckpt"]), str(photo), "--output", str(tmp_path / "cli"),
                 "--score-threshold", "0.0", "--device", "cpu", "--no-progress"]) == 0
    cli = json.loads((tmp_path / "cli" / "predictions.json").read_text())
    assert len(cli) == len(instances)
    for entry, inst in zip(cli, instances):
        assert entry["category_id"] == inst["category_id"] and entry["segmentation"] == inst["segmentation"]
        assert entry["score"] == pytest.approx(inst["score"], abs=1e-6)
        assert entry["bbox"] == pytest.approx(inst["bbox"], abs=1e-4)

    with_overlay = client.post("/v1/predict?overlay=1", files={"image": ("photo.png", photo.read_bytes())}).json()
    overlay = Image.open(io.BytesIO(base64.b64decode(with_overlay["overlay_png"])))
    assert overlay.format == "PNG" and overlay.size == (120, 96)
    assert not np.array_equal(np.asarray(overlay.convert("RGB")), np.asarray(Image.open(photo).convert("RGB")))
    assert with_overlay["instances"] == instances


def test_bad_uploads_get_their_status_and_the_server_goes_on(client, model):
    good = jpeg_bytes(random_photo(96, 120, seed=1))
    for what, files, status, word in bad_uploads(good):
        r = client.post("/v1/predict", files=files)
        assert r.status_code == status, (what, r.text)
        assert word in r.json()["detail"], (what, r.json())
    assert client.post("/v1/predict", data={"image": "a string"}).status_code == 400   # not a file
    assert client.post("/v1/predict", content=b"\xff\xd8", headers={"content-type": "image/jpeg"}).status_code == 400
    r = client.post("/v1/predict", files={"image": ("ok.jpg", good)})
    assert r.status_code == 200 and r.json()["image"] == {"width": 120, "height": 96}


def test_upload_and_pixel_limits(model):
    config = ServeConfig(max_upload_mb=0.05, max_image_pixels=100 * 100)
    with TestClient(create_app(model["backend"], config)) as c:
        big = np.random.default_rng(0).bytes(80_000)
        r = c.post("/v1/predict", files={"image": ("big.bin", big)})
        assert r.status_code == 413 and "MiB" in r.json()["detail"]
        buf = io.BytesIO()
        random_photo(101, 100).save(buf, format="PNG")
        r = c.post("/v1/predict", files={"image": ("tall.png", buf.getvalue())})
        assert r.status_code == 413 and "101" in r.json()["detail"]
        buf = io.BytesIO()
        random_photo(100, 100).save(buf, format="PNG")
        assert c.post("/v1/predict", files={"image": ("ok.png", buf.getvalue())}).status_code == 200


def test_api_key(model):
    with TestClient(create_app(model["backend"], ServeConfig(api_key="s3cret"))) as c:
        for path in ("/healthz", "/readyz", "/", "/static/app.js"):
            assert c.get(path).status_code == 200, path
        for path in ("/v1/model", "/openapi.json"):
            r = c.get(path)
            assert r.status_code == 401 and "API key" in r.json()["detail"]
        assert c.get("/v1/model", headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get("/v1/model", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        photo = model["photo"].read_bytes()
        assert c.post("/v1/predict", files={"image": ("p.png", photo)}).status_code == 401
        assert c.post("/v1/predict", files={"image": ("p.png", photo)},
                      headers={"X-API-Key": "s3cret"}).status_code == 200


class BlockingBackend:
    """Stands in for the model: each prediction waits until ``release`` is set."""

    name, ready = "blocking", True

    def __init__(self) -> None:
        self.release = threading.Event()

    def warm_up(self) -> None:
        pass

    def info(self) -> dict:
        return {"name": self.name}

    def predict(self, image, overlay=False) -> dict:
        assert self.release.wait(30)
        return {"image": {"width": image.width, "height": image.height}, "instances": [], "model": self.name,
                "time_ms": 0.0}


def test_full_queue_answers_503_then_recovers(model):
    backend = BlockingBackend()
    app = create_app(backend, ServeConfig(workers=1, max_queue=1))
    photo = model["photo"].read_bytes()
    with TestClient(app) as c:
        answers: list[int] = []
        post = lambda: answers.append(c.post("/v1/predict", files={"image": ("p.png", photo)}).status_code)  # noqa: E731
        threads = [threading.Thread(target=post) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while app.state.queue.admitted < 2 and time.monotonic() < deadline:       # one running, one waiting
            time.sleep(0.01)
        assert app.state.queue.admitted == 2
        r = c.post("/v1/predict", files={"image": ("p.png", photo)})
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200                                # health checks still answer
        backend.release.set()
        for t in threads:
            t.join(30)
        assert answers == [200, 200]
        assert c.post("/v1/predict", files={"image": ("p.png", photo)}).status_code == 200
        assert app.state.queue.stats()["refused"] == 1


def test_body_limit_without_content_length_stops_the_stream():
    """A chunked upload (no Content-Length) is cut off with 413 once it passes the limit."""
    import asyncio

    from fcis.serve.uploads import BodyLimit

    async def app(scope, receive, send):          # reads the whole body, then answers 200
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def call(chunks: int) -> tuple[int, int]:
        sent, pulled = [], [0]

        async def receive():
            pulled[0] += 1
            return {"type": "http.request", "body": b"x" * 1000, "more_body": pulled[0] < chunks}

        async def send(message):
            sent.append(message)

        await BodyLimit(app, max_bytes=5000)({"type": "http", "headers": []}, receive, send)
        return sent[0]["status"], pulled[0]

    assert asyncio.run(call(5)) == (200, 5)
    assert asyncio.run(call(100)) == (413, 6)      # stopped at the sixth kilobyte, not the hundredth



def test_large_photo_runs_at_max_side_and_results_are_scaled_back(model):
    """A photo over ``max_side`` is run downscaled; the answer is in the photo's own pixels."""
    base = model["backend"]
    backend = ModelBackend(base.predictor, name=base.name, backend=base.backend, input_size=base.input_size,
                           max_side=60)
    photo = Image.open(model["photo"]).convert("RGB")                       # 120 x 96 -> run at 60 x 48
    big = backend.predict(photo)
    small = base.predict(photo.resize((60, 48), Image.BILINEAR))
    assert big["image"] == {"width": 120, "height": 96}
    assert [i["score"] for i in big["instances"]] == [i["score"] for i in small["instances"]]
    for b, s in zip(big["instances"], small["instances"]):
        assert b["bbox"] == pytest.approx([2 * v for v in s["bbox"]], abs=1e-3)
        assert b["segmentation"]["size"] == [96, 120]
        m_big = mask_utils.decode({"size": [96, 120], "counts": b["segmentation"]["counts"].encode()})
        m_small = mask_utils.decode({"size": [48, 60], "counts": s["segmentation"]["counts"].encode()})
        assert np.array_equal(m_big, np.kron(m_small, np.ones((2, 2), dtype=m_small.dtype)))


def test_cli_serve_reports_a_bad_checkpoint(tmp_path, capsys):
    assert main(["serve", "--weights", str(tmp_path / "nope.pt"), "--device", "cpu"]) == 2
    assert "nope.pt" in capsys.readouterr().err
    assert main(["serve", "--help"]) == 0
    assert "--max-image-pixels" in capsys.readouterr().out


def test_a_failing_model_gives_a_json_500_and_the_server_goes_on(model):
    class Failing(BlockingBackend):
        def predict(self, image, overlay=False):
            if image.width == 13:
                raise RuntimeError("boom")
            return super().predict(image, overlay)

    backend = Failing()
    backend.release.set()
    buf = io.BytesIO()
    random_photo(10, 13).save(buf, format="PNG")
    with TestClient(create_app(backend), raise_server_exceptions=False) as c:
        r = c.post("/v1/predict", files={"image": ("p.png", buf.getvalue())})
        assert r.status_code == 500 and "boom" in r.json()["detail"]
        assert c.post("/v1/predict", files={"image": ("p.png", model["photo"].read_bytes())}).status_code == 200
