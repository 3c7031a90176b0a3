"""The demo page's API through FastAPI's TestClient: PNGs, 400s for bad parameters, 429 past the rate."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
from fastapi.testclient import TestClient

from facegan.sample import sample_array
from facegan.serve import MAX_GRID, PAGE, Model, create_app
from facegan.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, data32) -> Path:
    return train(tiny(tmp_path_factory.mktemp("serve"), data32, epochs=1), progress=False)


@pytest.fixture(scope="module")
def client(run) -> TestClient:
    return TestClient(create_app(Model(run), rate=1000, burst=1000))


def _png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_the_page_and_info(client):
    page = client.get("/")
    assert page.status_code == 200 and page.text == PAGE
    assert client.get("/api/info").json()["conditions"] == []


def test_a_face_is_the_same_as_facegan_samples_for_its_seed(client, run):
    face = _png(client.get("/api/face.png", params={"seed": 5}))
    assert np.array_equal(face, sample_array(run, 1, seed=5, device="cpu", precision="fp32")[0])
    assert not np.array_equal(face, _png(client.get("/api/face.png", params={"seed": 5, "truncation": 0.3})))


def test_mix_ends_at_its_seeds_and_grid_is_bounded(client):
    a, b = _png(client.get("/api/face.png", params={"seed": 1})), _png(client.get("/api/face.png", params={"seed": 2}))
    assert np.abs(_png(client.get("/api/mix.png", params={"a": 1, "b": 2, "t": 0})).astype(int) - a).max() <= 1  # slerp: rounding
    assert np.abs(_png(client.get("/api/mix.png", params={"a": 1, "b": 2, "t": 1})).astype(int) - b).max() <= 1
    middle = _png(client.get("/api/mix.png", params={"a": 1, "b": 2, "t": 0.5}))
    assert not np.array_equal(middle, a) and not np.array_equal(middle, b)
    assert _png(client.get("/api/grid.png", params={"n": 4})).shape == (2 + 2 * 34, 2 + 2 * 34, 3)


@pytest.mark.parametrize("path, params, words", [
    ("/api/face.png", {"seed": "x"}, "seed"),
    ("/api/face.png", {"seed": -1}, "seed"),
    ("/api/face.png", {"truncation": 2}, "truncation"),
    ("/api/mix.png", {"t": "nan"}, "t"),
    ("/api/grid.png", {"n": MAX_GRID + 1}, "n"),
    ("/api/face.png", {"c": "1"}, "c must hold 0 numbers"),
])
def test_bad_parameters_are_a_400_with_one_sentence(client, path, params, words):
    response = client.get(path, params=params)
    assert response.status_code == 400
    message = response.json()["error"]
    assert words in message and message.endswith(".") and "\n" not in message


def test_past_the_rate_a_client_gets_429(run):
    client = TestClient(create_app(Model(run), rate=0.001, burst=3))
    codes = [client.get("/api/info").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]


def test_no_path_from_a_request_is_read(client):
    assert client.get("/api/face.png", params={"seed": "../../etc/passwd"}).status_code == 400
    assert client.get("/static/../pyproject.toml").status_code == 404
    assert client.post("/api/face.png").status_code == 405  # no uploads


def test_the_load_benchmark_runs_at_a_tiny_setting(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "OMP_NUM_THREADS": "1", "FACEGAN_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--tiny", "--requests", "16",
                           "--clients", "2"], capture_output=True, text=True, timeout=240, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    row = done.stdout.splitlines()[-1].split()
    assert row[0] == "16" and row[1] == "2" and row[5] == "0" and int(row[6]) > 0
