"""The built-in dataset: synthetic faces prepared once into the cache, then opened from there."""

from __future__ import annotations

import numpy as np

from facegan.data import builtin, open_prepared
from facegan.data.prepare import prepare


def test_built_in_faces_are_prepared_once_then_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGAN_CACHE", str(tmp_path / "cache"))
    first = builtin.builtin_faces(24, 16)
    assert first.path == tmp_path / "cache" / "synthetic-24-16px-seed0" and len(first) == 24 and first.resolution == 16
    # the same faces `facegan prepare synthetic` makes with the built-in seed
    reference = open_prepared(prepare("synthetic", tmp_path / "ref", count=24, size=16, seed=builtin.SEED, progress=False))
    assert np.array_equal(first.images, reference.images)
    calls = []
    monkeypatch.setattr(builtin, "prepare", lambda *a, **k: calls.append(a))
    again = builtin.builtin_faces(24, 16)
    assert calls == [] and np.array_equal(again.images, first.images)  # opened, not prepared again


def test_open_data_is_the_given_dataset_or_the_built_in_one(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGAN_CACHE", str(tmp_path / "cache"))
    given = prepare("synthetic", tmp_path / "given", count=20, size=16, seed=5, progress=False)
    assert builtin.open_data(given, 999, None).path == given
    folder = tmp_path / "elsewhere"
    assert builtin.builtin_faces(20, 16, folder).path.parent == folder
    assert builtin.open_data(None, 20, 16).path == tmp_path / "cache" / "synthetic-20-16px-seed0"
