"""Bad input that reaches a run, a file or a number (issue 14): each ends in one sentence, or in a
warning and work that goes on, and nothing outside the run changes.

One tiny run (and its export) is made once; a test that damages something damages a copy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from facegan import generation, plots, sample
from facegan.cli import main
from facegan.config import from_preset
from facegan.data.prepare import prepare
from facegan.errors import FaceganWarning
from facegan.export import export_generator
from facegan.generation import generate, latent_batches, latents, load_generator
from facegan.metrics.names import MAX_COUNT
from facegan.runtime import resolve_device
from facegan.train.checkpoint import load_checkpoint, save_checkpoint
from facegan.train.loop import train
from facegan.train.rundir import resume_config, warn_if_finished

TINY = {"batch_size": 16, "g_width": 8, "d_width": 8, "grid_size": 16, "device": "cpu", "epochs": 1, "log_every": 1}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    """64 synthetic faces at 32 px, a one-epoch run on them, and its export; made once, never damaged."""
    root = tmp_path_factory.mktemp("bad-runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models train much faster on one thread of a busy machine
    try:
        data = prepare("synthetic", root / "d32", count=64, size=32, progress=False)
        run = train(from_preset("dcgan", data=str(data), runs_dir=str(root / "runs"), **TINY), progress=False)
    finally:
        torch.set_num_threads(threads)
    exported = export_generator(run, root / "export" / "g.safetensors")
    return {"root": root, "data": data, "run": run, "export": exported, "cache": root / "cache"}


def _contents(root: Path, leave_out: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and leave_out not in p.parents}


@pytest.fixture(autouse=True)
def nothing_outside_changes(base, monkeypatch):
    """Every test: the shared data, run and export stay byte for byte as they were (the feature cache aside)."""
    monkeypatch.setenv("FACEGAN_CACHE", str(base["cache"]))  # never the user's cache
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    before = _contents(base["root"], base["cache"])
    yield
    torch.set_num_threads(threads)
    assert _contents(base["root"], base["cache"]) == before


def run_cli(argv: list, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_sentence(code: int, err: str, message: str) -> None:
    """Exit code 1 and exactly one line, `facegan: error: ...`, holding `message`; no traceback."""
    assert code == 1, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("facegan: error: "), err
    assert message in lines[0], err


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("facegan: warning: ")]


def copy_run(base, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base["run"], tmp_path / "run"))


# ----------------------------------------------------------------------------- unbounded allocation


def test_a_grid_of_ten_million_is_refused_before_anything_is_drawn(base, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sample, "load_generator_and_labels", lambda *a, **k: pytest.fail("a generator was loaded"))
    out = tmp_path / "x.png"
    code, _, err = run_cli(["sample", base["run"], "-n", "10000000", "--out", out, "--device", "cpu", "--quiet"], capsys)
    one_sentence(code, err, f"a grid holds at most {sample.MAX_GRID_IMAGES:,} images, not 10,000,000")
    assert "give a folder as --out" in err and not out.exists()


def test_samples_are_never_written_into_a_prepared_dataset(base, capsys):
    """A folder of PNGs inside a dataset would mix with its files (and a later prepare --force would delete them)."""
    code, _, err = run_cli(["sample", base["run"], "-n", "4", "--out", base["data"], "--device", "cpu", "--quiet"], capsys)
    one_sentence(code, err, f"--out {base['data']} is a prepared dataset; write the samples into a folder of their own")
    assert not list(base["data"].glob("*.png"))  # and the autouse check: nothing in it changed


def test_a_folder_streams_latents_a_chunk_at_a_time_and_keeps_the_seeds_images(base, tmp_path, capsys, monkeypatch):
    drawn: list[int] = []
    randn = torch.randn

    def counting(*size, **kwargs):
        drawn.append(size[0])
        return randn(*size, **kwargs)

    monkeypatch.setattr(generation, "LATENT_CHUNK", 16)
    monkeypatch.setattr(generation.torch, "randn", counting)
    code, _, err = run_cli(["sample", base["run"], "-n", "40", "--out", tmp_path / "faces", "--batch-size", "7",
                            "--seed", "5", "--device", "cpu", "--precision", "fp32", "--quiet"], capsys)
    monkeypatch.undo()
    assert code == 0, err
    assert drawn == [16, 16, 8]  # never all 40 at once
    files = sorted((tmp_path / "faces").iterdir())
    images = np.stack([np.asarray(Image.open(f)) for f in files])
    generator, config = load_generator(base["run"], "cpu")
    assert np.array_equal(images, generate(generator, latents(40, config.latent_dim, 5), batch_size=7))


@pytest.mark.parametrize("dim", [1, 3, 7, 16, 100])
def test_latents_drawn_in_chunks_are_those_of_one_draw(dim):
    for count in (1, 5, 15, 16, 17, 33, 47, 100, 129):
        for chunk, batch in ((16, 5), (32, 64), (4096, 7)):
            streamed = torch.cat(list(latent_batches(count, dim, 3, batch, chunk=chunk)))
            assert torch.equal(streamed, latents(count, dim, 3)), (count, chunk, batch)
            assert [len(b) for b in latent_batches(count, dim, 3, batch, chunk=chunk)][:-1] == [batch] * ((count - 1) // batch)


def _rewrite_export(source: Path, out: Path, *, config: dict | None = None, drop: str | None = None,
                    unset: str | None = None, tensors: dict | None = None) -> Path:
    """A copy of an export with its configuration changed, a metadata key dropped, a setting unset or tensors replaced."""
    with safe_open(str(source), framework="pt") as file:
        metadata = dict(file.metadata())
        weights = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 - a safe_open handle
    settings = {**json.loads(metadata["config"]), **(config or {})}
    settings.pop(unset, None)
    metadata["config"] = json.dumps(settings)
    if drop is not None:
        metadata.pop(drop)
    save_file({**weights, **(tensors or {})}, str(out), metadata=metadata)
    return out


@pytest.mark.parametrize("change, message", [
    ({"config": {"g_width": 1_000_000}}, "g-width 1,000,000 is more than facegan allows (1,024)"),
    ({"config": {"latent_dim": 1_000_000_000}}, "latent-dim 1,000,000,000 is more than facegan allows (4,096)"),
    ({"config": {"g_width": 1024}}, "do not fit a dcgan generator of its own configuration (latent 100, g-width 1024"),
    ({"config": {"latent_dim": 4096}}, "do not fit a dcgan generator of its own configuration (latent 4096"),
    ({"config": {"latent_dim": 1e9}}, "latent-dim must be a whole number, not 1000000000.0"),
    ({"config": {"g_width": 10**18}}, "g-width 1,000,000,000,000,000,000 is more than facegan allows"),
    ({"drop": "config"}, "lacks the metadata config that `facegan export` writes"),
], ids=["g-width-1e6", "latent-1e9", "g-width-1024", "latent-4096", "latent-float", "g-width-1e18", "no-config"])
def test_an_export_that_sizes_the_model_from_untrusted_numbers_is_refused_before_building(
        base, tmp_path, capsys, monkeypatch, change, message):
    bad = _rewrite_export(base["export"], tmp_path / "bad.safetensors", **change)
    real = generation.build_models

    def meta_only(*args, **kwargs):
        assert torch.empty(0).device.type == "meta", "a generator was built from the file's numbers"
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "build_models", meta_only)
    started = time.perf_counter()
    code, _, err = run_cli(["sample", bad, "-n", "4", "--out", tmp_path / "x.png", "--device", "cpu", "--quiet"], capsys)
    one_sentence(code, err, message)
    assert time.perf_counter() - started < 5 and not (tmp_path / "x.png").exists()


def test_an_export_whose_configuration_lacks_a_setting_is_refused(base, tmp_path, capsys):
    bad = _rewrite_export(base["export"], tmp_path / "bad.safetensors", unset="g_width")
    code, _, err = run_cli(["sample", bad, "-n", "4", "--out", tmp_path / "x.png", "--device", "cpu", "--quiet"], capsys)
    one_sentence(code, err, "holds a configuration without g_width; export it again")


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_an_export_with_non_finite_weights_is_refused(base, tmp_path, capsys, value):
    with safe_open(str(base["export"]), framework="pt") as file:
        name = next(n for n in file.keys() if n.endswith("weight"))  # noqa: SIM118 - a safe_open handle
        broken = file.get_tensor(name).clone()
    broken.view(-1)[0] = value
    bad = _rewrite_export(base["export"], tmp_path / "bad.safetensors", tensors={name: broken})
    code, _, err = run_cli(["sample", bad, "-n", "4", "--out", tmp_path / "x.png", "--device", "cpu", "--quiet"], capsys)
    one_sentence(code, err, f"holds weights that are not finite numbers ({name} has NaN or infinity)")
    assert not (tmp_path / "x.png").exists()


def test_a_metric_of_ten_billion_images_is_one_sentence(base, capsys):
    code, _, err = run_cli(["evaluate", base["run"], "--metrics", "fid10000000k", "--device", "cpu", "--quiet"], capsys)
    one_sentence(code, err, f"fid10000000k measures 10,000,000,000 images, more than the {MAX_COUNT:,} facegan allows")


# ----------------------------------------------------------------------------- damaged logs


@pytest.mark.parametrize("damage", ["middle-line", "random-bytes"])
def test_resume_sets_damaged_stats_lines_aside_and_keeps_the_rest(base, tmp_path, capsys, damage):
    run = copy_run(base, tmp_path)
    stats = run / "stats.jsonl"
    lines = stats.read_bytes().splitlines()
    if damage == "middle-line":
        bad = [b'{"step": 2, "loss_d": 0.7, "loss', b"\xff\xfe not json"]
        stats.write_bytes(b"\n".join([lines[0], *bad, *lines[1:]]) + b"\n")
        intact = [json.loads(line) for line in lines]
    else:
        stats.write_bytes(np.random.default_rng(0).bytes(4096))
        bad = [line for line in stats.read_bytes().split(b"\n") if line.strip()]
        intact = []
    code, _, err = run_cli(["train", "--resume", run, "--epochs", "2", "--quiet"], capsys)
    assert code == 0 and "Traceback" not in err, err
    (warning,) = warnings_in(err)
    assert f"{stats} had {len(bad)} damaged line" in warning and f"set aside in {stats}.damaged" in warning
    assert err.splitlines() == [warning]
    assert (run / "stats.jsonl.damaged").read_bytes() == b"".join(line + b"\n" for line in bad)  # as they were
    records = plots.read_stats(stats)
    assert records[: len(intact)] == intact  # the intact lines kept, in order, then epoch 2's
    assert len(records) > len(intact) and load_checkpoint(run / "checkpoints" / "latest.pt")["epoch"] == 2


def test_evaluate_sets_damaged_metrics_lines_aside_and_never_loses_the_new_record(base, tmp_path, capsys):
    run = copy_run(base, tmp_path)
    metrics = run / "metrics.jsonl"
    old = [{"step": 1, "epoch": 1, "kimg": 0.016, "kid4": 0.5}, {"step": 2, "epoch": 1, "kimg": 0.032, "kid4": 0.4}]
    bad = [b"{\"step\": 3, \"kid4\": 0.3", b'{"step": 4, "ki']  # damaged in the middle, and a last line cut short
    metrics.write_bytes(json.dumps(old[0]).encode() + b"\n" + bad[0] + b"\n" + json.dumps(old[1]).encode() + b"\n" + bad[1])
    code, out, err = run_cli(["evaluate", run, "--metrics", "kid4", "--device", "cpu", "--quiet"], capsys)
    assert code == 0 and "Traceback" not in err, err
    (warning,) = warnings_in(err)
    assert f"{metrics} had 2 damaged lines (line 2, 4" in warning
    assert (run / "metrics.jsonl.damaged").read_bytes() == bad[0] + b"\n" + bad[1] + b"\n"
    records = plots.read_stats(metrics)
    printed = float(out.strip().splitlines()[-1].split()[4])  # checkpoint epoch step kimg kid4 kid4_std
    assert records[:2] == old and len(records) == 3 and records[2]["kid4"] == pytest.approx(printed, rel=1e-3)
    assert (run / "plots" / "metrics.png").is_file()


# ----------------------------------------------------------------------------- FID inputs


def test_fid_of_a_one_image_dataset_is_one_sentence_before_any_features(base, tmp_path, capsys, monkeypatch):
    one = prepare("synthetic", tmp_path / "one", count=1, size=32, progress=False)
    from facegan.metrics import folders

    monkeypatch.setattr(folders, "as_network", lambda *a, **k: pytest.fail("the network was loaded"))
    code, _, err = run_cli(["fid", one, base["data"], "--device", "cpu", "--quiet"], capsys)
    one_sentence(code, err, f"{one} is a prepared dataset of 1 image; FID needs at least 2")
    monkeypatch.undo()
    code, _, err = run_cli(["evaluate", base["run"], "--data", one, "--metrics", "kid4", "--device", "cpu", "--quiet"], capsys)
    one_sentence(code, err, f"{one} holds 1 image, too few for kid4, which needs at least 2")


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height pixels but holds none: what Pillow's bomb check reads."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def test_fid_skips_a_decompression_bomb_and_names_it(base, tmp_path, capsys):
    images = np.load(base["data"] / "images.npy", mmap_mode="r")
    for name, start in (("a", 0), ("b", 10)):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(images[start + i]).save(tmp_path / name / f"{i}.png")
    _png_header(tmp_path / "a" / "huge.png", 30000, 30000)
    code, out, err = run_cli(["fid", tmp_path / "a", tmp_path / "b", "--device", "cpu", "--quiet"], capsys)
    assert code == 0 and "Traceback" not in err, err
    skipped = [line for line in warnings_in(err) if "decompression-bomb" in line]
    assert len(skipped) == 1 and "skipped 1 of 4 image files" in skipped[0] and "huge.png" in skipped[0]
    assert "FID uses the other 3" in skipped[0] and f"(3 images in {tmp_path / 'a'}, 3 in" in out


# ----------------------------------------------------------------------------- devices


def test_a_gpu_past_the_count_is_one_sentence(base, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # not touched: only named, never used here
    code, _, err = run_cli(["sample", base["run"], "-n", "4", "--out", tmp_path / "x.png", "--device", "cuda:2", "--quiet"], capsys)
    one_sentence(code, err, "--device cuda:2 names GPU 2, but PyTorch sees 2 GPUs (cuda:0 to cuda:1); use one of those")
    monkeypatch.setenv("LOCAL_RANK", "3")
    code, _, err = run_cli(["sample", base["run"], "-n", "4", "--out", tmp_path / "x.png", "--device", "cuda", "--quiet"], capsys)
    one_sentence(code, err, "LOCAL_RANK 3 names GPU 3, but PyTorch sees 2 GPUs")
    assert not (tmp_path / "x.png").exists()


def test_out_of_memory_while_sampling_names_the_batch_size_to_lower(base, tmp_path, capsys, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(generation, "generate", out_of_memory)  # what sample.sampler runs
    code, _, err = run_cli(["sample", base["run"], "-n", "8", "--out", tmp_path / "faces", "--batch-size", "8",
                            "--device", "cpu", "--quiet"], capsys)
    one_sentence(code, err, "the GPU ran out of memory generating 8 images at once; lower --batch-size (say to 2)")


# ----------------------------------------------------------------------------- nonsense accepted silently


def test_resume_with_fewer_epochs_than_the_run_has_is_one_sentence(base, tmp_path, capsys):
    run = copy_run(base, tmp_path)
    latest = run / "checkpoints" / "latest.pt"
    save_checkpoint({**load_checkpoint(latest), "epoch": 11}, latest)  # as a run that has trained 11 epochs
    before = _contents(run, run / "nothing")
    code, _, err = run_cli(["train", "--resume", run, "--epochs", "1", "--quiet"], capsys)
    one_sentence(code, err, f"{run} is already at epoch 11 (latest.pt), past --epochs 1, so nothing would be trained")
    assert f"`facegan train --resume {run} --epochs 21` trains 10 more" in err
    assert _contents(run, run / "nothing") == before


def test_a_finished_run_resumed_is_told_there_is_nothing_to_train(base):
    # The loop calls this once the resume has passed every other check (see the report to the lead);
    # here it is called as the loop will.
    checkpoint = load_checkpoint(base["run"] / "checkpoints" / "latest.pt")
    config = resume_config(base["run"], {})
    with pytest.warns(FaceganWarning, match=r"has already trained its 1 epoch \(--epochs 1\), so there is nothing "
                                            r"to train; .*--epochs 11` trains 10 more"):
        assert warn_if_finished(base["run"], checkpoint, config)
    assert not warn_if_finished(base["run"], checkpoint, resume_config(base["run"], {"epochs": 2}))
