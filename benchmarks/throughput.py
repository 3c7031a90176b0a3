"""Training speed: facegan's step against the plain PyTorch loop, and against the machine's ceiling.

    python benchmarks/throughput.py                 # everything (~10 minutes on a 2-core CPU)
    python benchmarks/throughput.py --quick         # fewer steps, smaller sweep
    python benchmarks/throughput.py --tiny --rounds 1 --steps 1   # a smoke run in seconds (the tests'); no memory table

In one run, on the same DCGAN-64 (the dcgan preset), batch and data:
- plain: an eager fp32 NCHW loop written as pytorch/examples' dcgan is (Sigmoid + BCELoss,
  labels filled per batch, separate real and fake backward passes, `loss.item()` every step).
  On a GPU its data comes from a torch DataLoader over the CelebA JPEG files (decode, crop,
  resize in worker processes), as the seed projects load it; on the CPU from images in memory,
  so that the CPU comparison is of the step alone.
- facegan: the training loop's own pieces (BatchSource, to_model_input, train_step) with the
  default settings (precision auto, channels_last, foreach/fused Adam, compile auto).
- ceiling: a large matrix product in the fastest format (bf16 where native, else fp32) gives
  the machine's GFLOP/s; divided by the FLOPs of one training step per image (counted with
  torch's FlopCounterMode, not assumed) it is the images/s no implementation can beat by much.
Plain and facegan are timed alternately, several rounds, and the median is reported, so that
other load on the machine touches both alike. Then a sweep of batch size and resolution, and
the peak resident memory of training (anonymous vs file-backed pages, in a child process).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from facegan.config import from_preset
from facegan.data import open_prepared
from facegan.data.prepare import prepare
from facegan.precision import fast_bf16
from facegan.runtime import resolve_device
from facegan.train.batches import BatchSource, to_model_input
from facegan.train.state import build_state
from facegan.train.step import train_step

ROOT = Path(__file__).resolve().parents[1]
CELEBA_JPEGS = Path(os.environ.get("FACEGAN_SHARED_DATA", ROOT.parent / "shared" / "data")) / "celeba" / "img_align_celeba"


# ----------------------------------------------------------------------------- the plain loop


class PlainGenerator(nn.Module):
    """pytorch/examples' netG, as the seed projects copy it."""

    def __init__(self, nz: int = 100, ngf: int = 64) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class PlainDiscriminator(nn.Module):
    """pytorch/examples' netD, Sigmoid included."""

    def __init__(self, ndf: int = 64) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1, 1).squeeze(1)


def _plain_init(m: nn.Module) -> None:
    if "Conv" in type(m).__name__:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in type(m).__name__:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class PlainLoop:
    """The body of pytorch/examples' dcgan main loop, one batch at a time."""

    def __init__(self, device: torch.device, width: int = 64) -> None:
        torch.manual_seed(0)
        self.device = device
        self.netG, self.netD = PlainGenerator(ngf=width).to(device), PlainDiscriminator(ndf=width).to(device)
        self.netG.apply(_plain_init)
        self.netD.apply(_plain_init)
        self.criterion = nn.BCELoss()
        self.optD = torch.optim.Adam(self.netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.optG = torch.optim.Adam(self.netG.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def step(self, real: torch.Tensor) -> tuple[float, float]:
        real = real.to(self.device)
        b = real.size(0)
        self.netD.zero_grad()
        label = torch.full((b,), 1.0, device=self.device)
        errD_real = self.criterion(self.netD(real), label)
        errD_real.backward()
        noise = torch.randn(b, 100, 1, 1, device=self.device)
        fake = self.netG(noise)
        label.fill_(0.0)
        errD_fake = self.criterion(self.netD(fake.detach()), label)
        errD_fake.backward()
        self.optD.step()
        self.netG.zero_grad()
        label.fill_(1.0)
        errG = self.criterion(self.netD(fake), label)
        errG.backward()
        self.optG.step()
        return (errD_real + errD_fake).item(), errG.item()  # the examples print these every step


def jpeg_loader(batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    """A DataLoader over CelebA JPEGs: decode, centre-crop 178, resize 64, to [-1, 1] in workers."""
    from PIL import Image

    files = sorted(CELEBA_JPEGS.glob("*.jpg"))

    class Faces(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(files)

        def __getitem__(self, i: int) -> torch.Tensor:
            with Image.open(files[i]) as image:
                image = image.convert("RGB").crop((0, 20, 178, 198)).resize((64, 64), Image.BILINEAR)
            array = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
            return array.float().div(127.5).sub(1.0)

    return torch.utils.data.DataLoader(Faces(), batch_size=batch_size, shuffle=True, num_workers=workers,
                                       drop_last=True, pin_memory=True, persistent_workers=workers > 0)


# ----------------------------------------------------------------------------- measuring


def ceiling_gflops(device: torch.device, seconds: float = 3.0, n: int | None = None) -> tuple[float, str]:
    """GFLOP/s of a large matrix product in the fastest format this device runs natively."""
    dtype = torch.bfloat16 if fast_bf16(device) else torch.float32
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _sync(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best, {torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]


def step_gflop_per_image(config, resolution: int, device: torch.device) -> tuple[float, float]:
    """GFLOP per image of one training step, counted by torch: the plain loop's, and facegan's.

    The plain step is the standard DCGAN arithmetic (the issue's 2.5 GFLOP); facegan's is less,
    because its G update does not compute D's weight gradients, which it would throw away.
    """
    reals = torch.rand(config.batch_size, 3, resolution, resolution, device=device) * 2 - 1
    plain = PlainLoop(device, config.g_width)
    with FlopCounterMode(display=False) as counter:
        plain.step(reals)
    plain_flops = counter.get_total_flops()
    state = build_state(config, resolution, device)
    with FlopCounterMode(display=False) as counter:
        train_step(state, reals.contiguous(memory_format=torch.channels_last), config)
    return plain_flops / config.batch_size / 1e9, counter.get_total_flops() / config.batch_size / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_facegan(config, source: BatchSource, steps: int, warmup: int, device: torch.device) -> float:
    """images/s of facegan's step, data included (BatchSource -> to_model_input -> train_step)."""
    state = build_state(config, source.dataset.resolution, device)
    batches = _forever(source, config.batch_size)
    for _ in range(warmup):
        images, labels = next(batches)
        train_step(state, to_model_input(images), config, labels=labels)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        images, labels = next(batches)
        out = train_step(state, to_model_input(images), config, labels=labels)
    float(out["loss_d"])  # the loop reads losses back only when it logs; once here ends the timing
    _sync(device)
    return steps * config.batch_size / (time.perf_counter() - start)


def _forever(source: BatchSource, batch_size: int):
    epoch = 0
    while True:
        yield from source.epoch(batch_size, seed=0, epoch=epoch)
        epoch += 1


def time_plain(plain: PlainLoop, batches, steps: int, warmup: int, batch_size: int) -> float:
    for _ in range(warmup):
        plain.step(next(batches))
    start = time.perf_counter()
    for _ in range(steps):
        plain.step(next(batches))  # .item() in the step synchronises, as in the examples
    return steps * batch_size / (time.perf_counter() - start)


def plain_batches(device: torch.device, dataset, batch_size: int, workers: int):
    """What the plain loop trains on: JPEGs through a DataLoader on a GPU, in-memory tensors on a CPU."""
    if device.type == "cuda" and CELEBA_JPEGS.is_dir():
        loader = jpeg_loader(batch_size, workers)
        while True:
            yield from loader
    images = torch.from_numpy(dataset.take(np.arange(min(len(dataset), 4096)))).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    images = images.contiguous()
    while True:
        for start in range(0, len(images) - batch_size + 1, batch_size):
            yield images[start : start + batch_size]


_MEMORY_CHILD = """
import sys, torch
from facegan.config import from_preset
from facegan.data import open_prepared
from facegan.train.batches import BatchSource, to_model_input
from facegan.train.state import build_state
from facegan.train.step import train_step

def rss():
    fields = dict(line.split(':', 1) for line in open('/proc/self/status'))
    return int(fields['RssAnon'].split()[0]) / 1024, int(fields['RssFile'].split()[0]) / 1024

data, steps = sys.argv[1], int(sys.argv[2])
dataset = open_prepared(data)
config = from_preset('dcgan', data=data, device='cpu')
state = build_state(config, dataset.resolution, torch.device('cpu'))
source = BatchSource(dataset, torch.device('cpu'))
peak_anon = peak_file = 0.0
for i, (images, labels) in enumerate(source.epoch(128, seed=0, epoch=0)):
    if i == steps:
        break
    train_step(state, to_model_input(images), config, labels=labels)
    anon, file = rss()
    peak_anon, peak_file = max(peak_anon, anon), max(peak_file, file)
print(peak_anon, peak_file)
"""


def memory_row(data: Path, steps: int) -> tuple[float, float]:
    """Peak anonymous and file-backed resident MiB of `steps` training steps at batch 128."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(data), str(steps)], check=True, capture_output=True, text=True)
    anon, file = out.stdout.split()
    return float(anon), float(file)


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=3, help="alternating plain/facegan rounds (median reported)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round (default 6 CPU, 200 GPU)")
    parser.add_argument("--quick", action="store_true", help="fewer steps and a smaller sweep")
    parser.add_argument("--with-compile", action="store_true",
                        help="also time the step with torch.compile forced on (the CPU default is off)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="plain loop's DataLoader workers (GPU)")
    parser.add_argument("--tiny", action="store_true",
                        help="a smoke run in seconds, for the tests: width 8, batch 16, 64 faces per resolution, a sweep "
                             "of batch 16 only, a 256x256 matrix product, no memory table; its figures mean nothing")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    steps = args.steps or (200 if cuda else (3 if args.quick else 6))
    warmup = 20 if cuda else 2
    batch, width, faces = (16, 8, 64) if args.tiny else (128, 64, None)
    work = Path(tempfile.mkdtemp(prefix="facegan-throughput-"))
    data = {r: prepare("synthetic", work / f"synthetic{r}", count=faces or (2048 if r < 128 or not args.quick else 1024),
                       size=r, progress=False) for r in (32, 64, 128)}
    dataset = open_prepared(data[64])
    config = from_preset("dcgan", data=str(data[64]), device=str(device), batch_size=batch, g_width=width, d_width=width)
    source = BatchSource(dataset, device)

    gflop, facegan_gflop = step_gflop_per_image(config, 64, device)
    peak, peak_format = ceiling_gflops(device, 0.05, 256) if args.tiny else ceiling_gflops(device)
    plain = PlainLoop(device, width)
    batches = plain_batches(device, dataset, batch, args.workers)
    plain_rates, facegan_rates = [], []
    for _ in range(args.rounds):
        plain_rates.append(time_plain(plain, batches, steps, warmup, batch))
        facegan_rates.append(time_facegan(config, source, steps, warmup, device))
    plain_rate, facegan_rate = statistics.median(plain_rates), statistics.median(facegan_rates)
    ceiling = peak / gflop

    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    state = build_state(config, 64, device)
    print(f"\nDCGAN-64{f' (width {width})' if width != 64 else ''}, batch {batch}, on {name}; torch {torch.__version__}; facegan precision {state.precision.name}, "
          f"compile {'on' if state.compiled else 'off'}")
    print(f"one DCGAN training step costs {gflop:.2f} GFLOP per image (counted on the plain loop; facegan's step "
          f"executes {facegan_gflop:.2f}); {peak_format} matrix product: {peak:,.0f} GFLOP/s -> ceiling {ceiling:,.0f} images/s\n")
    print(f"{'loop':<44}{'images/s':>10}{'vs plain':>10}{'of ceiling':>12}")
    print("-" * 76)
    plain_data = "JPEG DataLoader" if cuda and CELEBA_JPEGS.is_dir() else "tensors in memory"
    print(f"{'plain eager fp32 NCHW (' + plain_data + ')':<44}{plain_rate:>10,.1f}{1.0:>9.2f}x{plain_rate / ceiling:>11.0%}")
    print(f"{'facegan train_step':<44}{facegan_rate:>10,.1f}{facegan_rate / plain_rate:>9.2f}x{facegan_rate / ceiling:>11.0%}")
    if args.with_compile:
        compiled = from_preset("dcgan", data=str(data[64]), device=str(device), compile="on", batch_size=batch,
                               g_width=width, d_width=width)
        rate = time_facegan(compiled, source, steps, warmup + 2, device)
        print(f"{'facegan train_step, torch.compile on':<44}{rate:>10,.1f}{rate / plain_rate:>9.2f}x{rate / ceiling:>11.0%}")
    print(f"(rounds: plain {', '.join(f'{r:.1f}' for r in plain_rates)}; facegan {', '.join(f'{r:.1f}' for r in facegan_rates)})")

    # How cost grows with batch size and resolution.
    batch_sizes = [batch] if args.tiny else [32, 128, 512] if args.quick else [32, 64, 128, 256, 512, 1024]
    print(f"\nfacegan images/s by batch size and resolution ({steps if cuda else 2} timed steps per cell)\n")
    print(f"{'resolution':<12}" + "".join(f"{b:>9}" for b in batch_sizes))
    print("-" * (12 + 9 * len(batch_sizes)))
    for resolution in (32, 64, 128):
        cells = []
        for b in batch_sizes:
            sweep = from_preset("dcgan", data=str(data[resolution]), device=str(device), batch_size=b, g_width=width,
                                d_width=width)
            sweep_source = BatchSource(open_prepared(data[resolution]), device)
            if b > len(sweep_source.dataset):
                cells.append(float("nan"))
                continue
            cells.append(time_facegan(sweep, sweep_source, steps if cuda else 2, warmup if cuda else 1, device))
        print(f"{resolution:<12}" + "".join(f"{c:>9,.1f}" for c in cells))

    if not cuda and not args.tiny:  # each row is a child process that imports torch: seconds, even when tiny
        small = prepare("synthetic", work / "mem-small", count=2048, progress=False)
        large = prepare("synthetic", work / "mem-large", count=32768, progress=False)
        print("\npeak resident memory of training at batch 128 on the CPU (child process, 16 steps)\n")
        print(f"{'dataset':<28}{'array MiB':>10}{'anonymous MiB':>15}{'file-backed MiB':>17}")
        print("-" * 70)
        for label, path in (("2,048 synthetic faces", small), ("32,768 synthetic faces", large)):
            anon, file = memory_row(path, 16)
            size = open_prepared(path).images.nbytes / 2**20
            print(f"{label:<28}{size:>10,.0f}{anon:>15,.0f}{file:>17,.0f}")
        print("(anonymous memory is the process's own; file-backed pages are the memory-mapped dataset in the page cache)")


if __name__ == "__main__":
    main()
