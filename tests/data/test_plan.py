"""facegan.data.plan: what a prepare run will read, decided before any image is decoded.

A Plan is filled by the sources' planners (facegan.data.prepare.make_plan); these tests check the
contract every planner keeps: files in output order, the name and every label row of each file at
the same index, what was left out and why, and len() as the number of images to come.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facegan.data.plan import Plan
from facegan.data.prepare import make_plan

NOT_A_JPEG = b"these bytes are no image: a plan never decodes"


def test_len_is_the_files_or_for_synthetic_faces_the_count():
    assert len(Plan(source="x", kind="folder", layout="folder", files=["a.jpg", "b.jpg"])) == 2
    assert len(Plan(source="synthetic", kind="synthetic", layout="procedural", count=7)) == 7
    assert len(Plan(source="synthetic", kind="synthetic", layout="procedural", files=["ignored"], count=3)) == 3
    assert len(Plan(source="x", kind="celeba", layout="official", count=9)) == 0  # count is for synthetic only


def test_each_plan_has_its_own_lists_and_dicts():
    a, b = Plan(source="a", kind="folder", layout="folder"), Plan(source="b", kind="folder", layout="folder")
    a.files.append("x.jpg")
    a.names.append("x.jpg")
    a.skipped.append({"file": "y.txt", "reason": "r"})
    a.labels["attributes"] = np.zeros(1)
    a.info["k"] = 1
    a.attribute_names.append("Smiling")
    assert (b.files, b.names, b.skipped, b.labels, b.info, b.attribute_names) == ([], [], [], {}, {}, [])


def test_a_folder_plan_lists_images_in_order_keeps_others_as_skipped_and_counts_litter(tmp_path: Path):
    root = tmp_path / "photos"
    for rel in ["z.jpg", "b/2.png", "b/10.webp", "a.JPEG", "notes.txt", "README", ".DS_Store", "__MACOSX/._z.jpg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(NOT_A_JPEG)
    plan, _ = make_plan(str(root))
    assert (plan.kind, plan.layout, plan.source) == ("folder", "folder", str(root))
    assert plan.files == plan.names == ["a.JPEG", "b/10.webp", "b/2.png", "z.jpg"]  # sorted; undecodable bytes included
    assert len(plan) == 4 and plan.tree.read("z.jpg") == NOT_A_JPEG
    assert plan.skipped == [{"file": "README", "reason": "not a supported image type (no suffix)"},
                            {"file": "notes.txt", "reason": "not a supported image type (.txt)"}]
    assert plan.info["ignored_system_files"] == 2 and plan.labels == {} and plan.count == 0


def test_a_celeba_plan_gives_each_file_its_own_annotation_rows(tmp_path: Path):
    root = tmp_path / "celeba"
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    for name in ["000003.jpg", "000001.jpg", "000002.jpg", "000009.jpg", "cover.png"]:
        (images / name).write_bytes(NOT_A_JPEG)
    # Rows in another order than the files', so that a plan taking row i for file i is caught.
    (root / "list_attr_celeba.txt").write_text(
        "3\nSmiling Young\n000002.jpg -1  1\n000003.jpg  1  1\n000001.jpg  1 -1\n")
    (root / "list_eval_partition.txt").write_text("000003.jpg 2\n000001.jpg 0\n000002.jpg 1\n000009.jpg 0\n")
    plan, options = make_plan(str(root))
    assert (plan.kind, plan.layout) == ("celeba", "official") and options.crop == 178
    assert plan.names == ["000001.jpg", "000002.jpg", "000003.jpg"] and len(plan) == 3
    assert plan.files == [f"img_align_celeba/{name}" for name in plan.names]  # paths in the tree, names for the manifest
    assert plan.tree.read(plan.files[0]) == NOT_A_JPEG
    assert plan.attribute_names == ["Smiling", "Young"]
    assert plan.labels["attributes"].tolist() == [[True, False], [False, True], [True, True]]
    assert plan.labels["partition"].tolist() == [0, 1, 2]
    assert plan.skipped == [{"file": "img_align_celeba/cover.png", "reason": "not a JPEG (CelebA's images are .jpg)"},
                            {"file": "img_align_celeba/000009.jpg", "reason": "no row in list_attr_celeba.txt"}]
    assert (plan.info["annotated_images"], plan.info["annotated_images_missing"]) == (3, 0)


def test_a_synthetic_plan_renders_count_faces_from_a_seed_and_lists_no_files():
    plan, options = make_plan("synthetic", count=5, seed=3, size=32)
    assert (plan.kind, plan.layout, plan.count, plan.seed, len(plan)) == ("synthetic", "procedural", 5, 3, 5)
    assert plan.files == [] and plan.tree is None and plan.attribute_names and options.size == 32
