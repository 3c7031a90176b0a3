"""CelebA as users have it: the official layout, the Kaggle layout, or a zip of either.

Official release: ``img_align_celeba/`` (or ``img_align_celeba.zip``) beside text files with CRLF
line endings; ``list_attr_celeba.txt``, ``list_bbox_celeba.txt`` and
``list_landmarks_align_celeba.txt`` open with a count line and a header line,
``list_eval_partition.txt`` and ``identity_CelebA.txt`` have neither.
Kaggle: ``img_align_celeba/img_align_celeba/`` beside CSV files with an ``image_id`` header.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from facegan.data.images import DecodeOptions, centre_box
from facegan.data.plan import Plan
from facegan.data.sources import DirTree, SourceTree, ZipTree, is_junk, open_tree
from facegan.errors import FaceganError

IMAGE_DIR = "img_align_celeba"
ALIGNED_SIZE = (178, 218)
DEFAULT_CROP = 178  # the centre 178x178 of the aligned image: Mimicry's CelebA protocol
SPLITS = {"train": 0, "valid": 1, "test": 2}


@dataclass(frozen=True)
class AnnotationKind:
    """One of CelebA's annotation files: its name and the shape of its rows."""

    key: str
    stem: str
    columns: int | None  # values per row; None = as many as the header names
    counted: bool  # the .txt form opens with a count line and a header line


ANNOTATIONS = (
    AnnotationKind("attributes", "list_attr_celeba", None, True),
    AnnotationKind("partition", "list_eval_partition", 1, False),
    AnnotationKind("identity", "identity_CelebA", 1, False),
    AnnotationKind("bbox", "list_bbox_celeba", 4, True),
    AnnotationKind("landmarks", "list_landmarks_align_celeba", 10, True),
)


@dataclass
class Annotation:
    """A parsed annotation file: one row of integers per image file name."""

    source: str
    filenames: list[str]
    columns: list[str]
    values: np.ndarray  # int32 (rows, columns)
    lines: list[int] = field(default_factory=list)  # the file's line number of each row, from 1
    repeated: list[dict] = field(default_factory=list)  # {"file", "image", "lines"}: identical rows given twice or more

    def row_of(self) -> dict[str, int]:
        """File name -> row index (its first row, when identical rows repeat it)."""
        rows: dict[str, int] = {}
        for i, name in enumerate(self.filenames):
            rows.setdefault(name, i)
        return rows


@dataclass
class CelebaLayout:
    """Where a CelebA copy keeps its images and its annotation files."""

    name: str  # "official", "kaggle", "official-zip", "kaggle-zip"
    images: SourceTree
    image_dir: str  # folder inside `images` holding the JPEGs ("" = the tree's root)
    annotations: dict[str, tuple[SourceTree, str]] = field(default_factory=dict)

    def image_files(self) -> list[str]:
        """Paths (inside `images`) of every file in the image folder, sorted."""
        prefix = f"{self.image_dir}/" if self.image_dir else ""
        return [
            rel
            for rel in self.images.list_files()
            if rel.startswith(prefix) and "/" not in rel[len(prefix) :] and not is_junk(rel)
        ]

    def read_annotation(self, key: str) -> Annotation | None:
        """Parse one annotation file, or None when the layout lacks it."""
        if key not in self.annotations:
            return None
        tree, rel = self.annotations[key]
        kind = next(k for k in ANNOTATIONS if k.key == key)
        return parse_annotation(tree.read(rel), kind, tree.describe(rel))


def _bad(source: str, line: int, what: str) -> FaceganError:
    return FaceganError(f"{source} does not parse as a CelebA annotation file: line {line} {what}.")


def parse_annotation(data: bytes, kind: AnnotationKind, source: str) -> Annotation:
    """Parse the .txt (official) or .csv (Kaggle) form of a CelebA annotation file."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FaceganError(f"{source} is not a text file; expected a CelebA annotation file.") from None
    annotation = _parse_csv(text, kind, source) if source.lower().endswith(".csv") else _parse_txt(text, kind, source)
    if kind.key == "partition":
        _check_partitions(annotation)
    annotation.repeated = _repeated_rows(annotation)
    return annotation


def _check_partitions(annotation: Annotation) -> None:
    """Only 0, 1 and 2 (train, valid, test): anything else would be stored wrapped around, or silently dropped."""
    bad = np.flatnonzero(~np.isin(annotation.values[:, 0], list(SPLITS.values())))
    if bad.size:
        row = int(bad[0])
        raise FaceganError(
            f"{annotation.source} line {annotation.lines[row]} gives {annotation.filenames[row]} the partition "
            f"{int(annotation.values[row, 0])}; CelebA's partitions are 0 (train), 1 (valid) and 2 (test), so correct that line."
        )


def _repeated_rows(annotation: Annotation) -> list[dict]:
    """Images named on more than one row: listed when the rows agree, refused when they do not."""
    seen: dict[str, int] = {}
    repeats: dict[str, list[int]] = {}
    for i, name in enumerate(annotation.filenames):
        first = seen.setdefault(name, i)
        if first != i:
            repeats.setdefault(name, [first]).append(i)
    for name, rows in repeats.items():
        for row in rows[1:]:
            if not np.array_equal(annotation.values[row], annotation.values[rows[0]]):
                raise FaceganError(
                    f"{annotation.source} gives {name} two different rows (lines {annotation.lines[rows[0]]} and "
                    f"{annotation.lines[row]}); keep the right one and delete the other."
                )
    return [{"file": annotation.source, "image": name, "lines": [annotation.lines[row] for row in rows]}
            for name, rows in repeats.items()]


def _parse_txt(text: str, kind: AnnotationKind, source: str) -> Annotation:
    lines = text.splitlines()  # handles the official CRLF endings
    first = 0
    columns: list[str] = [kind.key] if kind.columns == 1 else []
    expected_rows = None
    if kind.counted:
        if len(lines) < 2:
            raise _bad(source, len(lines) + 1, "is missing (expected a count line and a header line)")
        try:
            expected_rows = int(lines[0].strip())
        except ValueError:
            raise _bad(source, 1, f"should be the number of rows, not {lines[0].strip()[:40]!r}") from None
        columns = lines[1].split()
        if columns and columns[0] == "image_id":  # the bbox file names its first column
            columns = columns[1:]
        first = 2
    width = kind.columns or len(columns)
    if kind.columns and kind.counted and len(columns) != kind.columns:
        raise _bad(source, 2, f"should name {kind.columns} columns, not {len(columns)}")
    if expected_rows is not None:
        rows = sum(1 for line in lines[first:] if line.strip())
        if rows != expected_rows:
            raise _bad(source, 1, f"announces {expected_rows} rows but the file has {rows}")
    filenames, values, numbers = _parse_rows(lines, first, width, None, source)
    return Annotation(source, filenames, columns, values, numbers)


def _parse_csv(text: str, kind: AnnotationKind, source: str) -> Annotation:
    lines = text.splitlines()
    header = [name.strip() for name in lines[0].split(",")] if lines else []
    if not header or header[0] != "image_id":
        raise _bad(source, 1, "should be a header starting with image_id")
    columns = header[1:]
    if kind.columns and len(columns) != kind.columns:
        raise _bad(source, 1, f"should name {kind.columns} columns, not {len(columns)}")
    filenames, values, numbers = _parse_rows(lines, 1, len(columns), ",", source)
    return Annotation(source, filenames, columns, values, numbers)


def _parse_rows(
    lines: list[str], first: int, width: int, sep: str | None, source: str
) -> tuple[list[str], np.ndarray, list[int]]:
    """File names, an int32 (rows, width) matrix and each row's line number, from lines of `name value value ...`."""
    filenames: list[str] = []
    rests: list[str] = []
    numbers: list[int] = []
    for number, line in enumerate(lines[first:], start=first + 1):
        parts = line.split(sep, 1)
        if parts and parts[0].strip():
            filenames.append(parts[0].strip())
            rests.append(parts[1] if len(parts) > 1 else "")
            numbers.append(number)
    # NumPy's C parser is ~20x faster than int() per token; it stops at the first bad token,
    # and only then do we walk the lines to say which one is wrong.
    joiner = " " if sep is None else sep
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # older NumPy warns and returns what it read so far
            values = np.fromstring(joiner.join(rests), dtype=np.int64, sep=joiner)
    except ValueError:  # newer NumPy raises at the bad token
        values = np.empty(0, np.int64)
    if values.size != len(filenames) * width or not rests:
        _raise_first_bad_row(lines, first, width, sep, source)
    limits = np.iinfo(np.int32)
    outside = np.flatnonzero((values < limits.min) | (values > limits.max))
    if outside.size:  # int32 would wrap it around into another, plausible-looking number
        raise _bad(source, numbers[int(outside[0]) // width], f"has {int(values[outside[0]])}, far outside any CelebA value")
    return filenames, values.astype(np.int32).reshape(-1, width), numbers


def _raise_first_bad_row(lines: list[str], first: int, width: int, sep: str | None, source: str) -> None:
    for number, line in enumerate(lines[first:], start=first + 1):
        tokens = [token.strip() for token in line.split(sep)]
        if not tokens or not tokens[0]:
            continue
        if len(tokens) != width + 1:
            raise _bad(source, number, f"has {len(tokens) - 1} values, expected {width}")
        for token in tokens[1:]:
            if not token.lstrip("+-").isdigit():
                raise _bad(source, number, f"has {token!r}, which is not an integer")
    raise _bad(source, len(lines), "has no rows")


def attributes_to_bool(annotation: Annotation) -> np.ndarray:
    """CelebA's -1/1 attribute values as bool, refusing anything else."""
    values = annotation.values
    if not np.isin(values, (-1, 1)).all():
        row = int(np.argwhere(~np.isin(values, (-1, 1)))[0, 0])
        raise FaceganError(
            f"{annotation.source} does not parse as a CelebA attribute file: "
            f"{annotation.filenames[row]} has a value other than -1 or 1."
        )
    return values == 1


# ----------------------------------------------------------------------------- detection


def _find(files: list[str], names: tuple[str, ...]) -> str | None:
    """The shallowest file whose base name is one of `names`."""
    hits = [rel for rel in files if PurePosixPath(rel).name in names and not is_junk(rel)]
    return min(hits, key=lambda rel: (rel.count("/"), rel)) if hits else None


def _image_dir(files: list[str]) -> str | None:
    """The folder named img_align_celeba that directly holds the most JPEGs."""
    counts: dict[str, int] = {}
    for rel in files:
        parent = PurePosixPath(rel).parent
        if parent.name == IMAGE_DIR and rel.lower().endswith(".jpg") and not is_junk(rel):
            counts[str(parent)] = counts.get(str(parent), 0) + 1
    return max(counts, key=lambda d: (counts[d], -d.count("/"))) if counts else None


def _locate_annotations(trees: list[tuple[SourceTree, list[str]]]) -> dict[str, tuple[SourceTree, str]]:
    found: dict[str, tuple[SourceTree, str]] = {}
    for kind in ANNOTATIONS:
        for tree, files in trees:
            rel = _find(files, (f"{kind.stem}.txt", f"{kind.stem}.csv"))
            if rel is not None:
                found[kind.key] = (tree, rel)
                break
    return found


def detect_celeba(path: str | Path) -> CelebaLayout | None:
    """Recognise a CelebA copy at `path` (folder, zip, or the image folder itself), else None."""
    path = Path(path).expanduser()
    tree = open_tree(path)
    files = tree.list_files()
    image_tree, image_files = tree, files
    image_dir = _image_dir(files)
    if image_dir is None and isinstance(tree, DirTree):
        # The official download keeps the images zipped beside the annotation files.
        zip_rel = _find(files, (f"{IMAGE_DIR}.zip",))
        if zip_rel is not None:
            image_tree = ZipTree(path / zip_rel)
            image_files = image_tree.list_files()
            image_dir = _image_dir(image_files)
    if image_dir is None and path.name == IMAGE_DIR and isinstance(tree, DirTree):
        image_dir = ""  # the user pointed at the image folder itself
    # Annotation files live inside the tree, or beside the zip or image folder given.
    searched = [(tree, files), (image_tree, image_files)]
    if path.parent != path:
        beside = DirTree(path.parent)
        searched.append((beside, [p.name for p in path.parent.iterdir() if p.is_file()]))
    annotations = _locate_annotations(searched)
    if image_dir is None:
        if "attributes" in annotations and isinstance(tree, DirTree):
            raise FaceganError(
                f"{path} has CelebA's annotation files but no {IMAGE_DIR}/ folder or {IMAGE_DIR}.zip "
                "with the images; extract or copy them there."
            )
        return None
    nested = PurePosixPath(image_dir).parent.name == IMAGE_DIR
    csv_annotations = any(rel.endswith(".csv") for _, rel in annotations.values())
    name = "kaggle" if nested or csv_annotations else "official"
    if isinstance(image_tree, ZipTree):
        name += "-zip"
    return CelebaLayout(name, image_tree, image_dir, annotations)


# ----------------------------------------------------------------------------- planning


def plan_celeba(layout: CelebaLayout, source: str, split: str, options: DecodeOptions) -> Plan:
    """Match the layout's images to its annotation rows by file name and select a split."""
    plan = Plan(source=source, kind="celeba", layout=layout.name, tree=layout.images)
    files = []
    for rel in layout.image_files():
        if rel.lower().endswith((".jpg", ".jpeg")):
            files.append(rel)
        else:
            plan.skipped.append({"file": rel, "reason": "not a JPEG (CelebA's images are .jpg)"})
    if not files:
        raise FaceganError(f"{layout.images.describe(layout.image_dir)} holds no .jpg images.")
    names = [PurePosixPath(rel).name for rel in files]
    parsed = {kind.key: layout.read_annotation(kind.key) for kind in ANNOTATIONS}
    plan.info["annotation_files"] = {key: a.source for key, a in parsed.items() if a is not None}
    plan.info["duplicate_annotation_rows"] = [row for a in parsed.values() if a is not None for row in a.repeated]

    keep = np.ones(len(files), dtype=bool)
    rows: dict[str, np.ndarray] = {}  # key -> row index per file, -1 when absent
    for key, annotation in parsed.items():
        if annotation is None:
            continue
        lookup = annotation.row_of()
        rows[key] = np.array([lookup.get(name, -1) for name in names], dtype=np.int64)
        if key in ("attributes", "partition"):
            if not (rows[key] >= 0).any():
                raise FaceganError(
                    f"none of the {len(files)} images in {layout.images.describe(layout.image_dir)} "
                    f"is named in {annotation.source}; the images and annotations do not match."
                )
            missing = keep & (rows[key] < 0)
            plan.skipped += [{"file": files[i], "reason": f"no row in {PurePosixPath(annotation.source).name}"}
                             for i in np.flatnonzero(missing)]
            keep &= ~missing

    in_split = None
    if split != "all":
        if "partition" not in rows:
            raise FaceganError(
                f"--split {split} needs list_eval_partition.txt (or .csv) beside the images; "
                "it was not found, so use --split all or add the file."
            )
        partition = parsed["partition"].values[:, 0]
        in_split = partition == SPLITS[split]
        chosen = np.zeros(len(files), dtype=bool)
        chosen[keep] = in_split[rows["partition"][keep]]
        plan.info["other_split_images"] = int((keep & ~chosen).sum())
        if not chosen.any():
            raise FaceganError(
                f"{parsed['partition'].source} puts none of the {int(keep.sum())} images in "
                f"{layout.images.describe(layout.image_dir)} in the {split} split; use --split all or another split."
            )
        keep = chosen

    # How many annotated images (of the chosen split) the folder lacks: a partial extract.
    reference = parsed["partition"] if in_split is not None else (parsed["attributes"] or parsed["partition"])
    if reference is not None:
        wanted = set(np.asarray(reference.filenames)[in_split]) if in_split is not None else set(reference.filenames)
        plan.info["annotated_images_missing"] = len(wanted - set(names))
        plan.info["annotated_images"] = len(wanted)

    index = np.flatnonzero(keep)
    plan.files = [files[i] for i in index]
    plan.names = [names[i] for i in index]
    if "attributes" in rows:
        plan.attribute_names = list(parsed["attributes"].columns)
        plan.labels["attributes"] = attributes_to_bool(parsed["attributes"])[rows["attributes"][index]]
    if "partition" in rows:
        plan.labels["partition"] = _take(parsed["partition"], rows["partition"][index])[:, 0].astype(np.int8)
    if "identity" in rows:
        plan.labels["identity"] = _take(parsed["identity"], rows["identity"][index])[:, 0]
    if "bbox" in rows:  # in the coordinates of the in-the-wild images, kept as given
        plan.labels["bbox"] = _take(parsed["bbox"], rows["bbox"][index])
    if "landmarks" in rows:
        plan.labels["landmarks"] = _landmarks_to_output(_take(parsed["landmarks"], rows["landmarks"][index]), options)
    return plan


def _take(annotation: Annotation, rows: np.ndarray) -> np.ndarray:
    """Rows of an annotation, with -1 everywhere for files it does not name."""
    values = annotation.values[np.maximum(rows, 0)].copy()
    values[rows < 0] = -1
    return values


def _landmarks_to_output(values: np.ndarray, options: DecodeOptions) -> np.ndarray:
    """Aligned-image landmark pixels (x, y pairs) to pixels of the cropped, resized output."""
    left, top, right, _ = centre_box(*ALIGNED_SIZE, options.crop)
    scale = options.size / (right - left)
    points = values.reshape(len(values), -1, 2).astype(np.float32)
    points = (points - np.array([left, top], np.float32)) * scale
    points[values.reshape(points.shape) < 0] = np.nan
    return points
