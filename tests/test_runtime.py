"""runtime: the device a name means (each torchrun rank its own GPU) and the cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facegan import runtime
from facegan.errors import FaceganError


def test_auto_is_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "3")  # no GPU: torchrun's rank changes nothing
    assert runtime.resolve_device("auto") == torch.device("cpu")
    assert runtime.resolve_device("cpu") == torch.device("cpu")


def test_under_torchrun_auto_and_cuda_mean_this_ranks_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert runtime.resolve_device("auto") == torch.device("cuda", 3)
    assert runtime.resolve_device("cuda") == torch.device("cuda", 3)
    assert runtime.resolve_device("cuda:1") == torch.device("cuda", 1)  # a named GPU stays named
    monkeypatch.delenv("LOCAL_RANK")
    assert runtime.resolve_device("auto") == torch.device("cuda")


def test_devices_that_are_not_there_are_refused_in_one_sentence(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    with pytest.raises(FaceganError, match=r"--device cuda:0 was asked for but PyTorch sees no CUDA GPU"):
        runtime.resolve_device("cuda:0")
    with pytest.raises(FaceganError, match=r"--device mps was asked for but Apple's MPS is not available"):
        runtime.resolve_device("mps")
    with pytest.raises(FaceganError, match=r"device must be auto, cpu, cuda, cuda:N or mps, not 'tpu'"):
        runtime.resolve_device("tpu")


def test_a_device_passes_through():
    assert runtime.resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_the_cache_is_facegan_cache_else_xdg_else_home(monkeypatch, tmp_path):
    monkeypatch.setenv("FACEGAN_CACHE", str(tmp_path / "mine"))
    assert runtime.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("FACEGAN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtime.cache_dir() == tmp_path / "xdg" / "facegan"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert runtime.cache_dir() == Path.home() / ".cache" / "facegan"
