"""Untrusted model files: safetensors export and loading, and pickles that would run code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny
from safetensors import safe_open
from safetensors.torch import save_file

from facegan.errors import FaceganError
from facegan.export import export_generator
from facegan.generation import read_exported
from facegan.sample import sample_array
from facegan.train.checkpoint import hash_path, load_checkpoint, save_checkpoint
from facegan.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, data32) -> Path:
    """A one-epoch tiny run at 32x32."""
    return train(tiny(tmp_path_factory.mktemp("export"), data32, epochs=1), progress=False)


def test_export_writes_safetensors_and_json_and_samples_the_same_faces(tmp_path, capsys, run):
    out = tmp_path / "models" / "generator.safetensors"
    code, _, err = run_cli(["export", str(run), "--out", str(out)], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.parent.iterdir()) == ["generator.json", "generator.safetensors"]  # nothing else
    with safe_open(str(out), framework="pt") as file:
        metadata = file.metadata()
        names = set(file.keys())
    checkpoint = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert names == set(checkpoint["generator"])
    assert metadata["format"] == "facegan-generator" and metadata["weights"] == "generator"
    assert json.loads(metadata["config"]) == checkpoint["config"]
    description = json.loads(out.with_suffix(".json").read_text())
    assert description["config"] == checkpoint["config"] and description["step"] == checkpoint["step"]
    assert len(description["sha256"]) == 64
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    # `facegan sample` takes the exported file and draws the very same faces as from the run.
    assert np.array_equal(sample_array(out, 8, seed=3, device="cpu", precision="fp32"),
                          sample_array(run, 8, seed=3, device="cpu", precision="fp32"))
    code, _, err = run_cli(["sample", str(out), "-n", "4", "--out", str(tmp_path / "faces.png"), "--device", "cpu", "--quiet"], capsys)
    assert code == 0 and (tmp_path / "faces.png").is_file(), err


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_export_takes_the_ema_generator_when_the_checkpoint_has_one(tmp_path, run):
    checkpoint = load_checkpoint(run / "checkpoints" / "latest.pt")
    ema = {name: tensor + 1 if tensor.is_floating_point() else tensor for name, tensor in checkpoint["generator"].items()}
    save_checkpoint({**checkpoint, "generator_ema": ema}, tmp_path / "with-ema.pt")
    out = export_generator(tmp_path / "with-ema.pt", tmp_path / "g.safetensors")
    weights, _ = read_exported(out)
    assert all(torch.equal(weights[name], ema[name]) for name in ema)
    assert json.loads(out.with_suffix(".json").read_text())["weights"] == "generator_ema"


def test_loading_a_safetensors_file_checks_what_it_holds(tmp_path, run):
    out = export_generator(run, tmp_path / "g.safetensors")
    weights, config = read_exported(out)
    # Not facegan's: no metadata.
    save_file(weights, str(tmp_path / "plain.safetensors"))
    with pytest.raises(FaceganError, match="is not a facegan generator"):
        read_exported(tmp_path / "plain.safetensors")
    # A configuration with keys this facegan does not know, or of the wrong types.
    for bad in ({**config.to_dict(), "exec": "import os"}, {**config.to_dict(), "g_width": "wide"}):
        save_file(weights, str(tmp_path / "bad.safetensors"),
                  metadata={"format": "facegan-generator", "version": "1", "config": json.dumps(bad)})
        with pytest.raises(FaceganError, match="damaged configuration|unknown configuration keys|g-width must be"):
            read_exported(tmp_path / "bad.safetensors")
    # Weights of another shape than the configuration's generator.
    save_file({**weights, next(iter(weights)): torch.zeros(3)}, str(tmp_path / "shape.safetensors"),
              metadata={"format": "facegan-generator", "version": "1", "config": json.dumps(config.to_dict())})
    with pytest.raises(FaceganError, match="do not fit a dcgan generator"):
        sample_array(tmp_path / "shape.safetensors", 2, device="cpu")
    # Bytes that are not safetensors at all.
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" + os.urandom(64))
    with pytest.raises(FaceganError, match="is damaged or not a safetensors file"):
        read_exported(tmp_path / "junk.safetensors")


# ----------------------------------------------------------------------------- pickles that run code


class Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_checkpoint(path: Path, marker: Path, *, with_hash: bool) -> Path:
    """A file that looks like a facegan checkpoint but runs code when unpickled without weights_only."""
    state = {"format": "facegan-checkpoint", "version": 1, "config": {}, "generator": Payload(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    if with_hash:  # whoever planted it can write a matching hash file too: the hash is no defence against that
        import hashlib
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        hash_path(path).write_text(json.dumps({"format": "facegan-checkpoint-sha256", "file": path.name, "sha256": digest}))
    return path


def test_the_payload_really_runs_code_when_loaded_unsafely(tmp_path):
    marker = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "evil.pt", marker, with_hash=False)
    torch.load(evil, weights_only=False)  # what facegan never does: proves the payload is live
    assert marker.exists()


@pytest.mark.parametrize("command", ["sample", "export", "resume"])
def test_a_checkpoint_that_would_run_code_is_refused_and_its_payload_never_runs(tmp_path, capsys, run, command):
    marker = tmp_path / "pwned"
    if command == "resume":
        import shutil

        victim = tmp_path / "run"
        shutil.copytree(run, victim)
        evil_checkpoint(victim / "checkpoints" / "latest.pt", marker, with_hash=True)
        argv = ["train", "--resume", str(victim), "--epochs", "2", "--quiet"]
    else:
        evil = evil_checkpoint(tmp_path / "evil.pt", marker, with_hash=False)
        out = str(tmp_path / ("faces.png" if command == "sample" else "g.safetensors"))
        argv = [command, str(evil), "--out", out] + (["--quiet"] if command == "sample" else [])
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and "Traceback" not in err and err.count("\n") == 1
    assert "was refused: it asks to import posix.system, which could run code when loaded" in err
    assert "weights_only" not in err  # never torch's advice to load it unsafely
    assert not marker.exists()
    with pytest.raises(FaceganError, match="was refused"):
        load_checkpoint(tmp_path / "evil.pt" if command != "resume" else tmp_path / "run" / "checkpoints" / "latest.pt")
    assert not marker.exists()
