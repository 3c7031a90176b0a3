"""Bad input, tried systematically: every row ends in one sentence on stderr and a non-zero exit
code, never a traceback.

Mistakes facegan finds exit with 1 and print one line, `facegan: error: ...`. Mistakes argparse
finds (a value of the wrong type, out of range, a missing argument) exit with 2 and print the
usage line(s) then one line, `facegan COMMAND: error: ...`.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, tiny

from facegan.data.prepare import prepare
from facegan.train.loop import train


@pytest.fixture(scope="module")
def paths(tmp_path_factory, one_thread) -> dict[str, str]:
    """Every good and bad file and folder the table names, made once."""
    root = tmp_path_factory.mktemp("bad")
    # 64 faces, not data32's 96: the table names the shape of their images.
    data = prepare("synthetic", root / "d32", count=64, size=32, progress=False)
    run = train(tiny(root, data, epochs=1), progress=False)
    # A run whose data was prepared again at another size after it started.
    moved = prepare("synthetic", root / "d-resized", count=64, size=32, progress=False)
    mismatch = train(tiny(root / "second", moved, epochs=1), progress=False)
    prepare("synthetic", moved, count=64, size=64, progress=False, force=True)

    (root / "a-file").write_text("not a directory\n")
    (root / "empty").mkdir()
    (root / "texts").mkdir()
    (root / "texts" / "notes.txt").write_text("no images here\n")
    (root / "faces.png").mkdir()  # a directory where a file is expected
    (root / "g.safetensors").mkdir()
    (root / "text.pt").write_text("hello, I am not a checkpoint\n")
    (root / "empty.pt").write_bytes(b"")
    (root / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "junk.safetensors").write_bytes(b"\xff" * 64)

    def broken_dataset(name: str, damage) -> str:
        copy = root / name
        shutil.copytree(data, copy)
        damage(copy)
        return str(copy)

    def broken_run(name: str, damage) -> str:
        copy = root / name
        shutil.copytree(run, copy)
        damage(copy)
        return str(copy)

    def set_epochs(run_dir: Path) -> None:
        config = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(json.dumps({**config, "epochs": "five"}))

    return {
        "tmp": str(root), "data": str(data), "run": str(run), "mismatch": str(mismatch),
        "checkpoint": str(run / "checkpoints" / "latest.pt"),
        "bad_manifest": broken_dataset("bad-manifest", lambda d: (d / "dataset.json").write_text("{not json")),
        "bad_images": broken_dataset("bad-images", lambda d: (d / "images.npy").write_bytes(b"garbage")),
        "wrong_shape": broken_dataset("wrong-shape", lambda d: np.save(d / "images.npy", np.zeros((10, 32, 32, 3), np.uint8))),
        "bad_config": broken_run("bad-config", lambda r: (r / "config.json").write_text("[1, 2")),
        "list_config": broken_run("list-config", lambda r: (r / "config.json").write_text("[1, 2]")),
        "typed_config": broken_run("typed-config", set_epochs),
        "no_checkpoint": broken_run("no-checkpoint", lambda r: shutil.rmtree(r / "checkpoints")),
    }


TRAIN = ["train", "--data", "{data}", "--runs-dir", "{tmp}/runs-new", "--device", "cpu", "--batch-size", "16",
         "--g-width", "8", "--d-width", "8", "--epochs", "1", "--quiet"]
SAMPLE = ["sample", "{run}", "--out", "{tmp}/out/faces.png", "--device", "cpu", "--quiet"]
EXPORT = ["export", "{run}", "--out", "{tmp}/out/g.safetensors"]
PREPARE = ["prepare", "synthetic", "--out", "{tmp}/prepared", "--count", "16", "--quiet"]

WHOLE = [("0", 2, "expected a positive number"), ("-3", 2, "expected a positive number"),
         ("abc", 2, "expected a whole number"), ("1.5", 2, "expected a whole number")]
RATES = [("-0.001", 1, "must be a positive number"), ("0", 1, "must be a positive number"),
         ("nan", 1, "must be a positive number"), ("inf", 1, "must be a positive number"),
         ("1e999", 1, "must be a positive number"), ("abc", 2, "invalid float value"),
         ("-1e-4", 2, "expected one argument")]  # argparse reads -1e-4 as an option
BETAS = [("1.5", 1, "betas must be two numbers in [0, 1)"), ("-0.1", 1, "betas must be"), ("nan", 1, "betas must be"),
         ("1", 1, "betas must be"), ("x", 2, "invalid float value")]
NATURAL = [("-1", 2, "expected 0 or more"), ("x", 2, "expected a whole number"), ("2.5", 2, "expected a whole number")]

CASES = [
    # train: every numeric option
    *[(TRAIN + [option, value], code, message)
      for option in ("--epochs", "--batch-size", "--latent-dim", "--g-width", "--d-width", "--synthetic-count", "--log-every")
      for value, code, message in WHOLE],
    *[(TRAIN + [option, value], code, message) for option in ("--lr", "--lr-g", "--lr-d") for value, code, message in RATES],
    *[(TRAIN + [option, value], code, message) for option in ("--beta1", "--beta2") for value, code, message in BETAS],
    *[(TRAIN + [option, value], code, message)
      for option in ("--seed", "--checkpoint-every", "--checkpoint-steps", "--max-rollbacks")
      for value, code, message in NATURAL],
    *[(TRAIN + ["--rollback-lr-factor", value], 1, "rollback-lr-factor must be a number between 0 and 1")
      for value in ("0", "1", "1.5", "-0.5", "nan")],
    (TRAIN + ["--rollback-lr-factor", "x"], 2, "invalid float value"),
    # train: names and places
    (TRAIN + ["--device", "tpu"], 1, "device must be auto, cpu, cuda, cuda:N or mps"),
    (TRAIN + ["--device", "cuda:x"], 1, "cuda:x"),
    (TRAIN + ["--preset", "../../etc"], 1, "unknown preset '../../etc'"),
    (TRAIN + ["--precision", "fp8"], 2, "invalid choice"),
    (TRAIN + ["--data", "{tmp}/nowhere"], 1, "is not a prepared dataset (no such directory)"),
    (TRAIN + ["--data", "{tmp}/a-file"], 1, "is a file, not a prepared dataset"),
    (TRAIN + ["--data", "{tmp}/empty"], 1, "is not a prepared dataset (it has no dataset.json)"),
    (TRAIN + ["--data", "{bad_manifest}"], 1, "dataset.json is damaged (not JSON)"),
    (TRAIN + ["--data", "{bad_images}"], 1, "images.npy is missing or damaged"),
    (TRAIN + ["--data", "{wrong_shape}"], 1, "the manifest says uint8 (64, 32, 32, 3)"),
    (TRAIN + ["--runs-dir", "{tmp}/a-file"], 1, "--runs-dir {tmp}/a-file is a file"),
    (TRAIN + ["--runs-dir", "{tmp}/a-file/runs"], 1, "--runs-dir: {tmp}/a-file is a file, so"),
    (TRAIN + ["--batch-size", "128"], 1, "fewer than one batch of 128"),
    # train --resume
    (["train", "--resume", "{tmp}/nowhere"], 1, "is not a facegan run directory (no config.json)"),
    (["train", "--resume", "{checkpoint}"], 1, "is a file; --resume takes a run directory"),
    (["train", "--resume", "{tmp}/empty"], 1, "is not a facegan run directory"),
    (["train", "--resume", "{bad_config}"], 1, "cannot read the configuration"),
    (["train", "--resume", "{list_config}"], 1, "is damaged: it holds a JSON list, not an object"),
    (["train", "--resume", "{typed_config}"], 1, "epochs must be a positive number, not five"),
    (["train", "--resume", "{no_checkpoint}"], 1, "has no checkpoint yet, so there is nothing to resume"),
    (["train", "--resume", "{mismatch}", "--quiet"], 1, "the data is 64x64 but the run is configured for 32x32"),
    (["train", "--resume", "{run}", "--latent-dim", "128"], 1, "cannot resume {run} with a different latent_dim"),
    (["train", "--resume", "{run}", "--preset", "dcgan"], 1, "--preset cannot change when resuming"),
    (["train", "--resume", "{run}", "--lr", "nan"], 1, "lr-g must be a positive number"),
    (["train", "--resume"], 2, "expected one argument"),
    # sample
    *[(SAMPLE + ["-n", value], 2, message) for value, _, message in WHOLE],
    (SAMPLE + ["--batch-size", "0"], 2, "expected a positive number"),
    (SAMPLE + ["--seed", "-1"], 2, "expected 0 or more"),
    (SAMPLE + ["--device", "tpu"], 1, "device must be auto, cpu, cuda, cuda:N or mps"),
    (["sample", "{tmp}/nowhere", "--out", "{tmp}/x.png"], 1, "does not exist; give a run directory"),
    (["sample", "{tmp}/empty", "--out", "{tmp}/x.png"], 1, "holds no checkpoint"),
    (["sample", "{data}", "--out", "{tmp}/x.png"], 1, "holds no checkpoint"),
    (["sample", "{tmp}/text.pt", "--out", "{tmp}/x.png"], 1, "text.pt is damaged or not a checkpoint"),
    (["sample", "{tmp}/empty.pt", "--out", "{tmp}/x.png"], 1, "empty.pt is damaged or not a checkpoint"),
    (["sample", "{tmp}/random.pt", "--out", "{tmp}/x.png"], 1, "random.pt is damaged or not a checkpoint"),
    (["sample", "{tmp}/a-file", "--out", "{tmp}/x.png"], 1, "a-file is damaged or not a checkpoint"),
    (["sample", "{tmp}/junk.safetensors", "--out", "{tmp}/x.png"], 1, "is damaged or not a safetensors file"),
    (["sample", "{run}", "--out", "{tmp}/faces.png"], 1, "--out {tmp}/faces.png is a directory"),
    (["sample", "{run}", "--out", "{tmp}/a-file/x.png"], 1, "--out: {tmp}/a-file is a file, so"),
    (["sample", "{run}", "--out", "{tmp}/a-file"], 1, "a-file is a file; give a folder for one PNG per image"),
    (["sample", "{run}"], 2, "the following arguments are required: --out"),
    # export
    (["export", "{tmp}/nowhere", "--out", "{tmp}/g2.safetensors"], 1, "does not exist; give a run directory"),
    (["export", "{tmp}/empty", "--out", "{tmp}/g2.safetensors"], 1, "holds no checkpoint"),
    (["export", "{tmp}/text.pt", "--out", "{tmp}/g2.safetensors"], 1, "is damaged or not a checkpoint"),
    (["export", "{run}", "--out", "{tmp}/g.safetensors"], 1, "is a directory; give a file name"),
    (["export", "{run}", "--out", "{tmp}/g.pt"], 1, "must be a file name ending in .safetensors"),
    (["export", "{run}", "--out", "{tmp}/a-file/g.safetensors"], 1, "--out: {tmp}/a-file is a file, so"),
    (["export", "{run}"], 2, "the following arguments are required: --out"),
    # prepare
    (["prepare", "{tmp}/empty", "--out", "{tmp}/o", "--quiet"], 1, "is empty; put face images in it"),
    (["prepare", "{tmp}/texts", "--out", "{tmp}/o", "--quiet"], 1, "but no images"),
    (["prepare", "{tmp}/nowhere", "--out", "{tmp}/o", "--quiet"], 1, "does not exist"),
    (["prepare", "synthetic", "--out", "{tmp}/a-file", "--count", "16", "--quiet"], 1, "is a file; --out must name a directory"),
    (PREPARE + ["--size", "7"], 1, "--size must be between"),
    (PREPARE + ["--size", "100000"], 1, "--size must be between"),
    *[(PREPARE + [option, value], code, message)
      for option in ("--size", "--count", "--crop", "--workers") for value, code, message in WHOLE],
    (PREPARE + ["--seed", "-1"], 2, "expected 0 or more"),
    (PREPARE + ["--filter", "nearest"], 2, "invalid choice"),
    # info
    (["info", "{tmp}/a-file"], 1, "is a file, not a prepared dataset"),
    (["info", "{tmp}/nowhere"], 1, "no such directory"),
    (["info", "{bad_manifest}"], 1, "is damaged (not JSON)"),
    (["info", "{wrong_shape}"], 1, "the manifest says"),
    # the command itself
    ([], 2, "the following arguments are required: COMMAND"),
    (["bogus"], 2, "invalid choice: 'bogus'"),
]


def _id(case) -> str:
    argv, _, _ = case
    return " ".join(argv[:1] + [a for a in argv[1:] if a.startswith("-") or not a.startswith("{")][-3:])


@pytest.mark.parametrize("argv, code, message", CASES, ids=[_id(case) for case in CASES])
def test_bad_input_ends_in_one_sentence(argv, code, message, paths, capsys):
    def fill(text: str) -> str:
        return text.format(**paths)

    exit_code, _, err = run_cli([fill(a) for a in argv], capsys)
    assert exit_code == code, err
    assert "Traceback" not in err
    lines = err.splitlines()
    if code == 1:
        assert len(lines) == 1 and lines[0].startswith("facegan: error: "), err
    else:
        assert lines[0].startswith("usage: facegan") and re.match(r"facegan( \w+)?: error: ", lines[-1]), err
        assert sum("error:" in line for line in lines) == 1
    assert fill(message) in lines[-1]
