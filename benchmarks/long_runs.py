"""Longer runs, where the data runs out (issue 18, item 3): recipes trained for hours of their own CPU time.

    # dcgan, fast and long (issue 18's three), 2 CPU-hours each, side by side on one thread each,
    # FID-1k against the held-out 1,000
    python benchmarks/long_runs.py --work /tmp/facegan-long
    # any recipes: a preset, named, with settings of its own (TrainConfig keys, as `facegan train` takes them)
    python benchmarks/long_runs.py --work /tmp/facegan-long --recipe dcgan --recipe fast \
        --recipe best=fast --set best.augment=color,translation --set best.ema_kimg=10
    # one at a time on both cores instead
    python benchmarks/long_runs.py --work /tmp/facegan-long --jobs 1 --threads 2
    # what has run so far: the table and the plot, training nothing (and the runs' last grids, side by side)
    python benchmarks/long_runs.py --work /tmp/facegan-long --report --sheet /tmp/facegan-long/grids.png

Each recipe is one `facegan train` process (`python -m facegan train`, torch's threads set by
OMP_NUM_THREADS) on the 7,000 training images of the celeba-89 split (benchmarks/recipes.py's
`split_dataset`, 1,000 held out), with --max-cpu-minutes (60 x --hours): it stops at the first epoch
end where its own CPU time (user + system, summed over its resumes) has reached the budget, so runs
sharing the machine compare fairly; --epochs (default 10,000) only caps it. Every --eval-every
epochs, and always at the stop, it measures --evaluate against the held-out images (--eval-data),
into its metrics.jsonl, with that checkpoint's CPU seconds (cpu_s). The CPU time includes these
measurements: every recipe pays the same for them at the same --eval-every.

A learning-rate schedule decays over --epochs, not over the budget (facegan's linear decay in the
second half never starts at 10,000 epochs): give a recipe its own epochs (--set NAME.epochs=N) to
make it decay within the budget.

Resumable: WORK/long-runs.json (--results) records each recipe's preset, settings, run directory
(under WORK/runs/NAME) and state, rewritten at every change, and what each run measured (its table
row and curve) at the end of a sitting and at every --report, so a results file outlives its run
folders. Run the same command again and each unfinished run continues with `facegan train --resume`
from its newest checkpoint; finished runs are skipped, unless --hours is now larger, when they train
on to the new budget. Ctrl-C or SIGTERM stops the runs at their next step, each saving a checkpoint
to continue from.

It prints a table (recipe, state, CPU minutes, G steps, images/s of wall time and of CPU time, the
first, best and last value of the first --evaluate metric) and writes the metric over CPU minutes,
one line per recipe, to WORK/long-runs-METRIC.png (--plot).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import facegan
from facegan.cli import build_parser
from facegan.config import TrainConfig, from_preset
from facegan.errors import FaceganError
from facegan.files import write_atomically

HERE = Path(__file__).resolve().parent
FIXED = ("data", "eval_data", "evaluate", "eval_every")  # what a results file's runs share with those that continue it
POLL_S = 2.0


# ----------------------------------------------------------------------------- recipes


@dataclasses.dataclass
class Recipe:
    """A name, the preset it starts from and its own settings (TrainConfig keys, values as text)."""

    name: str
    preset: str
    settings: dict[str, str]

    def flags(self) -> list[str]:
        """The settings as `facegan train` options."""
        return settings_flags(self.settings)


def parse_recipes(specs: list[str], sets: list[str]) -> list[Recipe]:
    """`--recipe NAME=PRESET` (or `PRESET`, named after it) and `--set NAME.KEY=VALUE`, checked as `facegan train`
    would check them; SystemExit names what is wrong."""
    recipes: dict[str, Recipe] = {}
    for spec in specs:
        name, _, preset = spec.partition("=") if "=" in spec else (spec, "", spec)
        if not name or not preset or name in recipes or not name.replace("-", "").replace("_", "").isalnum():
            raise SystemExit(f"--recipe {spec!r}: give NAME=PRESET or PRESET, each name once (letters, digits, - and _).")
        recipes[name] = Recipe(name, preset, {})
    for item in sets:
        target, _, value = item.partition("=")
        name, _, key = target.partition(".")
        if not value or name not in recipes or not key:
            raise SystemExit(f"--set {item!r}: give NAME.KEY=VALUE for a NAME of --recipe ({', '.join(recipes)}).")
        recipes[name].settings[key] = value
    for recipe in recipes.values():
        check(recipe)
    return list(recipes.values())


def settings_flags(settings: dict[str, str]) -> list[str]:
    """TrainConfig keys and values as `facegan train` options (its flag names, --x/--no-x for switches)."""
    fields = {field.name: field for field in dataclasses.fields(TrainConfig)}
    flags: list[str] = []
    for key, value in settings.items():
        field = fields.get(key)
        if field is None or "help" not in field.metadata:
            options = sorted(name for name, f in fields.items() if "help" in f.metadata)
            raise SystemExit(f"--set ...{key}: not a `facegan train` option; the keys are {', '.join(options)}.")
        flag = field.metadata.get("flag", "--" + key.replace("_", "-"))
        if field.metadata.get("type") == "bool":
            if value.lower() not in ("on", "off", "true", "false", "1", "0", "yes", "no"):
                raise SystemExit(f"--set ...{key}={value}: a switch is on or off.")
            flags.append(flag if value.lower() in ("on", "true", "1", "yes") else "--no-" + flag[2:])
        else:
            flags += [flag, value]
    return flags


def check(recipe: Recipe) -> TrainConfig:
    """The recipe's configuration as `facegan train` would make it, so a mistake ends the benchmark before any run."""
    flags = recipe.flags()
    try:
        args = build_parser().parse_args(["train", "--preset", recipe.preset, *flags])
    except SystemExit:  # argparse has printed why
        raise SystemExit(f"recipe {recipe.name}: `facegan train` refuses its settings (above).") from None
    options = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig) if "help" in field.metadata}
    try:
        return from_preset(recipe.preset, **options)
    except FaceganError as error:
        raise SystemExit(f"recipe {recipe.name}: {error}") from None


# ----------------------------------------------------------------------------- commands and plans


def train_command(recipe: Recipe, entry: dict, settings: dict, minutes: float) -> list[str]:
    """The `facegan train` command that starts the recipe's run, or resumes it from its run directory."""
    measure = ["--eval-every", str(settings["eval_every"]), "--eval", settings["evaluate"], "--eval-data", settings["eval_data"],
               "--max-cpu-minutes", f"{minutes:g}", "--quiet"]
    command = [sys.executable, "-m", "facegan", "train"]
    if entry.get("run_dir"):
        return [*command, "--resume", entry["run_dir"], *measure]
    return [*command, "--preset", recipe.preset, "--data", settings["data"], "--runs-dir", entry["runs_dir"],
            "--epochs", str(settings["epochs"]), "--device", settings["device"], *measure, *recipe.flags()]


def next_action(entry: dict, minutes: float) -> str:
    """What a recipe's run needs: "start" (no run directory yet), "resume" (unfinished, or finished on a smaller
    budget than `minutes`) or "skip" (finished on this budget or a larger one)."""
    if not entry.get("run_dir"):
        return "start"
    if entry.get("state") == "done" and entry.get("budget_minutes", 0) >= minutes:
        return "skip"
    return "resume"


def found_run_dir(runs_dir: Path, resumable: bool = False) -> Path | None:
    """The newest run directory `facegan train --runs-dir runs_dir` made (each recipe has a runs folder of its own);
    with `resumable`, the newest that has a checkpoint to resume from."""
    found = sorted(p for p in runs_dir.glob("[0-9][0-9][0-9][0-9][0-9]-*") if (p / "config.json").is_file()) if runs_dir.is_dir() else []
    if resumable:
        found = [p for p in found if any((p / "checkpoints").glob("*.pt"))]
    return found[-1] if found else None


def load_results(path: Path, settings: dict, recipes: list[Recipe]) -> dict:
    """The results file to continue (refusing one made with other settings or other recipes of the same name), or new ones."""
    results = json.loads(path.read_text()) if path.exists() else {"settings": settings, "runs": {}}
    mismatched = [k for k in FIXED if results["settings"].get(k) != settings[k]]
    if mismatched:
        made = ", ".join(f"{k}={results['settings'].get(k)!r}" for k in mismatched)
        raise SystemExit(f"{path} was made with other settings ({made}); give the same ones to continue it, or another --results.")
    for recipe in recipes:
        entry = results["runs"].get(recipe.name)
        if entry is not None and (entry["preset"], entry["settings"]) != (recipe.preset, recipe.settings):
            raise SystemExit(f"{path} ran {recipe.name} as {entry['preset']} with {entry['settings']}; name this recipe "
                             "otherwise, or give it the same preset and settings.")
    return results


def save(path: Path, results: dict) -> None:
    text = json.dumps(results, indent=1) + "\n"
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


# ----------------------------------------------------------------------------- running


def run_all(recipes: list[Recipe], results: dict, path: Path, minutes: float, work: Path, jobs: int, threads: int) -> None:
    """Train every recipe that needs it, `jobs` processes at a time, recording each change in the results file."""
    settings = results["settings"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "FACEGAN_CACHE": str(work / "cache"),  # the held-out features, computed once for every run
           # the facegan this script imports, for its children too (a worktree's src/, or an installed one)
           "PYTHONPATH": os.pathsep.join(p for p in (str(Path(facegan.__file__).resolve().parents[1]),
                                                     os.environ.get("PYTHONPATH", "")) if p)}
    waiting = []
    for recipe in recipes:
        entry = results["runs"].setdefault(recipe.name, {"preset": recipe.preset, "settings": recipe.settings,
                                                         "runs_dir": str(work / "runs" / recipe.name), "sittings": 0})
        # The run to continue: the newest with a checkpoint (a sitting may have been stopped before it recorded its
        # run, and a run stopped before its first checkpoint has to start again).
        found = found_run_dir(Path(entry["runs_dir"]), resumable=True)
        entry["run_dir"] = str(found) if found is not None else None
        action = next_action(entry, minutes)
        print(f"{recipe.name}: {'finished, skipped' if action == 'skip' else action}", file=sys.stderr, flush=True)
        if action != "skip":
            waiting.append(recipe)
    save(path, results)
    running: dict[str, subprocess.Popen] = {}
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def stop_children(signum, frame) -> None:  # each saves latest.pt at its next step and exits; none starts after
        waiting.clear()
        for process in running.values():
            process.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop_children)
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                recipe = waiting.pop(0)
                entry = results["runs"][recipe.name]
                command = train_command(recipe, entry, settings, minutes)
                with open(logs / f"{recipe.name}.log", "a") as log:
                    log.write(f"\n$ {' '.join(command)}\n")
                    log.flush()
                    running[recipe.name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
                entry.update(state="running", budget_minutes=minutes, sittings=entry["sittings"] + 1)
                save(path, results)
            time.sleep(POLL_S)
            for name, process in list(running.items()):
                entry = results["runs"][name]
                if not entry.get("run_dir") and (found := found_run_dir(Path(entry["runs_dir"]))) is not None:
                    entry["run_dir"] = str(found)
                    save(path, results)
                if process.poll() is None:
                    continue
                del running[name]
                if not entry.get("run_dir") and (found := found_run_dir(Path(entry["runs_dir"]))) is not None:
                    entry["run_dir"] = str(found)
                entry["state"] = "done" if process.returncode == 0 else "stopped" if process.returncode in (130, 143) else "failed"
                entry["last_exit"] = process.returncode
                save(path, results)
                print(f"{name}: {entry['state']} (exit {process.returncode}; log {logs / f'{name}.log'})", file=sys.stderr, flush=True)
    except KeyboardInterrupt:  # a terminal's Ctrl-C reached the children too (a second changes nothing): wait for their checkpoints
        for name, process in running.items():
            process.send_signal(signal.SIGINT)
            process.wait()
            results["runs"][name].update(state="stopped", last_exit=process.returncode)
        save(path, results)
        raise SystemExit("stopped; run the same command again to continue.") from None
    finally:
        signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------- reporting


def summary(entry: dict, settings: dict) -> dict:
    """What a recipe's run reached: CPU minutes and G steps (its newest checkpoint), speeds, and the metric's values."""
    from facegan.plots import metric_curve, read_records
    from facegan.train.checkpoint import newest_good_checkpoint

    row = {"state": entry.get("state", "-"), "cpu_minutes": None, "steps": None, "images_per_s": None,
           "images_per_cpu_s": None, "first": None, "best": None, "last": None, "curve": ([], [])}
    run = Path(entry["run_dir"]) if entry.get("run_dir") else None
    found = newest_good_checkpoint(run) if run is not None and (run / "checkpoints").is_dir() else None
    if found is None:  # the run's folder is gone (a /tmp cleared between sittings): what was recorded of it
        return {**row, **entry.get("measured", {}), "state": row["state"]}
    checkpoint = found[1]
    cpu_s = checkpoint.get("cpu_s") or None
    row.update(cpu_minutes=cpu_s / 60 if cpu_s else None, steps=checkpoint["step"],
               images_per_cpu_s=checkpoint["d_updates"] * checkpoint["config"]["batch_size"] / cpu_s if cpu_s else None)
    if (run / "stats.jsonl").is_file():
        rates = [r["images_per_s"] for r in read_records(run / "stats.jsonl")[0] if "images_per_s" in r]
        row["images_per_s"] = statistics.median(rates) if rates else None
    if (run / "metrics.jsonl").is_file():
        key = settings["evaluate"].split(",")[0]
        records = [r for r in read_records(run / "metrics.jsonl")[0] if r.get("dataset") == settings["eval_data"]]
        minutes, values = metric_curve(records, key, "cpu-minutes")
        if len(values):
            row.update(first=float(values[0]), best=float(min(values)), last=float(values[-1]),
                       curve=(minutes.tolist(), values.tolist()))
    return row


def print_table(results: dict, names: list[str]) -> dict[str, dict]:
    """The table of the named recipes' runs; their summaries, by name."""
    settings = results["settings"]
    key = settings["evaluate"].split(",")[0]
    rows = {name: summary(results["runs"][name], settings) for name in names}
    print(f"\n{settings['data']}: each recipe for its CPU budget (user + system of its own process), {key} against "
          f"{settings['eval_data']} every {settings['eval_every']} epochs and at the stop; lower is better\n")
    header = (f"{'recipe':<16}{'preset':<10}{'state':<9}{'budget min':>11}{'CPU min':>9}{'G steps':>9}{'img/s':>8}"
              f"{'img/CPU s':>10}{'first ' + key:>14}{'best ' + key:>14}{'last ' + key:>14}")
    print(header)
    print("-" * len(header))

    def cell(value, width: int, form: str) -> str:
        return f"{'-' if value is None else format(value, form):>{width}}"

    for name, row in rows.items():
        entry = results["runs"][name]
        print(f"{name:<16}{entry['preset']:<10}{row['state']:<9}{cell(entry.get('budget_minutes'), 11, ',.2f')}"
              f"{cell(row['cpu_minutes'], 9, ',.2f')}{cell(row['steps'], 9, ',')}{cell(row['images_per_s'], 8, ',.1f')}"
              f"{cell(row['images_per_cpu_s'], 10, ',.1f')}{cell(row['first'], 14, '.2f')}{cell(row['best'], 14, '.2f')}"
              f"{cell(row['last'], 14, '.2f')}")
    return rows


def record(results: dict, rows: dict[str, dict]) -> None:
    """Keep each run's summary in the results file, so its table and plot outlive the run's folder."""
    for name, row in rows.items():
        if row["steps"] is not None:
            results["runs"][name]["measured"] = {k: v for k, v in row.items() if k != "state"}


def plot(rows: dict[str, dict], key: str, out: Path) -> Path | None:
    """The metric over CPU minutes, a line per recipe; None when nothing has been measured yet."""
    import numpy as np

    from facegan.plots import plot_runs

    curves = {name: (np.asarray(row["curve"][0], float), np.asarray(row["curve"][1], float)) for name, row in rows.items()
              if row["curve"][0]}
    return plot_runs(curves, key, out, x="cpu-minutes") if curves else None


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", action="append", default=None, metavar="NAME=PRESET",
                        help="a recipe: a preset, named (default: dcgan, fast and long); repeat for more")
    parser.add_argument("--set", action="append", default=[], metavar="NAME.KEY=VALUE",
                        help="a recipe's own setting, a TrainConfig key as `facegan train` takes it, e.g. best.ema_kimg=10")
    parser.add_argument("--hours", type=float, default=2.0, help="CPU hours of each run's own process (default 2)")
    parser.add_argument("--eval-every", type=int, default=5, help="epochs between measurements (default 5; also at the stop)")
    parser.add_argument("--evaluate", default="fid1k", help="what each measurement measures (default fid1k)")
    parser.add_argument("--dataset", default="celeba-89", help="split with benchmarks/recipes.py (default celeba-89)")
    parser.add_argument("--held-out", type=int, default=1000, help="images of --dataset held out to measure with (default 1000)")
    parser.add_argument("--data", type=Path, default=None, help="a prepared training set instead of --dataset's split")
    parser.add_argument("--eval-data", type=Path, default=None, help="with --data: the prepared held-out set")
    parser.add_argument("--epochs", type=int, default=10_000, help="each run's cap of epochs, past the budget (default 10000)")
    parser.add_argument("--jobs", type=int, default=None, help="runs at once (default: every recipe, side by side)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run (default 1)")
    parser.add_argument("--device", default="cpu", help="where each run trains (default cpu)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/facegan-long-runs"),
                        help="folder of the split, the runs, their logs and the cached held-out features (default /tmp/facegan-long-runs)")
    parser.add_argument("--results", type=Path, default=None, help="the results file (default WORK/long-runs.json)")
    parser.add_argument("--plot", type=Path, default=None, help="the plot (default WORK/long-runs-METRIC.png)")
    parser.add_argument("--report", action="store_true", help="only print the table and draw the plot of --results")
    parser.add_argument("--sheet", type=Path, default=None,
                        help="with --report: a picture of the first two rows of each run's last grid (the same fixed noise)")
    args = parser.parse_args(argv)
    if (args.data is None) != (args.eval_data is None):
        parser.error("--data and --eval-data go together: a training set and its held-out set.")
    if args.hours <= 0 or args.eval_every < 1 or args.threads < 1 or (args.jobs is not None and args.jobs < 1):
        parser.error("--hours, --eval-every, --threads and --jobs must be positive.")
    work = args.work.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    path = args.results or work / "long-runs.json"
    key = args.evaluate.split(",")[0]
    out = args.plot or work / f"long-runs-{key}.png"
    if args.report:
        if not path.exists():
            raise SystemExit(f"--report needs {path}, a results file this benchmark wrote.")
        results = json.loads(path.read_text())
        rows = print_table(results, list(results["runs"]))
        record(results, rows)
        save(path, results)
        drawn = plot(rows, results["settings"]["evaluate"].split(",")[0], out)
        print(f"\n{'wrote ' + str(drawn) if drawn else 'nothing measured yet, so no plot'}")
        if args.sheet is not None:
            sys.path.insert(0, str(HERE))
            from recipes import last_grids_sheet

            runs = {name: Path(entry["run_dir"]) for name, entry in results["runs"].items() if entry.get("run_dir")}
            if last_grids_sheet(runs, args.sheet) is None:
                raise SystemExit("no run of --results has a grid on this machine, so no --sheet.")
            print(f"wrote {args.sheet}")
        return
    recipes = parse_recipes(args.recipe or ["dcgan", "fast", "long"], args.set)
    if args.data is not None:
        data, held_out = args.data.expanduser().resolve(), args.eval_data.expanduser().resolve()
    else:
        # The recipe search's split: the same 7,000 / 1,000 images.
        sys.path.insert(0, str(HERE))
        from recipes import split_dataset

        data, held_out = split_dataset(args.dataset, work, args.held_out)
    settings = {"data": str(data), "eval_data": str(held_out), "evaluate": args.evaluate, "eval_every": args.eval_every,
                "epochs": args.epochs, "device": args.device, "threads": args.threads}
    results = load_results(path, settings, recipes)
    results["settings"].update(epochs=args.epochs, device=args.device, threads=args.threads)  # may differ between sittings
    minutes = args.hours * 60
    run_all(recipes, results, path, minutes, work, args.jobs or len(recipes), args.threads)
    rows = print_table(results, [r.name for r in recipes])
    record(results, rows)
    save(path, results)
    drawn = plot(rows, key, out)
    print(f"\n{'wrote ' + str(drawn) if drawn else 'nothing measured yet, so no plot'}; results in {path}")


if __name__ == "__main__":
    main()
