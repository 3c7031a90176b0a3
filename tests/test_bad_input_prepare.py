"""Bad input to `prepare` (and export's .json): nothing the user owns is lost, and every case ends in one sentence.

Each test runs the command as a user would, through `facegan.cli.main`, on tiny data in tmp_path,
and checks the exit code, the one line on stderr (never a traceback), and that nothing outside
the dataset it writes changed; for the data-loss cases, that the victim's files are still there,
byte for byte. docs/reliability.md ("Bad input") lists each case with the test that shows it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from facegan.cli import main
from facegan.data import open_prepared, sources
from facegan.data.prepare import prepare
from facegan.data.prepared import escape_name, unescape_name

# ----------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` -> the SHA-256 of its bytes ("dir" for folders, "-> target" for links)."""
    found = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def only_changed(before: dict[str, str], after: dict[str, str], *inside: str) -> None:
    """Nothing but the folders `inside` (relative to the snapshot's root) and what is under them changed."""
    def outside(snap: dict[str, str]) -> dict[str, str]:
        return {rel: digest for rel, digest in snap.items()
                if not any(rel == folder or rel.startswith(folder + os.sep) for folder in inside)}

    assert outside(after) == outside(before)


def run(argv: list[str], capsys) -> tuple[int, list[str]]:
    """Exit code and stderr lines of `facegan ARGV`."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.splitlines()


def refused(argv: list[str], capsys, *fragments: str) -> str:
    """`facegan ARGV` exits with 1 and prints exactly one sentence holding every fragment."""
    code, lines = run(argv, capsys)
    assert code == 1, lines
    assert len(lines) == 1 and lines[0].startswith("facegan: error: ") and lines[0].endswith("."), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def images(folder: Path, count: int = 3, side: int = 24) -> Path:
    """`count` small distinct PNGs in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


PREPARE = ["--size", "16", "--workers", "1", "--quiet"]


# ----------------------------------------------------------------------------- --force and --out


def test_force_never_deletes_the_source(tmp_path, capsys):
    victim = images(tmp_path / "victim")
    before = snapshot(tmp_path)
    refused(["prepare", victim, "--out", victim, "--force", *PREPARE], capsys, "is the source itself")
    refused(["prepare", victim, "--out", victim, *PREPARE], capsys, "is the source itself")
    assert snapshot(tmp_path) == before


def test_an_output_inside_the_source_is_refused_with_or_without_force(tmp_path, capsys):
    source = images(tmp_path / "W")
    images(source / "victim2", count=2)  # what a user keeps there
    before = snapshot(tmp_path)
    for force in (["--force"], []):
        refused(["prepare", source, "--out", source / "victim2", *force, *PREPARE], capsys, "is inside the source")
        refused(["prepare", source, "--out", source / "new", *force, *PREPARE], capsys, "is inside the source")
    assert snapshot(tmp_path) == before


def test_an_output_that_holds_the_source_is_refused(tmp_path, capsys):
    source = images(tmp_path / "parent" / "faces")
    before = snapshot(tmp_path)
    refused(["prepare", source, "--out", tmp_path / "parent", "--force", *PREPARE], capsys, "holds the source")
    refused(["prepare", source, "--out", tmp_path, "--force", *PREPARE], capsys, "holds the source")
    assert snapshot(tmp_path) == before


def test_symlinks_do_not_hide_the_source(tmp_path, capsys):
    source = images(tmp_path / "faces")
    (tmp_path / "link").symlink_to(source)
    before = snapshot(tmp_path)
    refused(["prepare", source, "--out", tmp_path / "link", "--force", *PREPARE], capsys, "is the source itself")
    refused(["prepare", tmp_path / "link", "--out", source / "x", "--force", *PREPARE], capsys, "is inside the source")
    assert snapshot(tmp_path) == before


def test_a_zip_source_is_neither_replaced_nor_held(tmp_path, capsys):
    folder = images(tmp_path / "faces")
    archive = tmp_path / "box" / "faces.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(folder.iterdir()):
            zipped.write(path, path.name)
    before = snapshot(tmp_path)
    refused(["prepare", archive, "--out", archive, "--force", *PREPARE], capsys, "is the source itself")
    refused(["prepare", archive, "--out", tmp_path / "box", "--force", *PREPARE], capsys, "holds the source")
    assert snapshot(tmp_path) == before


def test_force_refuses_a_folder_that_is_not_a_prepared_dataset(tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("x\n")
    (precious / "figures").mkdir()
    (precious / "figures" / "plot.pdf").write_bytes(b"%PDF")
    before = snapshot(tmp_path)
    line = refused(["prepare", "synthetic", "--count", "64", "--size", "32", "--out", precious, "--force", "--quiet"],
                   capsys, "holds 1 file and 1 folder that are not a prepared dataset (figures, thesis.tex)",
                   "--force replaces only a prepared dataset or an empty folder")
    assert "--force to replace" not in line
    assert snapshot(tmp_path) == before
    assert (precious / "thesis.tex").read_text() == "x\n"


def test_force_refuses_a_prepared_dataset_that_holds_something_else(tmp_path, capsys):
    out = prepare("synthetic", tmp_path / "data", count=16, size=16, progress=False)
    (out / "notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    refused(["prepare", "synthetic", "--count", "16", "--size", "16", "--out", out, "--force", "--quiet"], capsys,
            "holds a prepared dataset and 1 file that is not part of it (notes.txt)")
    assert snapshot(tmp_path) == before


def test_a_manifest_of_another_format_is_not_a_prepared_dataset(tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "dataset.json").write_text(json.dumps({"format": "someone-elses", "count": 3}))
    before = snapshot(tmp_path)
    refused(["prepare", "synthetic", "--count", "16", "--size", "16", "--out", out, "--force", "--quiet"], capsys,
            "holds 1 file that is not a prepared dataset (dataset.json)")
    assert snapshot(tmp_path) == before


def test_force_replaces_a_prepared_dataset_or_an_empty_folder(tmp_path, capsys):
    images(tmp_path / "faces")
    out = prepare("synthetic", tmp_path / "data", count=16, size=16, progress=False)
    (tmp_path / "empty").mkdir()
    before = snapshot(tmp_path)
    refused(["prepare", "synthetic", "--count", "8", "--size", "16", "--out", out, "--quiet"], capsys,
            "already holds a prepared dataset; pass --force")
    refused(["prepare", "synthetic", "--count", "8", "--size", "16", "--out", tmp_path / "empty", "--quiet"], capsys,
            "already holds an empty folder; pass --force")
    assert snapshot(tmp_path) == before
    for target in (out, tmp_path / "empty"):
        code, lines = run(["prepare", tmp_path / "faces", "--out", target, "--force", *PREPARE], capsys)
        assert (code, lines) == (0, [])
        assert len(open_prepared(target)) == 3
    only_changed(before, snapshot(tmp_path), "data", "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "empty", "faces"]  # no partial or replaced folder


def test_a_symlinked_output_replaces_the_dataset_it_points_at(tmp_path, capsys):
    real = prepare("synthetic", tmp_path / "disk" / "data", count=16, size=16, progress=False)
    (tmp_path / "data").symlink_to(real)
    code, lines = run(["prepare", "synthetic", "--count", "8", "--size", "16", "--out", tmp_path / "data", "--force",
                       "--quiet"], capsys)
    assert (code, lines) == (0, [])
    assert (tmp_path / "data").is_symlink() and len(open_prepared(real)) == 8
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["data"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run of 2 steps at 8x8 (about a second): something to export."""
    import torch

    from facegan.config import from_preset
    from facegan.train.loop import train

    root = tmp_path_factory.mktemp("run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = prepare("synthetic", root / "s8", count=32, size=8, progress=False)
        config = from_preset("dcgan", data=str(data), runs_dir=str(root / "runs"), epochs=1, batch_size=16, g_width=4,
                             d_width=4, grid_size=4, device="cpu", checkpoint_every_epochs=0)
        return train(config, progress=False)
    finally:
        torch.set_num_threads(threads)


def test_export_never_overwrites_an_unrelated_json(tmp_path, capsys, tiny_run):
    (tmp_path / "x.json").write_text('{"my": "settings"}\n')
    (tmp_path / "y.json").write_text("not even json")
    (tmp_path / "z.json").mkdir()
    before = snapshot(tmp_path)
    for name in ("x", "y", "z"):
        refused(["export", tiny_run, "--out", tmp_path / f"{name}.safetensors"], capsys,
                f"{tmp_path / name}.json exists and is not a facegan export description")
    assert snapshot(tmp_path) == before  # no .safetensors either: refused before writing anything
    # An earlier export's description is the one .json that may be replaced.
    code, lines = run(["export", tiny_run, "--out", tmp_path / "g.safetensors"], capsys)
    assert code == 0, lines
    code, lines = run(["export", tiny_run, "--out", tmp_path / "g.safetensors"], capsys)
    assert code == 0, lines
    assert json.loads((tmp_path / "g.json").read_text())["format"] == "facegan-generator"


# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("size", [8, 12, 15])
def test_every_size_the_option_allows_renders_synthetic_faces(tmp_path, capsys, size):
    code, lines = run(["prepare", "synthetic", "--count", "4", "--size", size, "--out", tmp_path / "s", "--quiet"], capsys)
    assert code == 0, lines
    assert all(line.startswith("facegan: warning: --size") for line in lines)  # 12 and 15 cannot be trained
    dataset = open_prepared(tmp_path / "s")
    assert dataset.resolution == size and np.asarray(dataset.images).std() > 20  # faces, not a flat fill


def test_a_size_that_cannot_be_trained_is_prepared_with_a_warning(tmp_path, capsys):
    before = snapshot(tmp_path)
    code, lines = run(["prepare", "synthetic", "--count", "4", "--size", "48", "--out", tmp_path / "s48", "--quiet"], capsys)
    assert code == 0
    assert len(lines) == 1 and lines[0].startswith("facegan: warning: --size 48: this size cannot be trained"), lines
    assert open_prepared(tmp_path / "s48").resolution == 48
    only_changed(before, snapshot(tmp_path), "s48")
    code, lines = run(["prepare", "synthetic", "--count", "4", "--size", "32", "--out", tmp_path / "s32", "--quiet"], capsys)
    assert (code, lines) == (0, [])  # a trainable size: no warning


def test_images_smaller_than_the_output_are_counted_and_warned_about_once(tmp_path, capsys):
    faces = images(tmp_path / "faces", count=3, side=40)
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(faces / "dot.png")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(faces / "small.png")
    before = snapshot(tmp_path)
    code, lines = run(["prepare", faces, "--out", tmp_path / "out", "--size", "32", "--workers", "1", "--quiet"], capsys)
    assert code == 0
    assert lines == [("facegan: warning: 2 of the 5 images were smaller than the 32x32 output (after any --crop) and were "
                      "upscaled, so they look blurred; dataset.json counts them as upscaled_images.")]
    assert open_prepared(tmp_path / "out").manifest["upscaled_images"] == 2
    only_changed(before, snapshot(tmp_path), "out")


# ----------------------------------------------------------------------------- file names


def test_names_that_are_not_utf8_or_hold_a_newline_are_stored_losslessly(tmp_path, capsys):
    faces = images(tmp_path / "faces", count=2)
    odd = [b"caf\xe9.png", b"new\nline.png", b"back\\slash\\n.png", "line\u2028sep.png".encode()]
    for i, name in enumerate(odd):
        (tmp_path / "faces" / os.fsdecode(name)).write_bytes((faces / f"{i % 2}.png").read_bytes())
    before = snapshot(tmp_path)
    code, lines = run(["prepare", faces, "--out", tmp_path / "out", *PREPARE], capsys)
    assert (code, lines) == (0, [])
    dataset = open_prepared(tmp_path / "out")
    text = (tmp_path / "out" / "filenames.txt").read_bytes().decode("utf-8")  # valid UTF-8
    assert text.count("\n") == len(dataset) == 6  # one line a file
    assert sorted(os.fsencode(name) for name in dataset.filenames()) == sorted([b"0.png", b"1.png", *odd])
    assert all((faces / name).exists() for name in dataset.filenames())
    only_changed(before, snapshot(tmp_path), "out")


def test_escaping_round_trips_every_character():
    names = ["plain.jpg", "a\\b", "\\n", "x\ny\rz", "caf\udce9", "\ud800", "\\x41", "\u2028"]
    for name in names:
        assert "\n" not in escape_name(name) and "\r" not in escape_name(name)
        assert unescape_name(escape_name(name)) == name


# ----------------------------------------------------------------------------- CelebA annotations


def celeba_copy(root: Path, celeba_dir: Path, partition: str, attributes: str | None = None) -> Path:
    """A CelebA copy of 3 real images (the sample lacks 000002 to 000007) with the annotation files given (official .txt layout)."""
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for name in ("000001.jpg", "000008.jpg", "000009.jpg"):
        (folder / name).symlink_to(celeba_dir / "img_align_celeba" / name)
    (root / "celeba" / "list_eval_partition.txt").write_text(partition)
    if attributes is not None:
        (root / "celeba" / "list_attr_celeba.txt").write_text(attributes)
    return root / "celeba"


@pytest.mark.parametrize("value", ["7", "300", "-1"])
def test_a_partition_outside_0_1_2_is_refused_naming_the_line(tmp_path, capsys, celeba_dir, value):
    source = celeba_copy(tmp_path, celeba_dir, f"000001.jpg 0\r\n000008.jpg {value}\r\n000009.jpg 2\r\n")
    before = snapshot(tmp_path)
    refused(["prepare", source, "--out", tmp_path / "out", *PREPARE], capsys,
            f"list_eval_partition.txt line 2 gives 000008.jpg the partition {value}; CelebA's partitions are 0 (train)")
    assert snapshot(tmp_path) == before


def test_identical_repeated_rows_are_reported_and_conflicting_ones_refused(tmp_path, capsys, celeba_dir):
    attributes = "3\nSmiling Young\n000001.jpg 1 -1\n000008.jpg -1 1\n000009.jpg 1 1\n"
    source = celeba_copy(tmp_path, celeba_dir, "000001.jpg 0\n000008.jpg 1\n000001.jpg 0\n000009.jpg 2\n", attributes)
    before = snapshot(tmp_path)
    code, lines = run(["prepare", source, "--out", tmp_path / "out", *PREPARE], capsys)
    assert code == 0
    assert len(lines) == 1 and lines[0].startswith("facegan: warning: 1 image has more than one identical row in "), lines
    manifest = open_prepared(tmp_path / "out").manifest
    assert [(Path(r["file"]).name, r["image"], r["lines"]) for r in manifest["duplicate_annotation_rows"]] == [
        ("list_eval_partition.txt", "000001.jpg", [1, 3])]
    assert open_prepared(tmp_path / "out").label("partition").tolist() == [0, 1, 2]
    only_changed(before, snapshot(tmp_path), "out")

    (source / "list_attr_celeba.txt").write_text("4\nSmiling Young\n000001.jpg 1 -1\n000008.jpg -1 1\n"
                                                 "000009.jpg 1 1\n000008.jpg 1 1\n")
    before = snapshot(tmp_path)
    refused(["prepare", source, "--out", tmp_path / "out2", *PREPARE], capsys,
            "list_attr_celeba.txt gives 000008.jpg two different rows (lines 4 and 6)")
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- signals and links


def _start_prepare(tmp_path: Path, out: Path, *, workers: int) -> subprocess.Popen:
    """`facegan prepare synthetic` in its own process group, with small chunks so that it winds down at once."""
    code = ("import sys; import facegan.data.prepare as p; p._RENDER_CHUNK = 16; from facegan.cli import main; "
            f"sys.exit(main(['prepare', 'synthetic', '--count', '100000', '--size', '16', '--out', {str(out)!r}, "
            f"'--workers', '{workers}', '--force', '--quiet']))")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@pytest.mark.parametrize("workers, group", [(1, True), (2, True), (2, False)], ids=["inline", "pool-group", "pool-parent"])
def test_sigterm_during_prepare_says_so_keeps_the_old_dataset_and_leaves_nothing(tmp_path, workers, group):
    out = prepare("synthetic", tmp_path / "data", count=8, size=16, progress=False)
    before = snapshot(tmp_path)
    process = _start_prepare(tmp_path, out, workers=workers)
    try:
        deadline = time.monotonic() + 30
        while not glob.glob(str(tmp_path / ".data.partial-*")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # well inside the rendering
        if group:  # a scheduler's stop reaches the whole group: the workers too
            os.killpg(process.pid, signal.SIGTERM)
        else:  # `kill PID`: the workers finish their chunk and go
            process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # never leave a worker behind, whatever failed
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.splitlines() == [(f"facegan: stopped by SIGTERM while preparing {out}; nothing was kept and any dataset "
                                 "already there is untouched, so run the same command again.")]
    assert snapshot(tmp_path) == before  # the old dataset, byte for byte; no partial folder


def test_a_symlink_loop_is_one_sentence(tmp_path, capsys):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    faces = images(tmp_path / "faces")
    before = snapshot(tmp_path)
    loop = "leads into a symlink loop"
    refused(["train", "--data", tmp_path / "a", "--device", "cpu", "--runs-dir", tmp_path / "runs", "--quiet"], capsys, loop)
    refused(["train", "--data", tmp_path / "a" / "d", "--device", "cpu", "--runs-dir", tmp_path / "runs", "--quiet"],
            capsys, loop)
    refused(["info", tmp_path / "a"], capsys, loop)
    refused(["prepare", tmp_path / "a", "--out", tmp_path / "out", *PREPARE], capsys, loop)
    refused(["prepare", tmp_path / "a" / "x", "--out", tmp_path / "out", *PREPARE], capsys, loop)
    refused(["prepare", faces, "--out", tmp_path / "a" / "out", *PREPARE], capsys, loop)
    refused(["prepare", faces, "--out", tmp_path / "b", *PREPARE], capsys, loop)
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- what is read as an image


def test_a_zip_member_larger_than_an_image_is_skipped_before_it_is_read(tmp_path, capsys, monkeypatch):
    """A 1 MB zip can declare a 1 GiB member: its declared size is checked first, and no more than the limit is read."""
    monkeypatch.setattr(sources, "MAX_IMAGE_BYTES", 1 << 20)  # 1 MiB here, 256 MiB by default (forked workers see it)
    folder = images(tmp_path / "faces")
    with zipfile.ZipFile(tmp_path / "faces.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"faces/{path.name}")
        archive.writestr("faces/huge.jpg", b"\xff\xd8\xff\xe0" + bytes(8 << 20))  # 8 MiB of zeros: a few KB packed
        archive.writestr("faces/text.png", b"not an image at all, whatever its name says")
    assert (tmp_path / "faces.zip").stat().st_size < 100_000
    reads = []
    real_read = sources.ZipTree.read
    monkeypatch.setattr(sources.ZipTree, "read", lambda self, rel: reads.append(rel) or real_read(self, rel))
    code, lines = run(["prepare", tmp_path / "faces.zip", "--out", tmp_path / "out", *PREPARE], capsys)
    assert code == 0, lines
    manifest = json.loads((tmp_path / "out" / "dataset.json").read_text())
    reasons = {entry["file"]: entry["reason"] for entry in manifest["skipped"]}
    assert manifest["count"] == 3 and set(reasons) == {"faces/huge.jpg", "faces/text.png"}
    assert "it is 8 MiB, more than the 1 MiB facegan reads as one image" in reasons["faces/huge.jpg"]
    assert "its first bytes are not those of a JPEG, PNG, WebP or BMP file" in reasons["faces/text.png"]
    assert reads == []  # images are streamed through read_image, never read whole unchecked


def test_an_image_stream_never_yields_more_than_the_limit(tmp_path):
    """Even when a member holds more than it declares, read_image stops at the limit."""
    tree = sources.DirTree(tmp_path)
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(5000))
    assert len(tree.read_image("a.png", limit=6000)) == 5008
    with pytest.raises(sources.Unreadable, match="it is 5 KiB, more than the 4 KiB facegan reads as one image"):
        tree.read_image("a.png", limit=4000)

    class Lying(sources.DirTree):
        def size(self, rel: str) -> int:
            return 10  # as a forged zip header could declare

    with pytest.raises(sources.Unreadable, match="it holds more than the 4 KiB facegan reads as one image"):
        Lying(tmp_path).read_image("a.png", limit=4000)
