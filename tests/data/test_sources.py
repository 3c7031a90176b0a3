"""facegan.data.sources: a folder and a zip read the same way; litter recognised; what is not a source refused."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import pytest

from facegan.data.folder import plan_folder
from facegan.data.sources import DirTree, ZipTree, is_junk, open_tree
from facegan.errors import FaceganError

# Written in an order that is not the sorted one, with nesting, an empty folder and bytes of every value.
CONTENT = {
    "zeta.jpg": bytes(range(256)),
    "faces/b.png": b"\x89PNG b",
    "faces/a.png": b"\x89PNG a",
    "faces/deeper/c.jpg": b"\xff\xd8 c" * 1000,
    "A.txt": b"",
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "folder"
    for rel, data in CONTENT.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "empty").mkdir()
    return root


@pytest.fixture
def archive(tmp_path: Path, folder: Path) -> Path:
    path = tmp_path / "faces.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("faces/", "")  # a directory entry, as zip tools write them
        zf.writestr("empty/", "")
        for rel in CONTENT:
            zf.write(folder / rel, rel)
    return path


def test_a_folder_and_its_zip_list_the_same_sorted_paths_and_bytes(folder, archive):
    directory, zipped = open_tree(folder), open_tree(archive)
    assert isinstance(directory, DirTree) and isinstance(zipped, ZipTree)
    expected = sorted(CONTENT)  # directory entries and empty folders are not files
    assert directory.list_files() == zipped.list_files() == expected
    for rel in expected:
        assert directory.read(rel) == zipped.read(rel) == CONTENT[rel], rel


def test_a_folder_tree_follows_symlinks_to_files(tmp_path, folder):
    linked = tmp_path / "linked"
    (linked / "sub").mkdir(parents=True)
    (linked / "sub" / "face.jpg").symlink_to(folder / "zeta.jpg")
    tree = DirTree(linked)
    assert tree.list_files() == ["sub/face.jpg"] and tree.read("sub/face.jpg") == CONTENT["zeta.jpg"]


def test_each_tree_describes_a_file_so_that_a_user_can_find_it(folder, archive):
    assert DirTree(folder).describe("faces/a.png") == str(folder / "faces" / "a.png")
    assert ZipTree(archive).describe("faces/a.png") == f"{archive}:faces/a.png"


def test_a_zip_tree_survives_pickling_for_worker_processes(archive):
    tree = ZipTree(archive)
    assert tree.read("faces/a.png") == CONTENT["faces/a.png"]  # opens the handle
    copy = pickle.loads(pickle.dumps(tree))  # what a spawned worker receives: no open file
    assert copy.path == archive and copy.read("faces/deeper/c.jpg") == CONTENT["faces/deeper/c.jpg"]


@pytest.mark.parametrize("rel", ["__MACOSX/faces/._a.jpg", "faces/.DS_Store", "Thumbs.db", "faces/desktop.ini",
                                 "._a.jpg", ".hidden/a.jpg", "faces/.git/config"])
def test_operating_system_litter_is_junk(rel):
    assert is_junk(rel)


@pytest.mark.parametrize("rel", ["a.jpg", "faces/img_001.png", "my.photos/face.jpg", "thumbs/a.jpg", "MACOSX/a.jpg"])
def test_real_files_are_not_junk(rel):
    assert not is_junk(rel)


def test_open_tree_refuses_what_is_neither_a_folder_nor_a_zip(tmp_path):
    (tmp_path / "faces.tar").write_bytes(b"not a zip at all")
    with pytest.raises(FaceganError, match=r"faces\.tar is a file but not a zip archive; give a folder of images or a \.zip\."):
        open_tree(tmp_path / "faces.tar")
    with pytest.raises(FaceganError, match=r"missing does not exist; give a folder of images, a \.zip, or `synthetic`\."):
        open_tree(tmp_path / "missing")


def test_an_unreadable_zip_is_one_sentence(tmp_path):
    fake = tmp_path / "faces.zip"
    fake.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(FaceganError, match=rf"^{re.escape(str(fake))} is not a readable zip archive \(.+\)\.$"):
        ZipTree(fake).list_files()
    with pytest.raises(FaceganError, match=r"gone\.zip is not a readable zip archive"):
        ZipTree(tmp_path / "gone.zip").read("a.jpg")


def slip_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("faces/a.jpg", b"a")
        zf.writestr("../../evil.jpg", b"evil")
        zf.writestr("faces/../../up.jpg", b"up")
        zf.writestr("/abs.jpg", b"abs")
    return path


def test_zip_members_that_climb_out_with_dot_dot_are_never_planned(tmp_path):
    # Nothing is ever extracted; a ".." part also makes the name junk (it starts with a dot), so no plan reads it.
    assert is_junk("../../evil.jpg") and is_junk("faces/../../up.jpg")
    plan = plan_folder(ZipTree(slip_zip(tmp_path / "slip.zip")), "slip.zip")
    assert not any(".." in rel for rel in plan.files + [s["file"] for s in plan.skipped])


def test_absolute_zip_members_are_refused(tmp_path):
    plan = plan_folder(ZipTree(slip_zip(tmp_path / "slip.zip")), "slip.zip")
    assert plan.files == ["faces/a.jpg"]
