"""ONNX and TorchScript exports against the checkpoint's G, and sampling an .onnx file without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli, tiny
from PIL import Image

from facegan.errors import FaceganError
from facegan.export import export
from facegan.generation import latents, load_generator
from facegan.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install -e '.[onnx]')")


@pytest.fixture(scope="module")
def run(tmp_path_factory, data32) -> Path:
    """A one-epoch tiny run at 32x32."""
    return train(tiny(tmp_path_factory.mktemp("onnx"), data32, epochs=1), progress=False)


def _reference(run: Path, z: torch.Tensor) -> np.ndarray:
    generator, _ = load_generator(run)
    with torch.no_grad():
        return generator(z).float().numpy()


def test_onnx_matches_the_checkpoints_generator_at_two_batch_sizes(tmp_path, capsys, run):
    out = tmp_path / "g.onnx"
    result = run_cli(["export", str(run), "--format", "onnx", "--out", str(out)], capsys)
    assert result.code == 0, result.err
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["format"] == "facegan-generator" and metadata["latent_dim"] == "100" and metadata["conditions"] == "[]"
    for count in (16, 5):  # the batch axis is dynamic
        z = latents(count, 100, 7)
        images = session.run(["images"], {"z": z.numpy()})[0]
        assert images.dtype == np.float32 and images.shape == (count, 3, 32, 32)
        difference = np.abs(images - _reference(run, z)).max()
        print(f"onnx max abs diff at batch {count}: {difference:.3g}")
        assert difference <= 1e-4


def test_torchscript_matches_the_checkpoints_generator(tmp_path, run):
    out = export(run, tmp_path / "g.pt", "torchscript")
    loaded = torch.jit.load(str(out))
    for count in (16, 3):
        z = latents(count, 100, 8)
        with torch.no_grad():
            assert np.abs(loaded(z).numpy() - _reference(run, z)).max() <= 1e-5


def test_sampling_an_onnx_file_never_imports_torch(tmp_path, run):
    model = export(run, tmp_path / "g.onnx", "onnx")
    out = tmp_path / "g.png"
    # A meta-path finder refuses torch: any import of it, however deep, fails the command.
    script = (
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from facegan.cli import main\n"
        f"code = main(['sample', {str(model)!r}, '-n', '16', '--out', {str(out)!r}, '--seed', '3'])\n"
        "assert 'torch' not in sys.modules\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 + 4 * 34, 2 + 4 * 34, 3)
    # The faces are those of NumPy's latents for the seed, through the checkpoint's own G.
    z = torch.from_numpy(np.random.default_rng(3).standard_normal((16, 100), dtype=np.float32))
    first = ((np.clip(_reference(run, z[:1]), -1, 1) + 1) * 127.5).round().astype(np.uint8)[0].transpose(1, 2, 0)
    assert np.abs(grid[2:34, 2:34].astype(int) - first).max() <= 1


def test_bad_onnx_files_and_formats_are_one_sentence(tmp_path, capsys, run):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    result = run_cli(["sample", str(bad), "-n", "4", "--out", str(tmp_path / "x.png")], capsys)
    assert result.code == 1 and "damaged or not an ONNX model" in result.err
    with pytest.raises(FaceganError, match="must be a file name ending in .onnx"):
        export(run, tmp_path / "g.pt", "onnx")
    with pytest.raises(FaceganError, match="--format must be one of"):
        export(run, tmp_path / "g.x", "pickle")


def test_a_conditional_generator_exports_with_its_condition_input(tmp_path, data32):
    run = train(tiny(tmp_path, data32, epochs=1, condition=("Smiling", "Male")), progress=False)
    out = export(run, tmp_path / "c.onnx", "onnx")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["conditions"] == '["Smiling", "Male"]'
    z, c = latents(6, 100, 3), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]] * 2)
    images = session.run(["images"], {"z": z.numpy(), "c": c.numpy()})[0]
    generator, _ = load_generator(run)
    with torch.no_grad():
        reference = generator(z, c).float().numpy()
    assert np.abs(images - reference).max() <= 1e-4
