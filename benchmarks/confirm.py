"""Is a recipe better than another beyond the spread of seeds? Presets under the search's budget, several seeds each (issue 18).

    # the confirmation the README reports: dcgan, facegan and fast, 3 seeds each, and a run of fast
    # conditioned on Smiling and Male (issue 15), two runs side by side with one thread each
    python benchmarks/confirm.py --workers 2 --work /tmp/facegan-confirm \
      --recipe fast-smiling-male=fast --set fast-smiling-male.condition=Smiling,Male --set fast-smiling-male.seeds=1 \
      --recipe fast --recipe dcgan --recipe facegan --set facegan.epochs=7 \
      --reuse benchmarks/results/search-celeba-89.json --results benchmarks/results/confirm-celeba-89.json
    python benchmarks/confirm.py --report --results benchmarks/results/confirm-celeba-89.json --sheet confirm.png

Every run follows benchmarks/search.py's protocol exactly: the 7,000/1,000 split of celeba-89, one
thread, a budget of the training process's own CPU time (it stops at the epoch end nearest it), and
FID-1k, KID-1k and precision/recall-1k of the sampling generator against the held-out faces. A
conditional run samples its conditions from its training labels, so its FID compares with an
unconditional run's. Recipes are named as benchmarks/long_runs.py names them (`--recipe NAME=PRESET`,
`--set NAME.KEY=VALUE` with `facegan train`'s settings), and `--set NAME.seeds=N` gives one recipe
fewer or more seeds than --seeds. A recipe runs for the whole budget unless it sets its own epochs
(facegan's LR decay runs over its epochs: 7 is what dcgan's cost per image fits in 20 CPU-minutes).

`--reuse` takes a search results file: a finished trial whose configuration and seed are a recipe's
is that recipe's row (its `source` says so) and is not trained again. The results file is rewritten
after every run; run the same command again and only the missing runs train (a run cut short
starts again, as the budget counts one process's CPU time).

The report gives each recipe's mean ± sd over its seeds and compares each with the first recipe
named dcgan: "better" only where the two means ± one sd do not overlap.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import shutil
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from long_runs import Recipe, check, parse_recipes
from recipes import last_grids_sheet, metric_names, split_dataset
from search import UNTIL_BUDGET, budgeted_run, protocol, recipe_config, recipe_of

from facegan.config import TrainConfig
from facegan.errors import FaceganError
from facegan.files import write_atomically

# What a run's configuration holds besides its recipe: where it reads and writes, and the preset's name.
NOT_RECIPE = ("data", "runs_dir", "preset")


def seeds_of(sets: list[str], default: int) -> tuple[list[str], dict[str, int]]:
    """`--set NAME.seeds=N` taken out of the --set list (it is not a training setting): the rest, and each NAME's N."""
    rest, seeds = [], {}
    for item in sets:
        target, _, value = item.partition("=")
        name, _, key = target.partition(".")
        if key != "seeds":
            rest.append(item)
        elif not value.isdigit() or int(value) < 1:
            raise SystemExit(f"--set {item!r}: seeds is a whole number, 1 or more.")
        else:
            seeds[name] = int(value)
    return rest, seeds


def run_config_of(recipe: Recipe, seed: int, data: Path, work: Path, shared: dict) -> TrainConfig:
    """The recipe's configuration under the protocol: trained on `data` until the budget, unless it names its epochs."""
    config = check(recipe)
    epochs = config.epochs if "epochs" in recipe.settings else UNTIL_BUDGET
    return dataclasses.replace(config, data=str(data), runs_dir=str(work / f"{recipe.name}-seed{seed}" / "runs"),
                               seed=seed, epochs=epochs, **shared)


def same_recipe(a: TrainConfig, b: TrainConfig) -> bool:
    """Whether two configurations train the same thing (only where they read and write, and the preset's name, differ)."""
    def plain(config: TrainConfig) -> dict:
        # spectral_norm None is the family's choice: off for DCGAN's D, on for ResNet's (facegan.models)
        norm = config.model == "resnet" if config.spectral_norm is None else config.spectral_norm
        return dataclasses.asdict(dataclasses.replace(config, **dict.fromkeys(NOT_RECIPE, ""), spectral_norm=norm))
    return plain(a) == plain(b)


def reused_rows(search: dict, recipe: Recipe, seeds: int, data: Path, work: Path, shared: dict,
                budget: dict) -> dict[int, dict]:
    """Finished search trials that are runs of `recipe`, by seed: the same configuration, seed and `budget` (its
    cpu_minutes, held_out and threads)."""
    settings = search["settings"]
    if any(settings[key] != value for key, value in budget.items()):
        return {}
    theirs = {**shared, "precision": settings["precision"]}
    rows = {}
    for seed in range(seeds):
        wanted = run_config_of(recipe, seed, data, work, shared)
        for trial in search["trials"]:
            if trial["state"] != "COMPLETE" or settings["seed"] != seed or seed in rows:
                continue
            if same_recipe(recipe_config(recipe_of(trial["params"]), data, work, settings["seed"], theirs), wanted):
                rows[seed] = {key: value for key, value in trial.items() if key not in ("number", "state", "value", "params")}
                rows[seed]["source"] = f"search trial {trial['number']}"
    return rows


def one_run(job: tuple[Recipe, int, argparse.Namespace]) -> dict:
    """A worker process: one recipe and seed, trained and measured from scratch (a run cut short is made again)."""
    recipe, seed, args = job
    torch.set_num_threads(args.threads)
    os.environ["FACEGAN_CACHE"] = str(args.work / "cache")
    data, held_out = split_dataset("celeba-89", args.work, args.samples)
    config = run_config_of(recipe, seed, data, args.work, protocol(args))
    shutil.rmtree(Path(config.runs_dir).parent, ignore_errors=True)
    base = {"name": recipe.name, "preset": recipe.preset, "settings": recipe.settings, "seed": seed}
    try:
        return {**base, **budgeted_run(config, held_out, args.samples, args.cpu_minutes), "source": "this benchmark"}
    except FaceganError as error:  # a recipe that diverged past its rollbacks: recorded, and tried again next sitting
        return {**base, "error": str(error)}


def load_results(path: Path | None, settings: dict) -> dict:
    if path is None or not path.exists():
        return {"settings": settings, "rows": []}
    results = json.loads(path.read_text())
    if results["settings"] != settings:
        raise SystemExit(f"{path} holds runs of other settings ({results['settings']}); give another --results.")
    results["rows"] = [row for row in results["rows"] if "error" not in row]  # failed runs are tried again
    return results


def save(path: Path | None, results: dict) -> None:
    if path is not None:
        text = json.dumps(results, indent=1)
        write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def spread(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results: dict) -> dict[str, dict]:
    """Per recipe, in the order first run: its seeds and the mean and sd of every figure."""
    fid = metric_names(results["settings"]["held_out"])
    keys = {"fid": fid[0], "kid": fid[1], "precision": f"{fid[2]}_precision", "recall": f"{fid[2]}_recall",
            "steps": "steps", "images_per_cpu_s": "images_per_cpu_s", "cpu_minutes": "cpu_minutes"}
    groups: dict[str, list[dict]] = {}
    for row in results["rows"]:
        if "error" not in row:
            groups.setdefault(row["name"], []).append(row)
    return {name: {"seeds": [r["seed"] for r in rows], "rows": rows,
                   **{key: spread([r[source] for r in rows]) for key, source in keys.items()}}
            for name, rows in groups.items()}


def print_report(results: dict) -> dict[str, dict]:
    settings = results["settings"]
    summary = summarise(results)
    fid = metric_names(settings["held_out"])
    print(f"{settings['data']}: {settings['cpu_minutes']:g} CPU-minutes per run ({settings['threads']} thread, "
          f"{settings['precision']}), trained on {settings['train_images']:,} images, against {settings['held_out']:,} "
          "held-out; mean ± sd over seeds\n")
    header = (f"{'recipe':<18}{'seeds':>6}{'steps':>7}{'img/cpu-s':>10}{fid[0]:>15}{fid[1]:>16}{'precision':>16}"
              f"{'recall':>16}")
    print(header)
    print("-" * len(header))
    for name, s in summary.items():
        print(f"{name:<18}{len(s['seeds']):>6}{s['steps'][0]:>7.0f}{s['images_per_cpu_s'][0]:>10.1f}"
              f"{s['fid'][0]:>8.1f} ± {s['fid'][1]:>4.1f}{s['kid'][0]:>9.3f} ± {s['kid'][1]:.3f}"
              f"{s['precision'][0]:>9.3f} ± {s['precision'][1]:.3f}{s['recall'][0]:>9.3f} ± {s['recall'][1]:.3f}")
    print("\nper run:")
    for name, s in summary.items():
        for row in sorted(s["rows"], key=lambda r: r["seed"]):
            print(f"  {name:<18} seed {row['seed']}: {fid[0]} {row[fid[0]]:.1f}, {row['steps']} steps, "
                  f"{row['cpu_minutes']:.1f} CPU-min ({row['source']})")
    reference = next((name for name in summary if summary[name]["rows"][0]["preset"] == "dcgan"
                      and not summary[name]["rows"][0]["settings"]), None)
    if reference is not None:
        ref = summary[reference]["fid"]
        print()
        for name, s in summary.items():
            if name != reference:
                better = s["fid"][0] + s["fid"][1] < ref[0] - ref[1]
                print(f"{name} vs {reference}: {fid[0]} {s['fid'][0]:.1f} ± {s['fid'][1]:.1f} against {ref[0]:.1f} ± "
                      f"{ref[1]:.1f}, {s['fid'][0] / ref[0]:.2f}x: {'better, beyond the seeds' if better else 'not better beyond the seeds'}")
    failed = [row for row in results["rows"] if "error" in row]
    if failed:
        print("failed: " + "; ".join(f"{r['name']} seed {r['seed']}: {r['error']}" for r in failed))
    return summary


def write_sheet(results: dict, seed: int, out: Path) -> None:
    """The unconditional recipes' last grids at one seed, two rows each, labelled: at one seed every run's fixed
    noise is the same (latent size 100), so the rows compare recipes face for face at equal budget."""
    # A conditional grid has a row per condition: it is shown on its own.
    runs = {row["name"]: Path(row["run_dir"]) for row in results["rows"]
            if row["seed"] == seed and "error" not in row and not row["settings"].get("condition")}
    if last_grids_sheet(runs, out) is None:
        raise SystemExit(f"no unconditional run of seed {seed} has a grid on this machine.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", action="append", default=None, metavar="NAME=PRESET",
                        help="a recipe: a preset, named (default: dcgan, facegan and fast)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME.KEY=VALUE",
                        help="a recipe's own setting, as `facegan train` takes it; NAME.seeds=N its own number of seeds")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 to N-1 of every recipe (default 3)")
    parser.add_argument("--cpu-minutes", type=float, default=20.0, help="training budget per run, as search.py's (default 20)")
    parser.add_argument("--workers", type=int, default=1, help="runs side by side, each its own process (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--samples", type=int, default=1000, help="held-out faces, and generated ones, per metric (default 1000)")
    parser.add_argument("--precision", default="auto", help="number format of every run (default auto)")
    parser.add_argument("--reuse", type=Path, default=None, help="a search results file whose matching trials are rows")
    parser.add_argument("--results", type=Path, default=None, help="JSON of every run, rewritten after each")
    parser.add_argument("--work", type=Path, default=Path("/tmp/facegan-confirm"), help="split, runs and feature cache")
    parser.add_argument("--report", action="store_true", help="only print the table of --results")
    parser.add_argument("--sheet", type=Path, default=None,
                        help="with --report: a picture of the first two rows of each recipe's last grid at --sheet-seed")
    parser.add_argument("--sheet-seed", type=int, default=0, help="the seed whose grids --sheet shows (default 0)")
    args = parser.parse_args()
    if args.report:
        if args.results is None or not args.results.exists():
            raise SystemExit("--report needs --results FILE, a results file this benchmark wrote.")
        results = json.loads(args.results.read_text())
        print_report(results)
        if args.sheet is not None:
            write_sheet(results, args.sheet_seed, args.sheet)
        return
    sets, own_seeds = seeds_of(args.set, args.seeds)
    recipes = parse_recipes(args.recipe or ["dcgan", "facegan", "fast"], sets)
    if args.precision == "auto":
        from facegan.precision import resolve_precision
        args.precision = resolve_precision("auto", torch.device("cpu")).name
    args.work.mkdir(parents=True, exist_ok=True)
    data, _ = split_dataset("celeba-89", args.work, args.samples)  # once, before the workers share it
    settings = {"data": "celeba-89", "train_images": 8000 - args.samples, "held_out": args.samples,
                "cpu_minutes": args.cpu_minutes, "threads": args.threads, "precision": args.precision}
    results = load_results(args.results, settings)
    done = {(row["name"], row["seed"]) for row in results["rows"]}
    seeds = {recipe.name: own_seeds.get(recipe.name, args.seeds) for recipe in recipes}
    if args.reuse is not None:
        search = json.loads(args.reuse.read_text())
        budget = {"cpu_minutes": args.cpu_minutes, "held_out": args.samples, "threads": args.threads}
        for recipe in recipes:
            for seed, row in reused_rows(search, recipe, seeds[recipe.name], data, args.work, protocol(args), budget).items():
                if (recipe.name, seed) not in done:
                    results["rows"].append({"name": recipe.name, "preset": recipe.preset, "settings": recipe.settings,
                                            "seed": seed, **row})
                    done.add((recipe.name, seed))
    save(args.results, results)
    jobs = [(recipe, seed, args) for seed in range(max(seeds.values()))
            for recipe in recipes if seed < seeds[recipe.name] and (recipe.name, seed) not in done]
    print(f"{len(jobs)} runs to train, {len(done)} already measured", file=sys.stderr, flush=True)
    context = multiprocessing.get_context("spawn")
    with context.Pool(max(1, min(args.workers, len(jobs) or 1)), maxtasksperchild=1) as pool:
        for row in pool.imap_unordered(one_run, jobs):
            results["rows"].append(row)
            save(args.results, results)
            print(f"{row['name']} seed {row['seed']}: " + (row["error"] if "error" in row else
                  f"{metric_names(args.samples)[0]} {row[metric_names(args.samples)[0]]:.1f}, {row['steps']} steps"),
                  file=sys.stderr, flush=True)
    print_report(results)


if __name__ == "__main__":
    main()
