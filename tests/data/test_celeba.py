"""CelebA: annotation parsing, layout detection, and preparing every layout to the same bytes."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_kaggle, make_official, make_zip

from facegan.data import open_prepared
from facegan.data.celeba import (
    ANNOTATIONS,
    attributes_to_bool,
    detect_celeba,
    parse_annotation,
)
from facegan.data.prepare import prepare
from facegan.errors import FaceganError

KIND = {kind.key: kind for kind in ANNOTATIONS}


def _independent_attr_rows(path: Path, names: set[str]) -> dict[str, list[int]]:
    """A plain line-by-line reading of list_attr_celeba.txt, to check the fast parser against."""
    rows = {}
    with open(path, newline="") as stream:
        for line in list(stream)[2:]:
            tokens = line.split()
            if tokens[0] in names:
                rows[tokens[0]] = [int(t) for t in tokens[1:]]
    return rows


# ----------------------------------------------------------------------------- parsing


def test_official_attribute_file_parses_completely(celeba_dir):
    data = (celeba_dir / "list_attr_celeba.txt").read_bytes()
    assert b"\r\n" in data  # the official CRLF endings
    annotation = parse_annotation(data, KIND["attributes"], "list_attr_celeba.txt")
    assert annotation.values.shape == (202_599, 40)
    assert annotation.columns[0] == "5_o_Clock_Shadow" and annotation.columns[-1] == "Young"
    assert all("\r" not in name for name in annotation.columns)
    assert annotation.filenames[0] == "000001.jpg" and annotation.filenames[-1] == "202599.jpg"
    expected = _independent_attr_rows(celeba_dir / "list_attr_celeba.txt", {"000001.jpg", "202599.jpg"})
    assert annotation.values[0].tolist() == expected["000001.jpg"]
    assert annotation.values[-1].tolist() == expected["202599.jpg"]
    attributes = attributes_to_bool(annotation)
    male = attributes[:, annotation.columns.index("Male")].mean()
    assert male == pytest.approx(0.417, abs=0.001)  # the published rate over all of CelebA


def test_partition_and_identity_files(celeba_dir):
    partition = parse_annotation((celeba_dir / "list_eval_partition.txt").read_bytes(), KIND["partition"], "p.txt")
    counts = np.bincount(partition.values[:, 0])
    assert counts.tolist() == [162_770, 19_867, 19_962]  # CelebA's official split sizes
    identity = parse_annotation((celeba_dir / "identity_CelebA.txt").read_bytes(), KIND["identity"], "i.txt")
    assert len(identity.filenames) == 202_599
    assert identity.values.min() == 1 and identity.values.max() == 10_177  # CelebA's identity count


def test_csv_and_txt_forms_parse_to_the_same_table(tmp_path, celeba_dir):
    kaggle = make_kaggle(tmp_path / "k", celeba_dir, [])
    for key, name in (("attributes", "list_attr_celeba"), ("partition", "list_eval_partition")):
        txt = parse_annotation((celeba_dir / f"{name}.txt").read_bytes(), KIND[key], f"{name}.txt")
        csv = parse_annotation((kaggle / f"{name}.csv").read_bytes(), KIND[key], f"{name}.csv")
        assert csv.filenames == txt.filenames
        np.testing.assert_array_equal(csv.values, txt.values)
        if key == "attributes":
            assert csv.columns == txt.columns


def test_bbox_and_landmark_files_in_both_forms():
    bbox_txt = b"2\r\nimage_id x_1 y_1 width height\r\n000001.jpg 95 71 226 313\r\n000002.jpg 72 94 221 306\r\n"
    bbox = parse_annotation(bbox_txt, KIND["bbox"], "list_bbox_celeba.txt")
    assert bbox.columns == ["x_1", "y_1", "width", "height"]
    assert bbox.values.tolist() == [[95, 71, 226, 313], [72, 94, 221, 306]]
    marks_csv = b"image_id,lefteye_x,lefteye_y,righteye_x,righteye_y,nose_x,nose_y,leftmouth_x,leftmouth_y,rightmouth_x,rightmouth_y\n000001.jpg,69,109,106,113,77,142,73,152,108,154\n"
    marks = parse_annotation(marks_csv, KIND["landmarks"], "list_landmarks_align_celeba.csv")
    assert marks.values.tolist() == [[69, 109, 106, 113, 77, 142, 73, 152, 108, 154]]


@pytest.mark.parametrize(
    ("data", "kind", "message"),
    [
        (b"3\r\nA B\r\n1.jpg 1 -1\r\n2.jpg 1 1\r\n", "attributes", "announces 3 rows but the file has 2"),
        (b"two\r\nA B\r\n1.jpg 1 -1\r\n", "attributes", "line 1 should be the number of rows"),
        (b"2\r\nA B\r\n1.jpg 1 -1\r\n2.jpg 1\r\n", "attributes", "line 4 has 1 values, expected 2"),
        (b"1\r\nA B\r\n1.jpg 1 yes\r\n", "attributes", "line 3 has 'yes', which is not an integer"),
        (b"1.jpg 0\n2.jpg 0 1\n", "partition", "line 2 has 2 values, expected 1"),
        (b"name,partition\n1.jpg,0\n", "partition", "header starting with image_id"),
        (b"\xff\xfe\x00binary", "attributes", "not a text file"),
        (b"1\r\nx_1 y_1\r\n1.jpg 1 2\r\n", "bbox", "should name 4 columns, not 2"),
    ],
)
def test_broken_annotation_files_say_where(data, kind, message):
    name = "list_eval_partition.csv" if b"," in data else "broken.txt"
    with pytest.raises(FaceganError, match=message):
        parse_annotation(data, KIND[kind], name)


def test_attribute_values_other_than_plus_minus_one_are_refused():
    annotation = parse_annotation(b"1\r\nA B\r\n1.jpg 1 0\r\n", KIND["attributes"], "a.txt")
    with pytest.raises(FaceganError, match="1.jpg has a value other than -1 or 1"):
        attributes_to_bool(annotation)


# ----------------------------------------------------------------------------- detection


def test_layouts_are_recognised(official_subset, kaggle_subset, zip_subset, tmp_path):
    assert detect_celeba(official_subset).name == "official"
    assert detect_celeba(official_subset / "img_align_celeba").name == "official"  # the image folder itself
    assert detect_celeba(kaggle_subset).name == "kaggle"
    assert detect_celeba(zip_subset).name == "official-zip"
    assert detect_celeba(zip_subset / "img_align_celeba.zip").name == "official-zip"  # the zip itself
    # Kaggle's archive.zip holds the whole Kaggle layout, CSVs included.
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(kaggle_subset.rglob("*")):
            if path.is_file():
                out.write(path, path.relative_to(kaggle_subset).as_posix())
    layout = detect_celeba(archive)
    assert layout.name == "kaggle-zip" and set(layout.annotations) == {"attributes", "partition"}


def test_a_plain_folder_is_not_celeba(celeba_89_dir):
    assert detect_celeba(celeba_89_dir) is None


def test_annotations_without_images_are_an_error(tmp_path, celeba_dir):
    shutil.copy(celeba_dir / "list_eval_partition.txt", tmp_path)
    (tmp_path / "list_attr_celeba.txt").symlink_to(celeba_dir / "list_attr_celeba.txt")
    with pytest.raises(FaceganError, match="no img_align_celeba/ folder or img_align_celeba.zip"):
        detect_celeba(tmp_path)


# ----------------------------------------------------------------------------- preparing


def test_the_real_sample_prepares_with_matching_attributes(tmp_path, celeba_dir, sample_names):
    out = prepare(str(celeba_dir), tmp_path / "c64", progress=False)
    dataset = open_prepared(out)
    assert len(dataset) == len(sample_names) == 4_328
    assert dataset.images.shape == (4_328, 64, 64, 3)
    assert dataset.filenames() == sample_names
    expected = _independent_attr_rows(celeba_dir / "list_attr_celeba.txt", set(sample_names))
    np.testing.assert_array_equal(dataset.attributes, np.array([expected[n] for n in sample_names]) == 1)
    manifest = dataset.manifest
    assert manifest["layout"] == "official" and manifest["split"] == "all"
    assert manifest["crop"]["box"] == [0, 20, 178, 198] and manifest["crop"]["source_size"] == [178, 218]
    assert manifest["annotated_images_missing"] == 202_599 - 4_328  # a partial extract, counted
    assert manifest["skipped"] == []
    assert set(manifest["labels"]) == {"attributes", "partition", "identity"}
    assert len(manifest["attribute_names"]) == 40
    assert manifest["content_hash"].startswith("sha256:")
    dataset.verify()


def test_kaggle_and_zip_copies_give_byte_identical_arrays(tmp_path, celeba_dir, sample_names):
    sources = {
        "official": celeba_dir,
        "kaggle": make_kaggle(tmp_path / "kaggle", celeba_dir, sample_names),
        "zip": make_zip(tmp_path / "zip", celeba_dir, sample_names),
    }
    prepared = {name: open_prepared(prepare(str(src), tmp_path / f"out-{name}", progress=False)) for name, src in sources.items()}
    reference = prepared["official"]
    for name in ("kaggle", "zip"):
        assert np.array_equal(prepared[name].images, reference.images), name
        assert np.array_equal(prepared[name].attributes, reference.attributes), name
        assert prepared[name].manifest["content_hash"] == reference.manifest["content_hash"], name
    assert prepared["zip"].manifest["layout"] == "official-zip"


def test_split_selects_rows_of_the_partition_file(tmp_path, celeba_dir, subset_names):
    root = make_official(tmp_path / "c", celeba_dir, subset_names)
    # The sample's ids are all in the official train split; give some others a split of their own.
    (root / "list_eval_partition.txt").unlink()
    lines = [f"{name} {i % 3}" for i, name in enumerate(subset_names)] + ["999999.jpg 1"]
    (root / "list_eval_partition.txt").write_text("\r\n".join(lines) + "\r\n")
    dataset = open_prepared(prepare(str(root), tmp_path / "valid", split="valid", progress=False))
    assert dataset.filenames() == subset_names[1::3]
    assert np.all(dataset.label("partition") == 1)
    assert dataset.manifest["split"] == "valid"
    assert dataset.manifest["annotated_images_missing"] == 1  # 999999.jpg is in valid but not on disk
    assert dataset.manifest["other_split_images"] == len(subset_names) - len(subset_names[1::3])


def test_a_split_that_selects_nothing_says_so(tmp_path, official_subset):
    with pytest.raises(FaceganError, match="none of the 120 images .* in the test split"):
        prepare(str(official_subset), tmp_path / "o", split="test", progress=False)


def test_split_without_a_partition_file_is_an_error(tmp_path, celeba_dir, subset_names):
    root = make_official(tmp_path / "c", celeba_dir, subset_names[:5])
    (root / "list_eval_partition.txt").unlink()
    with pytest.raises(FaceganError, match="--split train needs list_eval_partition.txt"):
        prepare(str(root), tmp_path / "o", split="train", progress=False)


def test_images_without_annotation_rows_are_skipped_and_listed(tmp_path, celeba_dir, subset_names):
    root = make_official(tmp_path / "c", celeba_dir, subset_names[:6])
    shutil.copy(celeba_dir / "img_align_celeba" / subset_names[0], root / "img_align_celeba" / "stranger.jpg")
    (root / "img_align_celeba" / "notes.txt").write_text("not an image")
    dataset = open_prepared(prepare(str(root), tmp_path / "o", progress=False))
    assert len(dataset) == 6
    reasons = {Path(s["file"]).name: s["reason"] for s in dataset.manifest["skipped"]}
    assert reasons == {"stranger.jpg": "no row in list_attr_celeba.txt", "notes.txt": "not a JPEG (CelebA's images are .jpg)"}


def test_images_and_annotations_that_do_not_match_are_an_error(tmp_path, celeba_dir, subset_names):
    root = make_official(tmp_path / "c", celeba_dir, [])
    shutil.copy(celeba_dir / "img_align_celeba" / subset_names[0], root / "img_align_celeba" / "holiday.jpg")
    with pytest.raises(FaceganError, match="the images and annotations do not match"):
        prepare(str(root), tmp_path / "o", progress=False)


def test_landmarks_and_boxes_are_kept_when_present(tmp_path, celeba_dir, subset_names):
    names = subset_names[:3]
    root = make_official(tmp_path / "c", celeba_dir, names)
    header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    rows = [f"{n} 69 109 106 113 77 142 73 152 108 154" for n in names]
    (root / "list_landmarks_align_celeba.txt").write_text("\r\n".join([str(len(rows)), header, *rows]) + "\r\n")
    rows = [f"{n} 95 71 226 313" for n in names]
    (root / "list_bbox_celeba.txt").write_text("\r\n".join([str(len(rows)), "image_id x_1 y_1 width height", *rows]) + "\r\n")
    dataset = open_prepared(prepare(str(root), tmp_path / "o", progress=False))
    marks = dataset.label("landmarks")
    assert marks.shape == (3, 5, 2)
    # The left eye at (69, 109) in the 178x218 image sits at ((69-0), (109-20)) * 64/178 in the output.
    np.testing.assert_allclose(marks[0, 0], [69 * 64 / 178, 89 * 64 / 178], rtol=1e-6)
    assert dataset.label("bbox").tolist() == [[95, 71, 226, 313]] * 3
    json.dumps(dataset.manifest)  # the manifest stays plain JSON
