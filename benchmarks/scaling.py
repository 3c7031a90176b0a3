"""Scaling under torchrun: images/s of the training step on 1 and 2 CPU processes, and on 1..N GPUs where present.

    python benchmarks/scaling.py                # DCGAN-64, a global batch of 64 on the CPU (1,024 on GPUs)
    python benchmarks/scaling.py --tiny         # a smoke run in seconds (the tests'): 32px, width 8, 2 steps

On the CPU it compares, at the same global batch, one process with one thread, one process with
two threads, and two processes (torchrun, gloo) with one thread each: efficiency is images/s over
the processes' count times the one-process-one-thread rate (100% = perfect scaling), and "vs 1 x 2
threads" says whether two processes beat one process that uses both cores itself. On GPUs it runs
1, 2, 4, ... up to every GPU (NCCL), efficiency against N times one GPU (the issue's target is
>= 90% from 1 to 8 GPUs at a global batch of 1,024).

Each setting is its own launch of this script in --worker mode: the step is facegan's own
(build_state, distributed.parallel, train_step) on random uint8 images already on the device, so
what is timed is the step and its all-reduces, not data loading. Rank 0 prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """Time `args.steps` training steps after `args.warmup`; rank 0 prints {"images_per_s": ...}."""
    from facegan import distributed
    from facegan.config import from_preset
    from facegan.runtime import resolve_device
    from facegan.train.batches import to_model_input
    from facegan.train.state import build_state
    from facegan.train.step import train_step

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = from_preset("dcgan", batch_size=args.batch, g_width=args.width, d_width=args.width, device=str(device),
                         compile="off", sync_bn=args.sync_bn)
    with distributed.process_group(device):
        share = distributed.per_rank_batch(args.batch, distributed.world_size())
        state = build_state(config, args.size, device)
        state.parallel = distributed.parallel(state.generator, state.discriminator, device, sync_bn=args.sync_bn)
        images = torch.randint(0, 256, (share, args.size, args.size, 3), dtype=torch.uint8, device=device)
        for step in range(args.warmup + args.steps):
            if step == args.warmup:
                distributed.barrier()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
            train_step(state, to_model_input(images), config)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = distributed.gather(time.perf_counter() - started)
        if distributed.rank() == 0:
            print(json.dumps({"images_per_s": args.batch * args.steps / max(seconds)}))


def measure(processes: int, threads: int, device: str, args: argparse.Namespace) -> float:
    """images/s of one setting, from a fresh launch (torchrun for several processes)."""
    script = [str(Path(__file__).resolve()), "--worker", "--threads", str(threads), "--device", device,
              "--size", str(args.size), "--width", str(args.width), "--batch", str(args.batch),
              "--steps", str(args.steps), "--warmup", str(args.warmup), *(["--sync-bn"] if args.sync_bn else [])]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)] if processes > 1 else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, *launcher, *script], capture_output=True, text=True, env=env, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"{processes} process(es) x {threads} thread(s) failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", type=int, default=64, help="G's and D's width (default 64, DCGAN's)")
    parser.add_argument("--batch", type=int, default=None, help="the global batch (default 64 on the CPU, 1024 on GPUs)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sync-bn", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="32px, width 8, batch 16, 2 steps: a smoke run")
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPUs even where there are some")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tiny:
        args.size, args.width, args.steps, args.warmup = 32, 8, 2, 1
        args.batch = args.batch or 16
    if args.worker:
        return worker(args)

    gpus = 0 if args.cpu_only or not torch.cuda.is_available() else torch.cuda.device_count()
    cpu_batch = args.batch or 64
    print(f"DCGAN-{args.size}, width {args.width}, {args.steps} timed steps after {args.warmup}; "
          f"{'SyncBatchNorm' if args.sync_bn else 'BatchNorm per process'}; {os.cpu_count()} CPU cores, {gpus} GPUs")
    print()
    rows = []
    batch, args.batch = args.batch, cpu_batch
    one = measure(1, 1, "cpu", args)
    two_threads = measure(1, 2, "cpu", args)
    two = measure(2, 1, "cpu", args)
    rows += [(f"CPU, global batch {cpu_batch}", 1, 1, one, 1.0, one / two_threads),
             (f"CPU, global batch {cpu_batch}", 1, 2, two_threads, two_threads / (2 * one), 1.0),
             (f"CPU, global batch {cpu_batch}", 2, 1, two, two / (2 * one), two / two_threads)]
    if gpus:
        args.batch = batch or 1024
        counts = [n for n in (1, 2, 4, 8, 16) if n <= gpus] + ([gpus] if gpus not in (1, 2, 4, 8, 16) else [])
        rates = {n: measure(n, 1, "cuda", args) for n in counts}
        rows += [(f"GPU, global batch {args.batch}", n, 1, rates[n], rates[n] / (n * rates[1]), None)
                 for n in counts]
    header = f"{'setting':<26}  {'processes':>9}  {'threads':>7}  {'images/s':>10}  {'efficiency':>10}  {'vs 1 x 2 threads':>16}"
    print(header)
    print("-" * len(header))
    for setting, processes, threads, rate, efficiency, versus in rows:
        versus_text = f"{versus:.2f}x" if versus is not None else "-"
        print(f"{setting:<26}  {processes:>9}  {threads:>7}  {rate:>10,.1f}  {efficiency:>9.0%}  {versus_text:>16}")
    print("(efficiency: images/s / (processes x threads x the 1 x 1 rate) on the CPU, / (GPUs x one GPU's) on GPUs)")


if __name__ == "__main__":
    main()
