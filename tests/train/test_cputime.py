"""The run's CPU time (cpu_s) across resumes and rollbacks, --max-cpu-minutes, and --eval-data.

The process clock is replaced by one the test advances (5 "CPU seconds" a step, through abort_fn), so
minutes pass without being spent; --eval-every's metrics by a recorder, so no Inception network runs
(tests/metrics/test_train_eval.py measures for real).
"""

from __future__ import annotations

import json

import pytest
from conftest import TINY_ARGS, run_cli, tiny

from facegan.config import RESUME_FIXED
from facegan.data.prepare import prepare
from facegan.errors import FaceganError, FaceganWarning
from facegan.plots import read_stats
from facegan.train import cputime, loop
from facegan.train.checkpoint import load_checkpoint, save_checkpoint
from facegan.train.rundir import resume_config
from facegan.train.state import build_state, restore_state

STEP_S = 5.0  # what each training step costs on the fake clock


class FakeClock:
    """The process's CPU seconds, advanced by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, state) -> bool:  # as an abort_fn: called after every step, never aborts
        self.now += STEP_S
        return False


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(cputime, "process_cpu_seconds", fake)
    return fake


@pytest.fixture
def measured(monkeypatch) -> list[dict]:
    """Every --eval-every measurement: the dataset it was given, and a made-up FID that falls with each call."""
    calls: list[dict] = []

    def evaluate(sample, dataset, metrics, **kwargs):
        calls.append({"dataset": dataset.path, "metrics": [m.name for m in metrics]})
        return {metrics[0].name: 100.0 - len(calls)}

    monkeypatch.setattr(loop, "evaluate", evaluate)
    return calls


def _metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_cpu_seconds_are_recorded_and_carried_across_a_resume(tmp_path, data32, clock, one_thread):
    run = train_ticking(tiny(tmp_path, data32, epochs=1), clock)
    # Six steps an epoch; the epoch's checkpoint is made after the sixth, before its tick: five ticks.
    first = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert first["cpu_s"] == 5 * STEP_S
    clock.now += 1000  # time between the invocations (another process's) is not the run's
    resumed = train_ticking(resume_config(run, {"epochs": 2}), clock, resume=run)
    assert load_checkpoint(resumed / "checkpoints" / "latest.pt")["cpu_s"] == 5 * STEP_S + 5 * STEP_S
    # Every stats record has it: step k (logged before its tick) at 5 (k - 1) s in the first invocation, and the
    # checkpoint's 25 s plus 5 (k - 7) s in the second.
    stats = read_stats(resumed / "stats.jsonl")
    assert [r["step"] for r in stats] == list(range(1, 13))
    assert [r["cpu_s"] for r in stats] == [STEP_S * (k - 1) for k in range(1, 7)] + [25 + STEP_S * (k - 7) for k in range(7, 13)]


def train_ticking(config, clock, **kwargs):
    return loop.train(config, progress=False, abort_fn=clock.tick, **kwargs)


def test_a_rollback_keeps_counting_and_old_checkpoints_read_as_zero(tmp_path, data32):
    config = tiny(tmp_path, data32, epochs=1)
    state = build_state(config, 32, loop.resolve_device("cpu"))
    state.cpu = cputime.CpuClock(carried=100.0, started=cputime.process_cpu_seconds())
    checkpoint = state.to_checkpoint(config, loop.torch.zeros(4, config.latent_dim))
    checkpoint["cpu_s"] = 5.0  # an older checkpoint, as a rollback restores one
    restore_state(state, checkpoint)
    assert state.cpu.carried == 100.0  # restore_state leaves the run's clock alone: that time was spent
    del checkpoint["cpu_s"]
    assert cputime.carried_seconds(checkpoint) == 0.0  # written before facegan counted: 0, a lower bound


def test_the_real_clock_counts_this_process(tmp_path):
    clock = cputime.CpuClock()
    sum(i * i for i in range(300_000))  # some CPU work
    assert clock.seconds() > 0 and clock.carried == 0


def test_a_cpu_budget_stops_at_an_epoch_end_measures_there_and_a_larger_one_continues(tmp_path, data32, clock,
                                                                                       measured, one_thread):
    # 30 CPU s: epoch 1 ends at 25 s, epoch 2 at 55 s, so the run stops after epoch 2 of its 5.
    run = train_ticking(tiny(tmp_path, data32, epochs=5, max_cpu_minutes=0.5, eval_every=3, evaluate="fid32"), clock)
    latest = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert (latest["epoch"], latest["batch_in_epoch"], latest["cpu_s"]) == (2, 0, 55.0)
    assert sorted(p.name for p in (run / "samples").glob("epoch-*.png")) == ["epoch-0001.png", "epoch-0002.png"]
    # Epoch 2 is not due for --eval-every 3, but a budget's stop is always measured.
    assert [(r["epoch"], r["cpu_s"], r["reference"]) for r in _metrics(run)] == [(2, 55.0, "training data")]
    # The same budget again: nothing to train, said so.
    with pytest.warns(FaceganWarning, match=r"already spent 0.9 CPU minutes, its --max-cpu-minutes 0.5"):
        train_ticking(resume_config(run, {"max_cpu_minutes": 0.5}), clock, resume=run)
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["epoch"] == 2
    # A larger one (60 s) trains on: epoch 3 ends at 80 s (due anyway), past it.
    train_ticking(resume_config(run, {"max_cpu_minutes": 1.0}), clock, resume=run)
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["epoch"] == 3
    assert [(r["epoch"], r["cpu_s"]) for r in _metrics(run)] == [(2, 55.0), (3, 80.0)]
    # --epochs still caps a budget that is not reached.
    capped = train_ticking(tiny(tmp_path / "capped", data32, epochs=1, max_cpu_minutes=100.0), clock)
    assert load_checkpoint(capped / "checkpoints" / "latest.pt")["epoch"] == 1


def test_a_budget_on_an_old_checkpoint_counts_from_the_resume_and_says_so(tmp_path, data32, clock, one_thread):
    run = train_ticking(tiny(tmp_path, data32, epochs=1), clock)
    latest = run / "checkpoints" / "latest.pt"
    old = load_checkpoint(latest)
    del old["cpu_s"]
    save_checkpoint(old, latest)
    (run / "checkpoints" / "epoch-0001.pt").unlink()
    with pytest.warns(FaceganWarning, match="before facegan counted CPU time, so --max-cpu-minutes counts from this resume"):
        train_ticking(resume_config(run, {"epochs": 3, "max_cpu_minutes": 0.1}), clock, resume=run)
    assert load_checkpoint(latest)["epoch"] == 2 and load_checkpoint(latest)["cpu_s"] == 25.0


def test_max_cpu_minutes_is_checked(tmp_path):
    from facegan.config import from_preset

    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(FaceganError, match="max-cpu-minutes must be 0 .no limit. or a positive number"):
            from_preset("dcgan", max_cpu_minutes=bad)


# ----------------------------------------------------------------------------- --eval-data


@pytest.fixture(scope="module")
def held_out32(tmp_path_factory):
    return prepare("synthetic", tmp_path_factory.mktemp("held") / "h32", count=40, size=32, seed=7, progress=False)


def test_eval_data_is_what_eval_every_measures_against_and_a_resume_may_change_it(tmp_path, data32, held_out32,
                                                                                   measured, one_thread):
    run = loop.train(tiny(tmp_path, data32, epochs=1, eval_every=1, evaluate="fid32", eval_data=str(held_out32)),
                     progress=False)
    assert [c["dataset"] for c in measured] == [held_out32.resolve()]
    (record,) = _metrics(run)
    assert (record["dataset"], record["reference"], record["best"]) == (str(held_out32.resolve()), "eval-data", True)
    assert record["cpu_s"] == load_checkpoint(run / "checkpoints" / "epoch-0001.pt")["cpu_s"]
    # A resume may measure against other data (not fixed at the start): here the training data. Its first value
    # is the best against that reference, whatever the other reference's values were.
    assert "eval_data" not in RESUME_FIXED
    config = resume_config(run, {"epochs": 2})
    config.eval_data = None
    loop.train(config, resume=run, progress=False)
    assert [c["dataset"] for c in measured] == [held_out32.resolve(), data32.resolve()]
    second = _metrics(run)[1]
    assert (second["dataset"], second["reference"], second["best"]) == (str(data32.resolve()), "training data", True)


def test_eval_data_of_another_resolution_is_refused_before_any_run_directory(tmp_path, data32, capsys):
    other = prepare("synthetic", tmp_path / "h16", count=40, size=16, progress=False)
    runs = tmp_path / "runs"
    with pytest.raises(FaceganError, match=r"--eval-data .*h16 holds 16x16 images but the run trains at 32x32; "
                                           r"give data prepared at --size 32"):
        loop.train(tiny(tmp_path, data32, eval_every=1, eval_data=str(other)), progress=False)
    code, _, err = run_cli(["train", "--data", str(data32), "--eval-data", str(other), "--runs-dir", str(runs), *TINY_ARGS],
                           capsys)
    assert code == 1 and err.count("\n") == 1 and "holds 16x16 images but the run trains at 32x32" in err
    code, _, err = run_cli(["train", "--data", str(data32), "--eval-data", str(tmp_path / "nowhere"),
                            "--runs-dir", str(runs), *TINY_ARGS], capsys)
    assert code == 1 and "nowhere" in err
    assert not runs.exists() or not list(runs.iterdir())
