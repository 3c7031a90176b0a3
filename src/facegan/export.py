"""Export a trained generator as safetensors: tensors and a JSON configuration, nothing that runs code.

`facegan export runs/X --out generator.safetensors` writes G's weights (its EMA weights when the
run keeps them) with the run's configuration in the file's metadata, and the same description
as generator.json beside it, for people to read. `facegan sample generator.safetensors` reads
it back (facegan.generation.read_exported). Unlike a pickle, loading a safetensors file only
parses a JSON header and copies bytes.

`--format onnx` writes G as an ONNX graph (input `z`, float32 (batch, latent_dim), and `c`,
(batch, K), for a conditional run; output `images`, (batch, 3, H, W) in [-1, 1]) with a dynamic
batch axis, and the configuration in the model's metadata_props, so `facegan sample model.onnx`
and any ONNX runtime, in any language, can run it without PyTorch. It uses PyTorch's TorchScript-
based exporter (`dynamo=False`): it needs only the `onnx` package, where the newer exporter also
needs onnxscript. `--format torchscript` writes a traced module for `torch.jit.load` (C++ or Python,
no facegan needed). Both hold the same weights as the safetensors file (the EMA's when kept).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save

from facegan.config import TrainConfig
from facegan.errors import FaceganError
from facegan.files import describe_os_error, sha256_file, write_atomically
from facegan.generation import (
    EXPORT_FORMAT,
    EXPORT_SUFFIX,
    EXPORT_VERSION,
    load_generator,
)
from facegan.paths import output_file
from facegan.train.checkpoint import resolve_checkpoint


def export_generator(source: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the generator of a run directory or checkpoint to `out` (.safetensors) and its description
    to `out` with .json; the EMA weights when the checkpoint has them. Returns `out`."""
    out = output_file(out, "--out", suffixes=(EXPORT_SUFFIX,))
    _check_description_path(out.with_suffix(".json"), out)
    path, checkpoint = resolve_checkpoint(source)
    weights = "generator_ema" if checkpoint.get("generator_ema") is not None else "generator"
    if weights not in checkpoint or not isinstance(checkpoint.get("config"), dict):
        raise FaceganError(f"{path} is not a complete facegan checkpoint (it lacks the generator or its configuration).")
    config = TrainConfig.from_dict(checkpoint["config"])
    # Own contiguous copies: safetensors refuses tensors that share memory or are strided views.
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in checkpoint[weights].items()}
    description = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "weights": weights,
                   "epoch": checkpoint.get("epoch"), "step": checkpoint.get("step"), "config": config.to_dict(),
                   **({"labels": checkpoint["labels"]} if config.condition and "labels" in checkpoint else {})}
    metadata = {key: value if isinstance(value, str) else json.dumps(value) for key, value in description.items()}
    # Serialised in memory and written by us: safetensors' own save_file makes the file private (0o600).
    _write_atomically(out, lambda temporary: temporary.write_bytes(save(tensors, metadata=metadata)))
    description["file"] = out.name
    description["sha256"] = sha256_file(out)
    _write_atomically(out.with_suffix(".json"),
                      lambda temporary: temporary.write_text(json.dumps(description, indent=1) + "\n", encoding="utf-8"))
    return out


FORMATS = {"safetensors": EXPORT_SUFFIX, "onnx": ".onnx", "torchscript": ".pt"}
ONNX_OPSET = 17


def export(source: str | os.PathLike, out: str | os.PathLike, format: str = "safetensors") -> Path:
    """Write a run's generator as safetensors (the default), ONNX or TorchScript; returns `out`."""
    if format not in FORMATS:
        raise FaceganError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}.")
    if format == "safetensors":
        return export_generator(source, out)
    out = output_file(out, "--out", suffixes=(FORMATS[format],))
    generator, config = load_generator(source, "cpu")
    generator = generator.to(memory_format=torch.contiguous_format).float().eval()
    # Two samples, so BatchNorm in eval mode and every reshape are traced for a batch, not for 1.
    example = torch.zeros(2, config.latent_dim)
    metadata = {"format": EXPORT_FORMAT, "version": str(EXPORT_VERSION), "latent_dim": str(config.latent_dim),
                "resolution": str(config.resolution), "conditions": json.dumps(_conditions(config)),
                "config": json.dumps(config.to_dict())}
    if format == "onnx":
        _write_atomically(out, lambda temporary: _write_onnx(generator, example, temporary, metadata))
    else:
        _write_atomically(out, lambda temporary: _write_torchscript(generator, example, temporary, metadata))
    return out


def _conditions(config: TrainConfig) -> list[str]:
    """The attribute names a conditional run's G takes as `c` (empty for an unconditional run)."""
    return list(getattr(config, "condition", None) or [])


def _inputs(generator: torch.nn.Module, example: torch.Tensor, conditions: list[str]) -> tuple[torch.Tensor, ...]:
    # The seam for conditional runs: G(z, c) with c float (batch, K), K the condition names.
    return (example,) if not conditions else (example, torch.zeros(len(example), len(conditions)))


def _write_onnx(generator: torch.nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, str]) -> None:
    try:
        import onnx
    except ImportError:
        raise FaceganError("exporting ONNX needs the onnx package; install it with `pip install -e '.[onnx]'`.") from None
    conditions = json.loads(metadata["conditions"])
    inputs = _inputs(generator, example, conditions)
    names = ["z", "c"][: len(inputs)]
    with warnings.catch_warnings():  # the exporter's notice that a newer one exists, and tracing's notes
        warnings.simplefilter("ignore")
        torch.onnx.export(generator, inputs, str(path), dynamo=False, input_names=names, output_names=["images"],
                          dynamic_axes={name: {0: "batch"} for name in [*names, "images"]}, opset_version=ONNX_OPSET)
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(path))


def _write_torchscript(generator: torch.nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, str]) -> None:
    inputs = _inputs(generator, example, json.loads(metadata["conditions"]))
    with warnings.catch_warnings(), torch.no_grad():  # torch.jit's deprecation notices
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(generator, inputs)
        torch.jit.save(traced, str(path), _extra_files={"facegan.json": json.dumps(metadata)})


def _check_description_path(path: Path, out: Path) -> None:
    """The .json beside `out` may be replaced only when it is an earlier export's description."""
    if not path.exists() and not path.is_symlink():
        return
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a folder, unreadable, not JSON, not UTF-8
        description = None
    if not isinstance(description, dict) or description.get("format") != EXPORT_FORMAT:
        raise FaceganError(f"{path} exists and is not a facegan export description, and exporting to {out} would "
                           "overwrite it; move it away or choose another --out.")


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """files.write_atomically, with a disk error told as one sentence."""
    try:
        write_atomically(path, write)
    except (OSError, SafetensorError) as error:  # safetensors reports a full disk as its own error
        raise FaceganError(describe_os_error(error, str(path), "then export again")) from None
