"""Attribute conditioning end to end: the label table, --attrs, balanced batches, a conditional run."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import TINY_ARGS, run_cli, tiny
from PIL import Image

from facegan.conditions import LabelTable, grid_conditions, parse_attrs
from facegan.data import open_prepared
from facegan.errors import FaceganError, FaceganWarning
from facegan.train.batches import BatchSource, balance_weights, balanced_indices

NAMES = ("Smiling", "Male")


def _table() -> LabelTable:
    # 6 smiling women, 3 smiling men, 1 serious man; nobody serious and female.
    rows = np.array([[1, 0]] * 6 + [[1, 1]] * 3 + [[0, 1]] * 1, dtype=bool)
    return LabelTable.from_rows(NAMES, rows)


def test_the_table_is_the_joint_distribution():
    table = _table()
    assert table.matching({}) == 10 and table.matching({"Male": True}) == 4
    assert table.rate("Smiling") == pytest.approx(0.9)
    back = LabelTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert back.names == table.names and np.array_equal(back.combos, table.combos)
    assert np.array_equal(back.counts, table.counts)


def test_unnamed_attributes_come_from_the_rows_that_match():
    table = _table()
    labels = table.draw(4000, seed=1, fixed={"Male": True})
    assert (labels[:, 1] == 1).all()
    assert labels[:, 0].mean() == pytest.approx(0.75, abs=0.03)  # 3 of the 4 men smile
    assert np.array_equal(table.draw(50, seed=2), table.draw(50, seed=2))
    assert table.draw(4000, seed=3)[:, 0].mean() == pytest.approx(0.9, abs=0.02)


def test_an_impossible_combination_is_generated_with_a_warning():
    with pytest.warns(FaceganWarning, match="no training image has Smiling=0,Male=0; generating it anyway"):
        labels = _table().draw(10, seed=0, fixed={"Smiling": False, "Male": False})
    assert (labels == 0).all()


def test_a_damaged_table_is_one_sentence():
    with pytest.raises(FaceganError, match="damaged table of training labels"):
        LabelTable.from_dict({"names": ["a"], "combos": ["12"], "counts": [1]}, "x.pt")


@pytest.mark.parametrize(("text", "message"), [
    ("Smiling=1,Smiling=0", "names Smiling more than once"),
    ("Smiling=2", "NAME=1 or NAME=0"),
    ("Smiling", "NAME=1 or NAME=0"),
    ("Bald=1", "not conditioned on 'Bald'; it was conditioned on Smiling, Male"),
])
def test_bad_attrs(text, message):
    with pytest.raises(FaceganError, match=message):
        parse_attrs(text, NAMES)


def test_attrs_on_an_unconditional_run_say_so():
    with pytest.raises(FaceganError, match="no attributes"):
        parse_attrs("Smiling=1", ())


def test_grid_rows_switch_each_attribute_on_and_off():
    captions, rows = grid_conditions(NAMES)
    assert captions == ["none", "Smiling", "Male", "all"]
    assert rows.tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]


def test_balanced_batches_draw_each_combination_equally_often(data32):
    dataset = open_prepared(data32)
    column = dataset.attribute("Eyeglasses")
    assert 0 < column.mean() < 0.5  # a minority to balance
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FaceganWarning)  # 6 faces with glasses: warned of, below
        weights = balance_weights(dataset, ["Eyeglasses"])
    drawn = np.concatenate([np.concatenate(balanced_indices(weights, 16, seed=0, epoch=e)) for e in range(200)])
    assert column[drawn].mean() == pytest.approx(0.5, abs=0.02)
    # Ranks share one epoch's draws, as epoch_indices splits them.
    two = [np.concatenate(balanced_indices(weights, 16, seed=0, epoch=0, rank=r, world_size=2)) for r in (0, 1)]
    assert len(two[0]) == len(two[1]) == 48


def test_balance_refuses_an_empty_combination_and_warns_of_a_small_one(data32):
    dataset = open_prepared(data32)
    with pytest.warns(FaceganWarning, match=r"only 6 images have Eyeglasses=1; balanced, each is drawn about 8 times") as seen:
        balance_weights(dataset, ["Eyeglasses"])
    assert len(seen) == 1  # not the 90 without: they are drawn less than twice an epoch
    names = dataset.attribute_names
    both = [a for a in names if a != "Male"]
    empty = next((a for a in both if not (dataset.attribute(a) & dataset.attribute("Male")).any()), None)
    if empty is None:
        pytest.skip("every attribute meets Male in these 96 faces")
    with warnings.catch_warnings(), pytest.raises(FaceganError, match=f"no image of .* has {empty}=1,Male=1"):
        warnings.simplefilter("ignore", FaceganWarning)
        balance_weights(dataset, [empty, "Male"])


def test_balance_warns_of_a_group_of_any_size_drawn_many_times_an_epoch(data32, monkeypatch):
    from facegan.train import batches

    monkeypatch.setattr(batches, "FEW_IMAGES", 5)  # the 6 faces with glasses are not "few" now
    monkeypatch.setattr(batches, "MANY_REPEATS", 8)
    with pytest.warns(FaceganWarning, match=r"^6 images have Eyeglasses=1; balanced, each is drawn about 8 times an epoch, "
                      "so G may lose variety") as seen:
        balance_weights(open_prepared(data32), ["Eyeglasses"])
    assert len(seen) == 1
    monkeypatch.setattr(batches, "MANY_REPEATS", 9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FaceganWarning)
        balance_weights(open_prepared(data32), ["Eyeglasses"])  # drawn 8 times: below both rules, no warning


def test_batches_carry_the_labels(data32):
    source = BatchSource(open_prepared(data32), torch.device("cpu"), attributes=NAMES)
    images, labels = next(source.epoch(16, seed=0, epoch=0))
    assert images.shape[0] == 16 and labels.shape == (16, 2)
    assert set(labels.unique().tolist()) <= {0.0, 1.0}
    assert source.label_table().names == NAMES


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory, data32, one_thread):
    from facegan.train.loop import train

    root = tmp_path_factory.mktemp("conditional")
    return train(tiny(root, data32, condition=NAMES, epochs=1), progress=False)


def test_a_conditional_run_draws_a_row_per_condition(conditional_run):
    grid = Image.open(conditional_run / "samples" / "epoch-0001.png")
    rows = (grid.height - 2) // 34
    assert rows == 4  # none, Smiling, Male, all
    checkpoint = torch.load(conditional_run / "checkpoints" / "latest.pt", weights_only=True)
    assert checkpoint["labels"]["names"] == list(NAMES)
    assert json.loads((conditional_run / "config.json").read_text())["condition"] == list(NAMES)


def test_sample_takes_attrs(conditional_run, tmp_path, capsys):
    out = tmp_path / "smiling.png"
    assert run_cli(["sample", str(conditional_run), "-n", "4", "--attrs", "Smiling=1,Male=0", "--out", str(out),
                    "--device", "cpu", "--quiet"], capsys).code == 0
    assert Image.open(out).size[0] > 32
    result = run_cli(["sample", str(conditional_run), "-n", "4", "--attrs", "Bald=1", "--out", str(out),
                      "--device", "cpu", "--quiet"], capsys)
    assert result.code == 1 and "it was conditioned on Smiling, Male" in result.err


def test_the_condition_decides_the_image(conditional_run):
    from facegan.sample import sample_array

    a = sample_array(conditional_run, 4, seed=5, device="cpu", attrs="Smiling=1,Male=1")
    b = sample_array(conditional_run, 4, seed=5, device="cpu", attrs="Smiling=0,Male=1")
    assert np.array_equal(a, sample_array(conditional_run, 4, seed=5, device="cpu", attrs="Smiling=1,Male=1"))
    assert not np.array_equal(a, b)


def test_an_export_keeps_the_attributes(conditional_run, tmp_path):
    from facegan.export import export_generator
    from facegan.generation import load_label_table
    from facegan.sample import sample_array

    out = export_generator(conditional_run, tmp_path / "g.safetensors")
    assert load_label_table(out).names == NAMES
    assert json.loads(out.with_suffix(".json").read_text())["config"]["condition"] == list(NAMES)
    assert np.array_equal(sample_array(out, 4, seed=5, device="cpu", attrs="Smiling=1"),
                          sample_array(conditional_run, 4, seed=5, device="cpu", attrs="Smiling=1"))


def test_resume_refuses_other_attributes(conditional_run, capsys):
    result = run_cli(["train", "--resume", str(conditional_run), "--condition", "Smiling", "--epochs", "2", *TINY_ARGS], capsys)
    assert result.code == 1 and "different condition" in result.err


def test_condition_on_data_without_labels_is_one_sentence(tmp_path, data32, capsys):
    from facegan.data.prepare import prepare

    folder = tmp_path / "faces"
    folder.mkdir()
    for i, image in enumerate(open_prepared(data32).take(np.arange(20))):
        Image.fromarray(image).save(folder / f"{i}.png")
    plain = prepare(str(folder), tmp_path / "plain", size=32, progress=False)
    result = run_cli(["train", "--data", str(plain), "--condition", "Smiling", "--runs-dir", str(tmp_path / "runs"),
                      *TINY_ARGS], capsys)
    assert result.code == 1 and "holds no attributes" in result.err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    result = run_cli(["train", "--data", str(data32), "--condition", "Smiling,Bald_Spot", "--runs-dir",
                      str(tmp_path / "runs"), *TINY_ARGS], capsys)
    assert result.code == 1 and "has no attribute Bald_Spot" in result.err
