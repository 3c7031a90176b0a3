"""Labels from any source: a FairFace-shaped CSV, a CelebA-format attribute file, and bad label files."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegan.data import open_prepared
from facegan.data.labels import classify_column, match_rows, read_labels
from facegan.data.prepare import prepare
from facegan.errors import FaceganError, FaceganWarning

RACES = ["Black", "East Asian", "Indian", "Latino_Hispanic", "Middle Eastern", "Southeast Asian", "White"]
AGES = ["0-2", "3-9", "10-19", "20-29", "30-39", "more than 70"]


def _images(root: Path, rels: list[str]) -> None:
    rng = np.random.default_rng(0)
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / rel, format="JPEG")


def _prepare(source: Path, labels: Path, out: Path, **options) -> tuple[Path, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare(str(source), out, size=8, workers=1, progress=False, labels=labels, **options)
    return out, [str(w.message) for w in caught if issubclass(w.category, FaceganWarning)]


@pytest.fixture
def fairface(tmp_path: Path) -> tuple[Path, Path]:
    """A FairFace-shaped folder: train/1.jpg ... train/10.jpg, and a CSV with every kind of trouble in it."""
    root = tmp_path / "fairface"
    _images(root, [f"train/{i}.jpg" for i in range(1, 11)])  # 9 and 10 get no row
    rows = ["file,age,gender,race,service_test"]
    for i in range(1, 8):  # rows 1-7: good, one of each race
        rows.append(f"train/{i}.jpg,{AGES[i % len(AGES)]},{'Male' if i % 2 else 'Female'},{RACES[i - 1]},{'True' if i % 3 else 'False'}")
    rows.append("train/8.jpg,20-29,Male,White,maybe")  # malformed: not a boolean
    rows.append("train/11.jpg,20-29,Male,White,True")  # names no image
    rows.append("train/12.jpg,20-29,Male,White,TRUE")  # names no image
    rows.append("train/3.jpg,20-29,Male,White")  # malformed: 4 fields
    rows.append("3.jpg,30-39,Female,Indian,true")  # 3.jpg a second time (by bare name): duplicate
    labels = tmp_path / "fairface_label_train.csv"
    labels.write_text("\n".join(rows) + "\n")
    return root, labels


def test_fairface_csv_becomes_boolean_and_categorical_attributes(fairface, tmp_path: Path, caplog) -> None:
    root, labels = fairface
    with caplog.at_level(logging.INFO, logger="facegan"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare(str(root), tmp_path / "out", size=8, workers=1, progress=True, labels=labels)
    sentences = [str(w.message) for w in caught if issubclass(w.category, FaceganWarning)]
    dataset = open_prepared(tmp_path / "out")

    # Every row's values name the attributes, also rows that name no image: in the natural order of the age bins.
    ages = ["age=0-2", "age=3-9", "age=10-19", "age=20-29", "age=30-39", "age=more than 70"]
    assert dataset.attribute_names == [*ages, "gender=Female", "gender=Male", *[f"race={r}" for r in RACES], "service_test"]
    # 3.jpg has two rows, 8.jpg a malformed one, 9 and 10 none: 1, 2, 4, 5, 6, 7 remain.
    assert dataset.filenames() == [f"train/{i}.jpg" for i in (1, 2, 4, 5, 6, 7)]
    for row, i in enumerate((1, 2, 4, 5, 6, 7)):
        assert dataset.attribute(f"race={RACES[i - 1]}")[row]
        assert dataset.attributes[row, [n.startswith("race=") for n in dataset.attribute_names]].sum() == 1
        assert dataset.attribute(f"age={AGES[i % len(AGES)]}")[row]
        assert dataset.attribute("gender=Male")[row] == bool(i % 2)
        assert dataset.attribute("service_test")[row] == bool(i % 3)
    dataset.verify()  # the content hash covers the attributes and their names

    record = dataset.manifest["label_file"]
    assert record["name_column"] == "file" and record["format"] == "csv" and record["rows"] == 12
    assert record["rows_without_image"] == 2
    assert record["images_without_row"] == 3  # 8.jpg (its only row is malformed), 9.jpg, 10.jpg
    assert record["malformed_rows"] == 2
    assert [m["line"] for m in record["malformed_examples"]] == [9, 12]
    assert record["duplicate_rows"] == 2
    assert record["skipped_columns"] == []
    assert {s["file"]: s["reason"] for s in dataset.manifest["skipped"]} == {
        "train/3.jpg": "two or more rows of fairface_label_train.csv name it",
        "train/9.jpg": "no row in fairface_label_train.csv", "train/10.jpg": "no row in fairface_label_train.csv",
        "train/8.jpg": "no row in fairface_label_train.csv"}

    assert len(sentences) == 3  # one sentence per kind
    assert "3 images have no row in fairface_label_train.csv and were left out" in sentences[0]
    assert sentences[1].startswith("2 rows of fairface_label_train.csv are malformed and were skipped (the first, line 9, "
                                   "has 'maybe' in the boolean column service_test)")
    assert sentences[2].startswith("2 rows of fairface_label_train.csv name an image that another row names too")
    assert any(message.startswith("2 of the 12 rows of fairface_label_train.csv name no image in the folder")
               for message in caplog.messages)


def test_fairface_folder_given_as_its_train_subfolder_matches_by_bare_name(fairface, tmp_path: Path) -> None:
    root, labels = fairface
    out, _ = _prepare(root / "train", labels, tmp_path / "out")
    assert open_prepared(out).filenames() == [f"{i}.jpg" for i in (1, 2, 4, 5, 6, 7)]


def test_matching_prefers_the_relative_path_and_refuses_an_ambiguous_bare_name() -> None:
    files = ["train/1.jpg", "val/1.jpg", "val/2.jpg"]
    matching = match_rows(files, ["val/1.jpg", "1.jpg", "./train/1.jpg", "2.jpg", "x/3.jpg"])
    assert matching.row_of_image.tolist() == [2, 0, 3]
    assert (matching.ambiguous_rows, matching.rows_without_image, matching.duplicate_rows) == (1, 1, 0)


def test_column_rule() -> None:
    assert classify_column(["1", "-1", "1"])[0] == "boolean"
    assert classify_column(["True", "false", "TRUE"])[0] == "boolean"
    assert classify_column(["20-29", "3-9", "20-29"])[0] == "categorical"
    assert classify_column(["0.5", "12", "3"]) == ("skipped", "it is numeric (not 1/0/-1), not a class")
    assert classify_column([f"person {i}" for i in range(60)])[1].startswith("it has 60 distinct values")


def test_free_text_and_numeric_columns_are_skipped_with_a_note(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    _images(root, [f"{i:03d}.png" for i in range(60)])
    rows = ["filename,caption,score,smiling"] + [f"{i:03d}.png,a face number {i},{i / 7:.3f},{i % 2}" for i in range(60)]
    (tmp_path / "labels.csv").write_text("\r\n".join(rows) + "\r\n")
    out, sentences = _prepare(root, tmp_path / "labels.csv", tmp_path / "out")
    dataset = open_prepared(out)
    assert dataset.attribute_names == ["smiling"]
    assert dataset.attribute("smiling").tolist() == [bool(i % 2) for i in range(60)]
    assert sentences == [("column caption of labels.csv was not made an attribute: it has 60 distinct values, more than "
                          "the 50 a categorical column may have."),
                         "column score of labels.csv was not made an attribute: it is numeric (not 1/0/-1), not a class."]


def _celeba_attr_file(path: Path, names: list[str], rows: list[str]) -> Path:
    path.write_bytes(("\r\n".join([str(len(rows)), " ".join(names) + " ", *rows]) + "\r\n").encode())
    return path


def test_celeba_format_file_labels_a_folder_and_brings_the_partition(tmp_path: Path, caplog) -> None:
    root = tmp_path / "celeba-small"
    _images(root, ["000002.jpg", "000003.jpg", "000005.jpg"])
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    rows = [f"{i:06d}.jpg {' '.join(('1' if (i + j) % 2 else '-1') for j in range(3))}" for i in range(1, 7)]
    labels = _celeba_attr_file(annotations / "list_attr_celeba.txt", ["Male", "Smiling", "Young"], rows)
    (annotations / "list_eval_partition.txt").write_bytes(
        b"".join(f"{i:06d}.jpg {0 if i < 4 else 2}\r\n".encode() for i in range(1, 7)))
    with caplog.at_level(logging.INFO, logger="facegan"):
        prepare(str(root), tmp_path / "out", size=8, workers=1, progress=True, labels=labels)
    dataset = open_prepared(tmp_path / "out")
    assert dataset.attribute_names == ["Male", "Smiling", "Young"]
    assert dataset.attributes.tolist() == [[False, True, False], [True, False, True], [True, False, True]]
    assert dataset.label("partition").tolist() == [0, 0, 2]
    assert dataset.manifest["label_file"]["rows_without_image"] == 3
    assert "3 of the 6 rows of list_attr_celeba.txt name no image in the folder (usual when the folder holds part of a " \
           "collection); dataset.json counts them as label_file.rows_without_image." in caplog.messages

    held_out, _ = _prepare(root, labels, tmp_path / "test", split="test")
    assert open_prepared(held_out).filenames() == ["000005.jpg"]
    assert open_prepared(held_out).manifest["other_split_images"] == 2


def test_celeba_format_row_with_a_bad_value_is_malformed(tmp_path: Path) -> None:
    labels = _celeba_attr_file(tmp_path / "attrs.txt", ["A", "B"], ["1.jpg 1 -1", "2.jpg 1 7", "3.jpg 1", "4.jpg x 1"])
    table = read_labels(labels)
    assert table.keys == ["1.jpg"] and table.values.tolist() == [[True, False]]
    assert [m["line"] for m in table.malformed] == [4, 5, 6]


def test_no_name_column_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("path,age\n1.jpg,3-9\n")
    with pytest.raises(FaceganError, match=r"^--labels .*labels.csv has no column naming the image files: it looked for "
                                           r"file, filename, image_id and found path, age\.$"):
        read_labels(tmp_path / "labels.csv")


def test_labels_that_match_no_image_are_an_error(fairface, tmp_path: Path) -> None:
    root, _ = fairface
    (tmp_path / "other.csv").write_text("image_id,smiling\nx.jpg,1\ny.jpg,0\n")
    with pytest.raises(FaceganError, match=r"none of the 2 rows of --labels .*other.csv names one of the 10 images"):
        prepare(str(root), tmp_path / "out", size=8, workers=1, progress=False, labels=tmp_path / "other.csv")
    assert not (tmp_path / "out").exists()


def test_split_without_a_partition_and_labels_on_synthetic_are_refused(fairface, tmp_path: Path) -> None:
    root, labels = fairface
    with pytest.raises(FaceganError, match="--split train applies to CelebA, or to a folder whose --labels"):
        prepare(str(root), tmp_path / "out", size=8, workers=1, progress=False, labels=labels, split="train")
    with pytest.raises(FaceganError, match="--labels applies to a folder of images"):
        prepare("synthetic", tmp_path / "out", size=8, count=4, progress=False, labels=labels)


def test_real_celeba_89_subset_with_the_official_attribute_file(celeba_89_dir: Path, celeba_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "celeba-89"
    root.mkdir()
    names = [f"{i:06d}.jpg" for i in range(1, 8001, 160)]
    for name in names:
        (root / name).symlink_to(celeba_89_dir / name)
    out, sentences = _prepare(root, celeba_dir / "list_attr_celeba.txt", tmp_path / "out", crop=89)
    dataset = open_prepared(out)
    assert sentences == []
    assert dataset.filenames() == names and len(dataset.attribute_names) == 40
    lines = (celeba_dir / "list_attr_celeba.txt").read_text().splitlines()
    expected = [[value == "1" for value in lines[1 + int(name[:6])].split()[1:]] for name in names]
    assert dataset.attributes.tolist() == expected
    assert dataset.label("partition").tolist() == [0] * len(names)  # ids up to 162,770 are CelebA's train split
    assert dataset.manifest["label_file"]["rows_without_image"] == 202_599 - len(names)
    assert dataset.manifest["crop"]["box"] == [0, 10, 89, 99]
