"""Which training recipe makes the best faces for a fixed compute budget? A search by Optuna (issue 18).

    # the search the README reports: 20 CPU-minutes per trial (10 minutes of both cores), two
    # trials side by side with one thread each, continuing the committed files (run it again)
    python benchmarks/search.py --trials 40 --workers 2 --work /tmp/search-work \
      --journal benchmarks/results/search-celeba-89.journal --results benchmarks/results/search-celeba-89.json
    python benchmarks/search.py --report --results benchmarks/results/search-celeba-89.json

Each trial trains one recipe through facegan's own `train()` on the 7,000-image training split of
../shared/data/celeba-89 (the split benchmarks/recipes.py makes), for a budget of the training
process's own CPU time (user + system, as `time` counts it): the run stops at the epoch end
nearest the budget. Its sampling generator (the EMA where the recipe keeps one, with standing
statistics) is then measured against the 1,000 held-out faces: FID-1k, the objective, with KID and
precision/recall beside it. CPU time, not wall time, is the budget so that trials side by side,
or a machine shared with other work, still compare fairly; one thread per trial keeps that true
(threads that wait for each other would count their spinning).

The first trials are the recipes the issue argues for, enqueued in order (BASELINES, the seeds'
own dcgan first, as the reference); Optuna's TPE sampler then searches the space of `suggest`.
The study lives in an Optuna journal file (text, one record a line), so a search stopped at any
point continues: run the same command again. Trials that a stopped sitting left running are marked
failed and their recipes enqueued again. After every trial the results file is rewritten from the
journal with every trial, finished or not.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
from pathlib import Path

import optuna
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import (
    last_grids_sheet,
    metric_names,
    preset_config,
    run_config,
    split_dataset,
)

from facegan.config import TrainConfig
from facegan.errors import FaceganError
from facegan.files import write_atomically
from facegan.train.cputime import process_cpu_seconds

STUDY = "recipes"
UNTIL_BUDGET = 100_000  # epochs: the CPU budget, not the epoch count, ends a trial

# The seeds' DCGAN, unchanged: the reference every recipe has to beat (trial 0).
SEED_RECIPE = {"model": "dcgan", "width": 64, "batch_size": 128, "loss": "bce", "spectral_norm": False, "lr_g": 2e-4,
               "lr_d": 2e-4, "beta1": 0.5, "ema_kimg": 0.0, "augment": "", "flip": False}
_NARROW = {**SEED_RECIPE, "width": 32, "batch_size": 32}
# The recipes tried first, each a reason from the issue, as its change to the seeds'. Every other trial is Optuna's.
BASELINES: list[dict] = [
    SEED_RECIPE,
    {**SEED_RECIPE, "batch_size": 32},  # about the same cost per image at batch 32, so 4x the updates
    _NARROW,  # narrower models too: a quarter of the FLOPs per image
    # MMGeneration's DCGAN-architecture LSGAN on CelebA-64: lr 1e-3 for both.
    {**_NARROW, "batch_size": 64, "loss": "lsgan", "lr_g": 1e-3, "lr_d": 1e-3},
    # Hinge loss, spectral norm in D, two timescales (D 4x G), beta1 0, an EMA, flips.
    {**_NARROW, "loss": "hinge", "spectral_norm": True, "lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.0, "ema_kimg": 2.0, "flip": True},
    # The plain loss at a higher rate with a short EMA and flips: more learning per update.
    {**_NARROW, "lr_g": 5e-4, "lr_d": 5e-4, "ema_kimg": 2.0, "flip": True},
]


def suggest(trial: optuna.Trial) -> dict:
    """A recipe's settings, as the search space draws them (every key of BASELINES)."""
    model = trial.suggest_categorical("model", ["dcgan", "resnet"])
    # ResNet blocks cost several times a DCGAN layer per channel: narrower widths only (a parameter
    # of its own, as Optuna's categorical parameters keep one set of choices).
    width = (trial.suggest_categorical("width", [32, 48, 64]) if model == "dcgan"
             else trial.suggest_categorical("resnet_width", [16, 32]))
    return {
        "model": model, "width": width,
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64, 128]),
        "loss": trial.suggest_categorical("loss", ["bce", "lsgan", "hinge"]),
        "spectral_norm": trial.suggest_categorical("spectral_norm", [False, True]),
        "lr_g": trial.suggest_float("lr_g", 5e-5, 2e-3, log=True),
        "lr_d": trial.suggest_float("lr_d", 5e-5, 2e-3, log=True),
        "beta1": trial.suggest_categorical("beta1", [0.0, 0.5]),
        # Half-lives from 0.5k images (a few dozen updates) to 10k (facegan's), or none.
        "ema_kimg": trial.suggest_categorical("ema_kimg", [0.0, 0.5, 1.0, 2.0, 5.0, 10.0]),
        "augment": trial.suggest_categorical("augment", ["", "translation", "color,translation", "color,translation,cutout"]),
        "flip": trial.suggest_categorical("flip", [False, True]),
    }


def recipe_of(params: dict) -> dict:
    """A trial's recipe from its Optuna parameters: `suggest`'s keys, ResNet's width named "width" as DCGAN's is."""
    width = params["width"] if "width" in params else params["resnet_width"]
    return {**{k: v for k, v in params.items() if k != "resnet_width"}, "width": width}


def overrides(recipe: dict) -> dict:
    """TrainConfig settings of a recipe, over the dcgan preset (whose other defaults it keeps)."""
    settings = {k: v for k, v in recipe.items() if k not in ("width", "beta1")}
    return {**settings, "g_width": recipe["width"], "d_width": recipe["width"], "betas": (recipe["beta1"], 0.999)}


class CpuBudget:
    """An abort_fn for train(): stop at the epoch end nearest `seconds` of this process's CPU time from now.

    At each epoch end the run stops if going on would overshoot the budget by more than stopping
    now undershoots it (half an epoch, at the last epoch's cost). An epoch that runs past 1.5 budgets
    is cut there (the run is measured at its last epoch end); the first epoch always finishes.
    """

    def __init__(self, seconds: float, clock=process_cpu_seconds) -> None:
        self.seconds, self.clock = seconds, clock
        self.start = self.last_epoch_end = clock()
        self.epoch = 0
        self.spent = 0.0

    def __call__(self, state) -> bool:
        now = self.clock()
        self.spent = now - self.start
        if state.epoch > self.epoch and state.batch_in_epoch == 0:  # an epoch has just been closed
            epoch_cost = (now - self.last_epoch_end) / (state.epoch - self.epoch)
            self.epoch, self.last_epoch_end = state.epoch, now
            return self.spent + epoch_cost / 2 >= self.seconds
        # Mid-epoch: cut only an epoch that overruns the budget by half, and only once one epoch has a checkpoint.
        return self.epoch > 0 and self.spent >= 1.5 * self.seconds


def protocol(args: argparse.Namespace) -> dict:
    """The settings every trial shares besides its recipe: CPU, uncompiled, no epoch checkpoints kept."""
    return {"precision": args.precision, "device": "cpu", "compile": "off", "checkpoint_every_epochs": 0, "log_every": 50}


def recipe_config(recipe: dict, data: Path, work: Path, seed: int, shared: dict) -> TrainConfig:
    """A searched recipe's training configuration: its changes over the dcgan preset, for as long as the budget lasts."""
    return preset_config("dcgan", data, work, {**overrides(recipe), **shared}, seed=seed, epochs=UNTIL_BUDGET)


def budgeted_run(config: TrainConfig, held_out: Path, samples: int, cpu_minutes: float) -> dict:
    """Train `config` for `cpu_minutes` of this process's CPU time and measure it: the row of a trial."""
    budget = CpuBudget(cpu_minutes * 60)
    row = run_config(config, held_out, metric_names(samples), abort_fn=budget)
    return {**row, "cpu_minutes": budget.spent / 60, "epochs": budget.epoch,
            "images_per_cpu_s": row["steps"] * config.batch_size / max(budget.spent, 1e-9), "threads": torch.get_num_threads()}


def objective(trial: optuna.Trial, args: argparse.Namespace) -> float:
    recipe = suggest(trial)
    data, held_out = split_dataset("celeba-89", args.work, args.samples)
    config = recipe_config(recipe, data, args.work / f"trial-{trial.number:03d}", args.seed, protocol(args))
    try:
        row = budgeted_run(config, held_out, args.samples, args.cpu_minutes)
    except Exception as error:  # e.g. a recipe that diverged past its rollbacks: the results file says why
        trial.set_user_attr("error", str(error) if isinstance(error, FaceganError) else f"{type(error).__name__}: {error}")
        raise
    for key, value in row.items():
        trial.set_user_attr(key, value)
    fid = row[metric_names(args.samples)[0]]
    return fid if math.isfinite(fid) else float("inf")


def open_study(journal: Path) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.create_study(study_name=STUDY, storage=storage, direction="minimize", load_if_exists=True,
                               sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=len(BASELINES) + 4))


def prepare_sitting(study: optuna.Study) -> None:
    """Before any worker starts: trials a stopped sitting left running failed; try their recipes again, and enqueue
    every baseline not tried yet. One sitting at a time, so nothing else is running."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        recipe = trial.params or trial.system_attrs.get("fixed_params")  # killed before it drew: what was enqueued
        if recipe:
            study.enqueue_trial(recipe, skip_if_exists=False)
    for recipe in BASELINES:
        study.enqueue_trial(recipe, skip_if_exists=True)


def write_results(study: optuna.Study, path: Path, args: argparse.Namespace) -> None:
    rows = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params, **t.user_attrs}
            for t in study.get_trials(deepcopy=False)]
    settings = {"data": "celeba-89", "train_images": 8000 - args.samples, "held_out": args.samples,
                "cpu_minutes": args.cpu_minutes, "threads": args.threads, "precision": args.precision, "seed": args.seed}
    text = json.dumps({"settings": settings, "trials": rows}, indent=1)
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def worker(args: argparse.Namespace, index: int) -> None:
    torch.set_num_threads(args.threads)
    os.environ["FACEGAN_CACHE"] = str(args.work / "cache")
    study = open_study(args.journal)

    def after(study: optuna.Study, trial) -> None:
        if args.results is not None:
            write_results(study, args.results, args)
        print(f"worker {index}: trial {trial.number} {trial.state.name} value {trial.value} {trial.params}",
              file=sys.stderr, flush=True)

    done = optuna.study.MaxTrialsCallback(args.trials, states=(TrialState.COMPLETE, TrialState.FAIL))
    study.optimize(lambda trial: objective(trial, args), callbacks=[after, done], catch=(FaceganError,))


def print_report(results: dict, best: int = 5) -> None:
    settings, trials = results["settings"], results["trials"]
    done = sorted((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: t["value"])
    fid = metric_names(settings["held_out"])
    print(f"{settings['data']}: {settings['cpu_minutes']:g} CPU-minutes per trial ({settings['threads']} thread(s), "
          f"{settings['precision']}), trained on {settings['train_images']:,} images, {fid[0]} against "
          f"{settings['held_out']:,} held-out; {len(done)} trials finished of {len(trials)}\n")
    header = (f"{'trial':>5} {'model':<7}{'width':>6}{'batch':>6} {'loss':<6}{'SN':>4}{'lr_g':>9}{'lr_d':>9}{'b1':>5}"
              f"{'ema':>6} {'augment':<24}{'flip':>5}{'steps':>7}{'img/cpu-s':>10}{fid[0]:>8}{fid[1]:>8}{'prec':>7}{'recall':>7}")
    print(header)
    print("-" * len(header))
    for t in done[:best] if best else done:
        p = recipe_of(t["params"])
        print(f"{t['number']:>5} {p['model']:<7}{p['width']:>6}{p['batch_size']:>6} {p['loss']:<6}"
              f"{'yes' if p['spectral_norm'] else 'no':>4}{p['lr_g']:>9.1e}{p['lr_d']:>9.1e}{p['beta1']:>5.1f}"
              f"{p['ema_kimg']:>6g} {p['augment'] or '-':<24}{'yes' if p['flip'] else 'no':>5}{t['steps']:>7}"
              f"{t['images_per_cpu_s']:>10.1f}{t['value']:>8.1f}{t[fid[1]]:>8.3f}{t[fid[2] + '_precision']:>7.3f}"
              f"{t[fid[2] + '_recall']:>7.3f}")
    reference = next((t for t in done if t["number"] == 0), None)
    if reference is not None and done:
        print(f"\nthe seeds' dcgan (trial 0): {fid[0]} {reference['value']:.1f}; best: trial {done[0]['number']}, "
              f"{done[0]['value']:.1f} ({done[0]['value'] / reference['value']:.2f}x dcgan's)")
    failed = [t for t in trials if t["state"] == "FAIL"]
    if failed:
        print(f"failed: {', '.join(str(t['number']) + (': ' + t['error'] if 'error' in t else '') for t in failed)}")


def write_sheet(results: dict, best: int, out: Path) -> None:
    """The reported trials' last grids, two rows each, labelled by trial: every trial's fixed noise is the same
    (latent size 100, seed 0), so the rows compare recipes face for face."""
    done = sorted((t for t in results["trials"] if t["state"] == "COMPLETE"), key=lambda t: t["value"])[:best or None]
    if last_grids_sheet({f"trial {t['number']}": Path(t["run_dir"]) for t in done}, out) is None:
        raise SystemExit("none of the reported trials' run directories has a grid on this machine.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40, help="trials in the study in all, finished or failed (default 40)")
    parser.add_argument("--cpu-minutes", type=float, default=20.0,
                        help="training budget per trial in CPU-minutes of its process (default 20: 10 minutes of 2 cores)")
    parser.add_argument("--workers", type=int, default=1, help="trials side by side, each its own process (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trial (default 1)")
    parser.add_argument("--samples", type=int, default=1000, help="held-out faces, and generated ones, per metric (default 1000)")
    parser.add_argument("--precision", default="auto", help="number format of every trial (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="every trial's training seed (default 0)")
    parser.add_argument("--journal", type=Path, default=Path("search.journal"), help="the Optuna journal of the study")
    parser.add_argument("--results", type=Path, default=None, help="JSON of every trial, rewritten after each")
    parser.add_argument("--work", type=Path, default=Path("/tmp/facegan-search"), help="split, runs and feature cache")
    parser.add_argument("--report", action="store_true", help="only print the best trials of --results")
    parser.add_argument("--best", type=int, default=5, help="rows of --report (0: all)")
    parser.add_argument("--sheet", type=Path, default=None,
                        help="with --report: a picture of the first two rows of the reported trials' last grids (the same fixed noise)")
    args = parser.parse_args()
    if args.report:
        if args.results is None or not args.results.exists():
            raise SystemExit("--report needs --results FILE, a results file this benchmark wrote.")
        results = json.loads(args.results.read_text())
        print_report(results, args.best)
        if args.sheet is not None:
            write_sheet(results, args.best, args.sheet)
        return
    if args.precision == "auto":
        from facegan.precision import resolve_precision
        args.precision = resolve_precision("auto", torch.device("cpu")).name
    args.work.mkdir(parents=True, exist_ok=True)
    split_dataset("celeba-89", args.work, args.samples)  # once, before the workers share it
    prepare_sitting(open_study(args.journal))
    if args.workers == 1:
        worker(args, 0)
    else:
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=worker, args=(args, i)) for i in range(args.workers)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    if args.results is not None:
        write_results(open_study(args.journal), args.results, args)
        print_report(json.loads(args.results.read_text()), args.best)


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    main()
