"""Labels for any folder of images: a CSV naming each file, or a CelebA-format attribute file.

A CSV names its images in a `file`, `filename` or `image_id` column. Its other columns become bool
attributes by this rule, applied to each column in turn:

- boolean: every value is one of 1/0/-1 or true/false (any case), except for a few rows (at most
  5%, or one in a small file) whose value does not parse (empty included); those rows are
  malformed and skipped. The attribute is the column.
- numeric (every value is a number, not only 0/1/-1): skipped, with a note; a number is no class.
- categorical: at most MAX_CATEGORIES distinct values; one attribute per value, `column=value`
  (FairFace's `race=East Asian`, `age=20-29`). An empty value sets none of them.
- anything else (free text, more distinct values): skipped, with a note.

A CelebA-format file (a count line, a line of attribute names, then `name v1 v2 ...` rows of 1/-1)
is all boolean. Rows are matched to images by their path relative to the folder, then by bare
file name when exactly one image has it (match_rows).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from facegan.data.celeba import ANNOTATIONS, parse_annotation
from facegan.data.plan import Plan
from facegan.errors import FaceganError

NAME_COLUMNS = ("file", "filename", "image_id")
MAX_CATEGORIES = 50
_BAD_BOOLEAN_SHARE = 0.05  # a column this close to boolean is boolean with malformed rows, not text
_TRUE = {"1", "true"}
_FALSE = {"0", "-1", "false"}
_EXAMPLES = 10  # malformed rows listed by line in the manifest; the rest are counted


@dataclass
class LabelTable:
    """A parsed label file: one row of bool attributes per named image, and what was left out."""

    source: str
    format: str  # "csv" or "celeba"
    name_column: str | None
    keys: list[str]  # the image each row names, as written
    lines: list[int]  # each row's line number in the file, from 1
    attribute_names: list[str]
    values: np.ndarray  # bool (rows, attributes)
    malformed: list[dict] = field(default_factory=list)  # {"line", "reason"}, rows not kept
    skipped_columns: list[dict] = field(default_factory=list)  # {"column", "reason"}


def read_labels(path: str | Path) -> LabelTable:
    """Parse a label file (CSV, or CelebA's attribute format) into names and a bool matrix."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as error:
        raise FaceganError(f"cannot read --labels {path}: {error.strerror or error}.") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FaceganError(f"--labels {path} is not a UTF-8 text file; give a CSV or a CelebA attribute file.") from None
    lines = text.splitlines()  # CRLF or LF
    if not any(line.strip() for line in lines):
        raise FaceganError(f"--labels {path} is empty; give a CSV with a header line, or a CelebA attribute file.")
    if lines[0].strip().isdigit():
        return parse_celeba_format(lines, str(path))
    return parse_csv(text, str(path))


def parse_celeba_format(lines: list[str], source: str) -> LabelTable:
    """A count line, a line of attribute names, then `name v1 v2 ...` rows of 1/-1 (or 1/0)."""
    if len(lines) < 2 or not lines[1].split():
        raise FaceganError(f"--labels {source} opens with a count but has no line of attribute names after it.")
    names = lines[1].split()
    if names[0] in NAME_COLUMNS:  # some copies name the first column
        names = names[1:]
    keys: list[str] = []
    numbers: list[int] = []
    rests: list[str] = []
    malformed: list[dict] = []
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            malformed.append({"line": number, "reason": f"{len(parts) - 1} values, expected {len(names)}"})
            continue
        keys.append(parts[0])
        numbers.append(number)
        rests.append(line.split(None, 1)[1])
    # NumPy's parser reads 8 million tokens in well under a second, str-by-str would take several.
    try:
        values = np.fromstring(" ".join(rests), dtype=np.int64, sep=" ") if rests else np.zeros(0, np.int64)
    except ValueError:
        values = np.zeros(0, np.int64)
    if values.size != len(keys) * len(names):  # some token is no integer: find the rows, one by one
        values = np.array([[_int_or_2(token) for token in rest.split()] for rest in rests], np.int64).reshape(-1, len(names))
    values = values.reshape(-1, len(names))
    good = np.isin(values, (-1, 0, 1)).all(axis=1)
    for row in np.flatnonzero(~good):
        malformed.append({"line": numbers[row], "reason": "a value other than 1, 0 or -1"})
    index = np.flatnonzero(good)
    return LabelTable(source, "celeba", None, [keys[i] for i in index], [numbers[i] for i in index], names,
                      values[index] == 1, sorted(malformed, key=lambda m: m["line"]))


def _int_or_2(token: str) -> int:
    """The integer a token spells, or 2 (no CelebA value) when it spells none."""
    try:
        return int(token)
    except ValueError:
        return 2


def parse_csv(text: str, source: str) -> LabelTable:
    """A CSV with a header line; the name column and the attribute columns as the module says."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
    except (StopIteration, csv.Error) as error:
        raise FaceganError(f"--labels {source} does not parse as a CSV ({error}).") from None
    lowered = [name.lower() for name in header]
    name_index = next((lowered.index(name) for name in NAME_COLUMNS if name in lowered), None)
    if name_index is None:
        raise FaceganError(f"--labels {source} has no column naming the image files: it looked for "
                           f"{', '.join(NAME_COLUMNS)} and found {', '.join(header[:8]) or 'no columns'}.")
    keys: list[str] = []
    numbers: list[int] = []
    rows: list[list[str]] = []
    malformed: list[dict] = []
    try:
        for fields in reader:
            number = reader.line_num
            if not any(value.strip() for value in fields):
                continue
            if len(fields) != len(header):
                malformed.append({"line": number, "reason": f"{len(fields)} fields, expected {len(header)}"})
                continue
            keys.append(fields[name_index].strip())
            numbers.append(number)
            rows.append([value.strip() for value in fields])
    except csv.Error as error:
        raise FaceganError(f"--labels {source} does not parse as a CSV at line {reader.line_num} ({error}).") from None

    columns: list[np.ndarray] = []
    names: list[str] = []
    skipped: list[dict] = []
    bad_rows = np.zeros(len(rows), dtype=bool)
    for j, column in enumerate(header):
        if j == name_index:
            continue
        cells = [row[j] for row in rows]
        kind, reason = classify_column(cells)
        if kind == "boolean":
            lowered_cells = [cell.lower() for cell in cells]
            unparsed = np.array([cell not in _TRUE and cell not in _FALSE for cell in lowered_cells], dtype=bool)
            for i in np.flatnonzero(unparsed & ~bad_rows):
                malformed.append({"line": numbers[i], "reason": f"{cells[i]!r} in the boolean column {column}"})
            bad_rows |= unparsed
            columns.append(np.array([cell in _TRUE for cell in lowered_cells], dtype=bool))
            names.append(column)
        elif kind == "categorical":
            for value in sorted({cell for cell in cells if cell}, key=_natural):
                columns.append(np.array([cell == value for cell in cells], dtype=bool))
                names.append(f"{column}={value}")
        else:
            skipped.append({"column": column, "reason": reason})
    values = np.stack(columns, axis=1) if columns else np.zeros((len(rows), 0), dtype=bool)
    keep = np.flatnonzero(~bad_rows)
    return LabelTable(source, "csv", header[name_index], [keys[i] for i in keep], [numbers[i] for i in keep], names,
                      values[keep], sorted(malformed, key=lambda m: m["line"]), skipped)


def classify_column(cells: list[str]) -> tuple[str, str]:
    """("boolean" | "categorical" | "skipped", why skipped) for one column's values."""
    present = [cell for cell in cells if cell]
    lowered = [cell.lower() for cell in present]
    if present:
        unparsed = len(cells) - sum(1 for cell in lowered if cell in _TRUE or cell in _FALSE)
        if unparsed <= max(1, _BAD_BOOLEAN_SHARE * len(cells)) and unparsed < len(cells) / 2:
            return "boolean", ""
    else:
        return "skipped", "it is empty"
    if all(_is_number(cell) for cell in present):
        return "skipped", "it is numeric (not 1/0/-1), not a class"
    distinct = len(set(present))
    if distinct > MAX_CATEGORIES:
        return "skipped", f"it has {distinct:,} distinct values, more than the {MAX_CATEGORIES} a categorical column may have"
    return "categorical", ""


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _natural(value: str) -> tuple:
    """Age bins in their order: 0-2, 3-9, 10-19 ... then words (`more than 70`) alphabetically."""
    match = re.match(r"\d+", value)
    return (0, int(match.group()), value) if match else (1, 0, value)


@dataclass
class Matching:
    """Which row labels each image, and what matched nothing."""

    row_of_image: np.ndarray  # int64 per image: its row in the table, -1 when none (or several)
    image_of_row: np.ndarray  # int64 per row: the image it names, -1 when none
    rows_without_image: int = 0
    ambiguous_rows: int = 0  # a bare name that several images share: matched to none of them
    duplicate_rows: int = 0  # rows naming an image that another row names too: all of them dropped
    duplicate_images: int = 0


def _normalise(key: str) -> str:
    path = key.strip().replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def match_rows(image_files: list[str], keys: list[str]) -> Matching:
    """Match label rows to images: the path relative to the folder first, then the bare name when unique."""
    by_path = {rel: i for i, rel in enumerate(image_files)}
    by_name: dict[str, list[int]] = {}
    for i, rel in enumerate(image_files):
        by_name.setdefault(PurePosixPath(rel).name, []).append(i)
    image_of_row = np.full(len(keys), -1, dtype=np.int64)
    ambiguous = 0
    for row, key in enumerate(keys):
        key = _normalise(key)
        if key in by_path:
            image_of_row[row] = by_path[key]
            continue
        candidates = by_name.get(PurePosixPath(key).name, [])
        if len(candidates) == 1:
            image_of_row[row] = candidates[0]
        elif len(candidates) > 1:
            ambiguous += 1
    matched = image_of_row[image_of_row >= 0]
    rows_per_image = np.bincount(matched, minlength=len(image_files))
    repeated = rows_per_image > 1
    row_of_image = np.full(len(image_files), -1, dtype=np.int64)
    single = (image_of_row >= 0) & ~repeated[np.maximum(image_of_row, 0)]
    row_of_image[image_of_row[single]] = np.flatnonzero(single)
    return Matching(
        row_of_image=row_of_image,
        image_of_row=image_of_row,
        rows_without_image=int((image_of_row < 0).sum()) - ambiguous,
        ambiguous_rows=ambiguous,
        duplicate_rows=int(rows_per_image[repeated].sum()),
        duplicate_images=int(repeated.sum()),
    )


def apply_labels(plan: Plan, path: str | Path) -> None:
    """Give a folder plan the labels of `path`: images without a row leave the plan; all is counted in plan.info."""
    table = read_labels(path)
    source = Path(path).name
    if not table.keys:
        raise FaceganError(f"--labels {table.source} has no usable rows ({len(table.malformed):,} malformed); "
                           "check its format.")
    matching = match_rows(plan.files, table.keys)
    has_row = matching.row_of_image >= 0
    if not has_row.any():
        raise FaceganError(f"none of the {len(table.keys):,} rows of --labels {table.source} names one of the "
                           f"{len(plan.files):,} images in {plan.source}; the names do not match (the file column "
                           f"holds e.g. {table.keys[0]!r}, the folder e.g. {plan.files[0]!r}).")
    matched = matching.image_of_row[matching.image_of_row >= 0]
    duplicated = np.bincount(matched, minlength=len(plan.files)) > 1  # these lost their rows, they do have some
    without_row = ~has_row & ~duplicated
    for i in np.flatnonzero(~has_row):
        reason = f"two or more rows of {source} name it" if duplicated[i] else f"no row in {source}"
        plan.skipped.append({"file": plan.files[i], "reason": reason})
    index = np.flatnonzero(has_row)
    plan.files = [plan.files[i] for i in index]
    plan.names = [plan.names[i] for i in index]
    rows = matching.row_of_image[index]
    plan.attribute_names = list(table.attribute_names)
    plan.labels["attributes"] = table.values[rows]
    record = {
        "path": table.source, "format": table.format, "name_column": table.name_column, "rows": len(table.keys) + len(table.malformed),
        "rows_without_image": matching.rows_without_image, "images_without_row": int(without_row.sum()),
        "malformed_rows": len(table.malformed), "malformed_examples": table.malformed[:_EXAMPLES],
        "duplicate_rows": matching.duplicate_rows, "ambiguous_rows": matching.ambiguous_rows,
        "skipped_columns": table.skipped_columns,
    }
    partition = _celeba_partition(table, [PurePosixPath(rel).name for rel in plan.files])
    if partition is not None:
        plan.labels["partition"], record["partition_file"] = partition
    plan.info["label_file"] = record


def _celeba_partition(table: LabelTable, names: list[str]) -> tuple[np.ndarray, str] | None:
    """CelebA's train/valid/test (0/1/2) per image, when the labels are CelebA's and its partition file sits beside them."""
    beside = Path(table.source).parent / "list_eval_partition.txt"
    if table.format != "celeba" or not beside.is_file():
        return None
    kind = next(k for k in ANNOTATIONS if k.key == "partition")
    annotation = parse_annotation(beside.read_bytes(), kind, str(beside))
    lookup = annotation.row_of()
    rows = np.array([lookup.get(name, -1) for name in names], dtype=np.int64)
    if (rows < 0).any():  # a partial partition would make a split that lies: leave it out
        return None
    return annotation.values[rows, 0].astype(np.int8), str(beside)
