"""A GPU at hand: `dcgan` against the best recipe at equal minutes, the step's throughput at large batches, fid50k's time.

    python benchmarks/gpu.py --data /tmp/facegan-data/celeba89-64 \
        --results benchmarks/results/gpu.json --grids docs/images/gpu      # meant to take under 8 minutes on one GPU
    python benchmarks/gpu.py --data DATA --presets dcgan,facegan           # other recipes to compare, the baseline first
    python benchmarks/gpu.py --report --results benchmarks/results/gpu.json
    python benchmarks/gpu.py --tiny --device cpu --data DATA               # the tests' smoke run: its figures mean nothing

The data is a prepared 64x64 dataset (celeba-89: `facegan prepare ../shared/data/celeba-89 --size 64`), split as
benchmarks/recipes.py splits its sources: a seeded held-out set of --samples images that training never sees, the
rest to train on. Then, in this order, each phase saved to --results as it ends (run the same command again and it
continues; a phase done is not done again):

1. Training. Each preset's speed is timed in turns (recipes.images_per_second), and it trains, with torch.compile on,
   the whole epochs nearest to --minutes at that speed (so that a learning-rate decay ends where the run ends);
   a run still going --grace seconds after its --minutes (compilation and the loop's per-epoch grids, plots and
   checkpoints take time the step's speed does not count) is stopped at its last finished epoch and marked cut.
   Its sampling generator (the EMA when the preset keeps one) is measured against the held-out set: FID, KID,
   precision and recall of --samples images (fid2k). Each run's last grid, from the same fixed noise for every
   preset, is copied to --grids, with a sheet of their first rows side by side.
2. Throughput: images/s of facegan's step (BatchSource, to_model_input, train_step, as benchmarks/throughput.py
   times it) on dcgan's DCGAN-64 at batch 128, 512 and 2,048, against the plain pytorch/examples loop at the same
   batch and the machine's ceiling (a matrix product's FLOP/s over the step's FLOPs), measured in the same run.
3. fid50k's time: 50,000 images of the last run's generator, their Inception features and the statistics against
   the training split's (those computed first, as a run's cache holds them).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from facegan.config import from_preset
from facegan.data import open_prepared
from facegan.files import write_atomically
from facegan.generation import load_generator, sampler
from facegan.metrics.evaluate import evaluate, real_features
from facegan.metrics.inception import load_inception
from facegan.metrics.names import parse_metrics
from facegan.precision import resolve_precision
from facegan.runtime import resolve_device
from facegan.train.batches import BatchSource
from facegan.train.checkpoint import newest_good_checkpoint

BENCHMARKS = Path(__file__).resolve().parent


def _sibling(name: str):
    """Another benchmark script as a module (benchmarks/ is not a package): its pieces, not copies of them."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


recipes, throughput = _sibling("recipes"), _sibling("throughput")

TINY = {"batch_size": 8, "g_width": 8, "d_width": 8, "log_every": 1}  # --tiny: trains in a blink on a CPU, logs each step
# What a results file's phases must share with the sitting that continues it, besides recipes.FIXED.
FIXED = ("compile", "tiny", "batches", "fid_count", "name")


def save(results: dict, path: Path | None) -> None:
    if path is not None:  # after every run and phase: a sitting cut short keeps what it measured
        text = json.dumps(results, indent=1)
        write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def train_presets(results: dict, presets: list[str], data: Path, held_out: Path, work: Path, overrides: dict,
                  args: argparse.Namespace) -> dict:
    """Phase 1: each preset timed in turns, then trained for its planned epochs (cut at the deadline) and measured."""
    name, metrics = results["settings"]["name"], recipes.metric_names(args.samples)
    entry = results["datasets"].get(name)
    if entry is not None and list(entry["epochs"]) != presets:
        raise SystemExit(f"{args.results} planned the presets {', '.join(entry['epochs'])}; continue it with those, "
                         "or start another --results file.")
    if entry is None:
        started = time.perf_counter()
        configs = {p: recipes.preset_config(p, data, work, overrides, seed=0) for p in presets}
        rates = recipes.images_per_second(configs, data, cycles=4 if args.tiny else 12)  # --tiny: 6 batches a preset
        epochs = {p: max(1, round(args.minutes * 60 * r / len(open_prepared(data)))) for p, r in rates.items()}
        entry = results["datasets"][name] = {"images_per_s": rates, "epochs": epochs, "rows": [],
                                             "timing_seconds": time.perf_counter() - started}
        print(f"images/s: {json.dumps({p: round(r, 1) for p, r in rates.items()})}, epochs: {json.dumps(epochs)}",
              file=sys.stderr, flush=True)
        save(results, args.results)
    for preset in presets:
        if any(r["preset"] == preset for r in entry["rows"]):
            continue  # measured in an earlier sitting
        deadline = time.perf_counter() + args.minutes * 60 + args.grace
        row = recipes.run_preset(preset, 0, entry["epochs"][preset], data, held_out, work, metrics, overrides,
                                 abort_fn=lambda state, deadline=deadline: time.perf_counter() > deadline)
        checkpoint = newest_good_checkpoint(Path(row["run_dir"]))[1]
        row["epochs_trained"] = checkpoint["epoch"]
        row["cut"] = checkpoint["epoch"] < entry["epochs"][preset]
        # Every image D was shown, over the whole train() call: compilation and per-epoch maintenance included.
        row["run_images_per_s"] = checkpoint["d_updates"] * checkpoint["config"]["batch_size"] / (row["minutes"] * 60)
        entry["rows"].append(row)
        print(f"{preset}: {json.dumps({k: v for k, v in row.items() if k != 'run_dir'})}", file=sys.stderr, flush=True)
        save(results, args.results)
        if args.grids is not None:
            args.grids.mkdir(parents=True, exist_ok=True)
            shutil.copy(max((Path(row["run_dir"]) / "samples").glob("epoch-*.png")),
                        args.grids / f"recipes-{name}-{preset}.png")
    if args.grids is not None:
        recipes.contact_sheet(args.grids, name, presets, args.grids / f"gpu-{name}.png")
    return entry


def throughput_table(data: Path, device: torch.device, args: argparse.Namespace, width: int) -> dict:
    """Phase 2: plain loop and facegan's step at each batch size (median of --rounds, alternating), and the ceiling."""
    dataset = open_prepared(data)
    source = BatchSource(dataset, device)
    config = from_preset("dcgan", data=str(data), device=str(device), compile=args.compile, g_width=width, d_width=width)
    cuda = device.type == "cuda"
    counted = dataclasses.replace(config, compile="off", batch_size=min(args.batch_sizes))  # FLOPs, counted eagerly
    gflop, facegan_gflop = throughput.step_gflop_per_image(counted, dataset.resolution, device)
    peak, peak_format = throughput.ceiling_gflops(device) if not args.tiny else throughput.ceiling_gflops(device, 0.05, 256)
    rows = []
    for batch in args.batch_sizes:
        if batch > len(dataset):  # --tiny data holds fewer images than the largest batch
            rows.append({"batch": batch, "skipped": f"more than the {len(dataset):,} training images"})
            continue
        # GPU: about 25,600 images a cell, after warm-up steps that compile; CPU: --steps.
        steps, warmup = (max(10, 25_600 // batch), 5) if cuda else (args.steps, 1)
        plain = throughput.PlainLoop(device, width)
        batches = throughput.plain_batches(device, dataset, batch, args.workers)
        plain_rates, facegan_rates = [], []
        for _ in range(args.rounds):
            plain_rates.append(throughput.time_plain(plain, batches, steps, warmup, batch))
            facegan_rates.append(throughput.time_facegan(dataclasses.replace(config, batch_size=batch), source, steps,
                                                         warmup, device))
        rows.append({"batch": batch, "steps": steps, "plain": statistics.median(plain_rates),
                     "facegan": statistics.median(facegan_rates)})
    plain_data = "JPEG DataLoader" if cuda and throughput.CELEBA_JPEGS.is_dir() else "tensors in memory"
    return {"gflop": gflop, "facegan_gflop": facegan_gflop, "peak_gflops": peak, "peak_format": peak_format,
            "plain_data": plain_data, "width": width, "rows": rows}


def fid_time(row: dict, data: Path, device: torch.device, count: int) -> dict:
    """Phase 3: seconds of a metric of `count` images of a run's generator against the training split."""
    metric = recipes.metric_names(count)[0]  # fid50k
    dataset = open_prepared(data)
    network = load_inception(device=device)
    started = time.perf_counter()
    real_features(dataset, count, network)  # all of them when fewer than count; cached, as a run's are after its first
    real_seconds = time.perf_counter() - started
    generator, config = load_generator(row["run_dir"], device)
    started = time.perf_counter()
    value = evaluate(sampler(generator, config.latent_dim), dataset, parse_metrics(metric), device=device,
                     network=network)[metric]
    return {"metric": metric, "preset": row["preset"], "images": count, "reals": min(count, len(dataset)),
            "seconds": time.perf_counter() - started, "real_seconds": real_seconds, "value": value}


def report(results: dict) -> None:
    """Every table of a results file, as far as its phases got."""
    settings = results["settings"]
    name, metrics = settings["name"], recipes.metric_names(settings["samples"])
    where = settings.get("device_name", settings["device"])
    print(f"\n{where}, torch {settings.get('torch', '?')}; compile {settings['compile']}, precision {settings['precision']}")
    entry = results["datasets"].get(name)
    if entry is not None and entry["rows"]:
        recipes.print_table(name, {**settings, **entry}, entry["rows"], metrics)
        print("\nthe same runs: epochs planned at the timed speed, and the speed of the whole train() call "
              "(compilation and each epoch's grid, plots and checkpoint included)\n")
        header = f"{'preset':<12}{'epochs planned':>16}{'epochs':>8}{'wall s':>8}{'images/s timed':>16}{'images/s run':>14}{'cut':>5}"
        print(header)
        print("-" * len(header))
        for row in entry["rows"]:
            print(f"{row['preset']:<12}{entry['epochs'][row['preset']]:>16}{row['epochs_trained']:>8}{row['minutes'] * 60:>8.1f}"
                  f"{entry['images_per_s'][row['preset']]:>16,.1f}{row['run_images_per_s']:>14,.1f}{'yes' if row['cut'] else 'no':>5}")
    table = results.get("throughput")
    if table is not None:
        ceiling = table["peak_gflops"] / table["gflop"]
        size = "DCGAN-64" + (f" (width {table['width']})" if table["width"] != 64 else "")
        print(f"\nthroughput of one training step, {size}; one step costs {table['gflop']:.2f} GFLOP per image (counted "
              f"on the plain loop; facegan's executes {table['facegan_gflop']:.2f}); {table['peak_format']} matrix "
              f"product: {table['peak_gflops']:,.0f} GFLOP/s -> ceiling {ceiling:,.0f} images/s\n")
        header = (f"{'batch':<8}{'steps':>7}{'plain images/s':>16}{'facegan images/s':>18}{'vs plain':>10}"
                  f"{'of ceiling':>12}")
        print(header)
        print("-" * len(header))
        for row in (r for r in table["rows"] if "skipped" not in r):
            print(f"{row['batch']:<8}{row['steps']:>7}{row['plain']:>16,.1f}{row['facegan']:>18,.1f}"
                  f"{row['facegan'] / row['plain']:>9.2f}x{row['facegan'] / ceiling:>11.0%}")
        skipped = "".join(f"; batch {r['batch']}: not timed, {r['skipped']}" for r in table["rows"] if "skipped" in r)
        print(f"(plain: eager fp32 NCHW, {table['plain_data']}; facegan: compile {settings['compile']}, "
              f"precision {settings['precision']}{skipped})")
    timed = results.get("fid_time")
    if timed is not None:
        print(f"\n{timed['metric']} of the {timed['preset']} run's generator against its {timed['reals']:,} training "
              f"images: {timed['seconds']:.1f} s ({timed['images'] / timed['seconds']:,.0f} generated images/s, "
              f"{timed['metric']} {timed['value']:.2f}), after {timed['real_seconds']:.1f} s for the reals' features "
              "(cached from then on)")
    phases = results.get("seconds", {})
    if phases:
        total = sum(phases.values())
        print(f"\nin all: {total / 60:.1f} min ({', '.join(f'{k} {v / 60:.1f}' for k, v in phases.items())})"
              f"{'; over the 8-minute target' if total > 8 * 60 else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="a prepared 64x64 dataset (celeba-89 prepared at --size 64)")
    parser.add_argument("--name", default=None, help="the dataset's name in the tables (default: --data's folder name)")
    parser.add_argument("--presets", default="dcgan,fast",
                        help="presets to train, the baseline first (default dcgan,fast: fast is the measured best recipe)")
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per preset (default 3)")
    # 15 s: the H200 run cut both presets at 3 min + 30 s and took 8.1 minutes in all; 2 x 15 s fewer fit the 8.
    parser.add_argument("--grace", type=float, default=15.0,
                        help="seconds past --minutes after which a run is stopped at its last finished epoch (default 15)")
    parser.add_argument("--samples", type=int, default=2000, help="held-out images, and generated ones, per metric (default 2000)")
    parser.add_argument("--batch-sizes", default="128,512,2048", help="the throughput table's batch sizes")
    parser.add_argument("--rounds", type=int, default=1, help="alternating plain/facegan rounds per batch size (median)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per throughput cell on a CPU (a GPU times ~25,600 images)")
    parser.add_argument("--workers", type=int, default=8, help="the plain loop's DataLoader workers (GPU, CelebA JPEGs at hand)")
    parser.add_argument("--fid-count", type=int, default=50_000, help="images of the timed metric (default 50,000: fid50k)")
    parser.add_argument("--device", default="cuda", help="where everything runs (default cuda)")
    parser.add_argument("--compile", default="on", help="torch.compile of G and D, as `facegan train --compile` (default on)")
    parser.add_argument("--precision", default=None, help="number format (default: a continued file's, else auto's choice)")
    parser.add_argument("--grids", type=Path, default=None, help="copy each run's last grid here, with a sheet of them")
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON file of every phase's results, written as each ends; an existing one is continued")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the split, runs and cached features (default: a temporary one, removed at the end)")
    parser.add_argument("--report", action="store_true", help="only print the tables of --results")
    parser.add_argument("--tiny", action="store_true",
                        help="a smoke run in seconds on a CPU, for the tests: width 8, batch 8, compile off, a 256x256 "
                             "matrix product; give small --samples, --minutes, --batch-sizes and --fid-count too")
    args = parser.parse_args()
    saved = json.loads(args.results.read_text()) if args.results is not None and args.results.exists() else None
    if args.report:
        if saved is None:
            raise SystemExit("--report needs --results FILE, a results file this benchmark wrote.")
        report(saved)
        return
    if args.data is None:
        raise SystemExit("give --data, a prepared 64x64 dataset (e.g. `facegan prepare ../shared/data/celeba-89 --size 64`).")
    full = open_prepared(args.data)
    if full.resolution != 64:
        raise SystemExit(f"{args.data} holds {full.resolution}px images; the plain loop it is compared with is "
                         "DCGAN-64: give data prepared at --size 64.")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.tiny:
        args.compile = "off"  # compiling takes minutes on a CPU
    device = resolve_device(args.device)
    if device.type == "cuda":  # every run and cell builds fresh models: let each compile rather than fall back to eager
        for option in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, option):
                setattr(torch._dynamo.config, option, max(64, getattr(torch._dynamo.config, option)))
    precision = args.precision or (saved["settings"]["precision"] if saved is not None else None)
    settings = {"minutes": args.minutes, "same_epochs": None, "samples": args.samples, "sngan_width": None,
                "device": device.type, "precision": precision or resolve_precision("auto", device).name,
                "threads": torch.get_num_threads(), "compile": args.compile, "tiny": args.tiny,
                "batches": args.batch_sizes, "fid_count": args.fid_count, "name": args.name or args.data.name,
                "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
                f"CPU, {torch.get_num_threads()} thread(s)", "torch": torch.__version__}
    results = recipes.load_results(args.results, saved, settings)
    mismatched = [k for k in FIXED if results["settings"].get(k) != settings[k]]
    if mismatched:
        made = ", ".join(f"{k}={results['settings'].get(k)!r}" for k in mismatched)
        raise SystemExit(f"{args.results} was made with other settings ({made}); give the same ones to continue it, "
                         "or another --results file.")
    phases = results.setdefault("seconds", {})
    work = args.work or Path(tempfile.mkdtemp(prefix="facegan-gpu-"))
    os.environ["FACEGAN_CACHE"] = str(work / "cache")  # the split's real features, cached for this benchmark only
    overrides = {"precision": settings["precision"], "device": device.type, "compile": args.compile,
                 "checkpoint_every_epochs": 0,  # latest.pt only: hundreds of GPU epochs would fill the disk
                 **(TINY if args.tiny else {})}
    presets = args.presets.split(",")
    try:
        started = time.perf_counter()
        split = work / "split"
        if (split / "held-out" / "dataset.json").exists():  # made by an earlier sitting in this --work
            data, held_out = split / "train", split / "held-out"
        else:
            data, held_out = recipes.split_prepared(full, split / "train", split / "held-out", args.samples)
        phases.setdefault("split", time.perf_counter() - started)
        started = time.perf_counter()
        train_presets(results, presets, data, held_out, work, overrides, args)  # skips the runs measured already
        phases["training"] = phases.get("training", 0.0) + time.perf_counter() - started
        save(results, args.results)
        if "throughput" not in results:
            started = time.perf_counter()
            results["throughput"] = throughput_table(data, device, args, TINY["g_width"] if args.tiny else 64)
            phases["throughput"] = time.perf_counter() - started
            save(results, args.results)
        if "fid_time" not in results:
            started = time.perf_counter()
            last = results["datasets"][settings["name"]]["rows"][-1]
            if not Path(last["run_dir"]).exists():
                raise SystemExit(f"{last['run_dir']} is gone (a temporary --work); give --work to continue a results file.")
            results["fid_time"] = fid_time(last, data, device, args.fid_count)
            phases["fid_time"] = time.perf_counter() - started
            save(results, args.results)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report(results)


if __name__ == "__main__":
    main()
