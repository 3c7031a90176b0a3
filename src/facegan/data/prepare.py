"""Turn a source (CelebA, a folder, synthetic faces) into a prepared dataset directory, once.

A prepared dataset is ``images.npy`` (uint8 N x S x S x 3), optional per-image label arrays
(``attributes.npy`` bool N x K, ``partition.npy``, ``identity.npy``, ``landmarks.npy``,
``bbox.npy``), ``filenames.txt`` and the manifest ``dataset.json``, written last.

Rows are decoded by worker processes and streamed to disk in order: memory stays bounded
whatever the dataset's size. Everything is written into a hidden sibling directory that is
renamed into place only when complete, so an interrupted run leaves nothing that looks finished
and can simply be run again.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facegan import __version__
from facegan.config import RESOLUTIONS
from facegan.data import synthetic
from facegan.data.celeba import DEFAULT_CROP, SPLITS, detect_celeba, plan_celeba
from facegan.data.folder import plan_folder
from facegan.data.images import (
    FILTERS,
    DecodeOptions,
    SkipImage,
    centre_box,
    decode_image,
)
from facegan.data.labels import apply_labels
from facegan.data.plan import Plan
from facegan.data.prepared import (
    ESCAPING,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    write_filenames,
)
from facegan.data.sources import open_tree
from facegan.errors import FaceganError, FaceganWarning, Interrupted
from facegan.files import fsync_directory, other_process_alive
from facegan.paths import real_path

log = logging.getLogger(__name__)

SIZES = range(8, 1025)  # synthetic.MIN_SIZE is 8 too: every source can be prepared at every one of them
SYNTHETIC = "synthetic"
_HEADER_BYTES = 128  # fixed .npy header, so the final row count can be patched in place
_DECODE_CHUNK = 64  # files per worker task: amortises IPC, keeps the stream fine-grained
_RENDER_CHUNK = 1024  # synthetic faces per task: rendering is vectorised, 1024 runs ~1.6x faster than 64


# ----------------------------------------------------------------------------- planning


def make_plan(
    source: str, *, split: str = "all", size: int = 64, crop: int | None = None, filter: str = "bilinear",
    jpeg_draft: bool = True, count: int = 50_000, seed: int = 0, labels: str | os.PathLike | None = None,
) -> tuple[Plan, DecodeOptions]:
    """Work out what `source` holds and how it will be decoded, without decoding images."""
    if labels is not None and source == SYNTHETIC:
        raise FaceganError("--labels applies to a folder of images; synthetic faces come with their own attributes.")
    if split not in ("all", *SPLITS):
        raise FaceganError(f"--split must be one of all, {', '.join(SPLITS)}, not {split!r}.")
    if source == SYNTHETIC:
        if count <= 0:
            raise FaceganError(f"--count must be a positive number of faces, not {count}.")
        if split != "all":
            raise FaceganError(f"--split {split} applies to CelebA only; synthetic faces have no splits.")
        plan = Plan(source=SYNTHETIC, kind="synthetic", layout="procedural", count=count, seed=seed,
                    attribute_names=list(synthetic.ATTRIBUTE_NAMES))
        return plan, resolve_options(plan.kind, size, crop, filter, jpeg_draft)
    layout = detect_celeba(source)
    if layout is not None and labels is not None:
        raise FaceganError(f"--labels applies to a plain folder of images; {source} is a CelebA copy, whose own "
                           "attribute files are read already, so leave --labels out.")
    if layout is not None:
        options = resolve_options("celeba", size, crop, filter, jpeg_draft)
        plan = plan_celeba(layout, str(source), split, options)
    elif split != "all" and labels is None:
        raise FaceganError(f"--split {split} applies to CelebA only; {source} is a plain image folder.")
    else:
        options = resolve_options("folder", size, crop, filter, jpeg_draft)
        plan = plan_folder(open_tree(source), str(source))
        if labels is not None:
            apply_labels(plan, labels)
        if split != "all":
            _select_split(plan, split)
    plan.info["split"] = split
    return plan, options


def _select_split(plan: Plan, split: str) -> None:
    """Keep one CelebA partition of a labelled folder: possible when its labels brought CelebA's partition file."""
    if "partition" not in plan.labels:
        raise FaceganError(f"--split {split} applies to CelebA, or to a folder whose --labels is CelebA's "
                           f"list_attr_celeba.txt with list_eval_partition.txt beside it; these labels bring no partition.")
    chosen = plan.labels["partition"] == SPLITS[split]
    if not chosen.any():
        raise FaceganError(f"none of the {len(plan.files):,} labelled images of {plan.source} is in CelebA's "
                           f"{split} split; use --split all or another split.")
    plan.info["other_split_images"] = int((~chosen).sum())
    index = np.flatnonzero(chosen)
    plan.files = [plan.files[i] for i in index]
    plan.names = [plan.names[i] for i in index]
    plan.labels = {key: values[index] for key, values in plan.labels.items()}


def resolve_options(plan_kind: str, size: int, crop: int | None, filter: str, jpeg_draft: bool) -> DecodeOptions:
    """Check the user's preprocessing choices; CelebA's crop defaults to 178."""
    if size not in SIZES:
        raise FaceganError(f"--size must be between {SIZES.start} and {SIZES.stop - 1} pixels, not {size}.")
    if crop is not None and crop <= 0:
        raise FaceganError(f"--crop must be a positive number of pixels, not {crop}.")
    if filter not in FILTERS:
        raise FaceganError(f"--filter must be one of {', '.join(FILTERS)}, not {filter!r}.")
    if crop is None and plan_kind == "celeba":
        crop = DEFAULT_CROP
    return DecodeOptions(size=size, crop=crop, filter=filter, jpeg_draft=jpeg_draft)


# ----------------------------------------------------------------------------- workers

# Set once per worker process by _init_worker, so tasks carry only file names.
_WORKER: dict = {}


def _init_worker(plan: Plan, options: DecodeOptions) -> None:
    _WORKER["plan"], _WORKER["options"] = plan, options


def _init_pool_worker(plan: Plan, options: DecodeOptions) -> None:
    # A forked worker inherits the parent's SIGTERM handler (_sigterm_stops); a worker simply ends,
    # and the parent, stopped by the same signal, says so and cleans up.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _init_worker(plan, options)


def _decode_chunk(task: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Decode files [start, stop): (kept indices, images, skipped (index, reason), source sizes)."""
    plan, options = _WORKER["plan"], _WORKER["options"]
    start, stop = task
    kept, images, skipped, sizes = [], [], [], []
    for i in range(start, stop):
        try:
            image, source_size = decode_image(plan.tree.read_image(plan.files[i]), options)
        except SkipImage as reason:
            skipped.append((i, str(reason)))
            continue
        except (OSError, zipfile.BadZipFile, zlib.error) as error:
            skipped.append((i, f"could not be read ({getattr(error, 'strerror', None) or error})"))
            continue
        kept.append(i)
        images.append(image)
        sizes.append(source_size)
    stack = np.stack(images) if images else np.zeros((0, options.size, options.size, 3), np.uint8)
    return np.asarray(kept, dtype=np.int64), stack, skipped, sizes


def _render_chunk(task: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, list, np.ndarray]:
    """Render synthetic faces [start, stop): (indices, images, no skips, attributes)."""
    plan, options = _WORKER["plan"], _WORKER["options"]
    start, stop = task
    images, attributes = synthetic.render_faces(plan.seed, start, stop - start, options.size)
    return np.arange(start, stop, dtype=np.int64), images, [], attributes


def _run_chunks(
    work: Callable, plan: Plan, options: DecodeOptions, workers: int
) -> Iterator[tuple]:
    """Results of `work` over the plan's chunks, in order, from a pool when it pays."""
    chunk = _RENDER_CHUNK if plan.kind == "synthetic" else _DECODE_CHUNK
    tasks = [(start, min(start + chunk, len(plan))) for start in range(0, len(plan), chunk)]
    if workers <= 1 or len(tasks) <= 2:
        _init_worker(plan, options)
        yield from map(work, tasks)
        return
    # fork starts workers in milliseconds; elsewhere spawn is the only safe choice.
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_pool_worker, initargs=(plan, options))
    pending: collections.deque = collections.deque()
    try:
        for task in tasks:
            pending.append(executor.submit(work, task))
            if len(pending) >= 2 * workers:  # a bounded window: memory stays flat, workers stay busy
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:
        raise FaceganError(f"a worker process of prepare ended unexpectedly (killed, or out of memory); nothing was "
                           f"kept, so run the same command again, perhaps with fewer --workers than {workers}.") from None
    finally:
        # On failure, cancel what has not started and let the running chunks finish (milliseconds):
        # killing workers mid-task, as Pool.terminate() does, can deadlock on its queue locks.
        executor.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------- writing


def npy_header(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    """A version 1.0 .npy header padded to a fixed length, so the shape can be rewritten later."""
    body = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)}).encode("latin1")
    pad = _HEADER_BYTES - 10 - len(body) - 1
    if pad < 0:
        raise ValueError(f"shape {shape} does not fit a {_HEADER_BYTES}-byte .npy header")
    return b"\x93NUMPY\x01\x00" + (_HEADER_BYTES - 10).to_bytes(2, "little") + body + b" " * pad + b"\n"


def _check_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise FaceganError(
            f"not enough disk space in {directory}: the dataset needs {needed / 2**20:,.0f} MiB "
            f"and {free / 2**20:,.0f} MiB are free; free some space or choose another --out."
        )


def _remove_stale_partials(out: Path) -> None:
    """Delete what interrupted runs into the same --out left behind (their process is gone)."""
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and other_process_alive(int(pid)):
            raise FaceganError(f"another `facegan prepare` (process {pid}) is writing {out}; wait for it to finish.")
        shutil.rmtree(stale, ignore_errors=True)


# Files an operating system drops into any folder it shows; --force may delete them with the folder.
_LITTER = {".DS_Store", "Thumbs.db", "desktop.ini"}


def _foreign_entries(out: Path) -> tuple[bool, list[str]]:
    """(whether `out` holds a prepared dataset, the names in it that no prepared dataset writes)."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none, unreadable, not JSON (UnicodeDecodeError is a ValueError)
        manifest = None
    is_dataset = isinstance(manifest, dict) and manifest.get("format") == FORMAT
    ours: set[str] = set()
    if is_dataset:
        labels = manifest.get("labels")
        labels = labels if isinstance(labels, list) else []
        ours = {MANIFEST, "images.npy", "filenames.txt", *(f"{key}.npy" for key in labels if isinstance(key, str))}
    entries = sorted(entry.name for entry in out.iterdir())
    return is_dataset, [name for name in entries if name not in ours and name not in _LITTER]


def _describe_entries(out: Path, names: list[str]) -> str:
    """'3 files', '1 folder', '2 files and 1 folder': what `names` in `out` are."""
    folders = sum(1 for name in names if (out / name).is_dir() and not (out / name).is_symlink())
    files = len(names) - folders
    parts = [f"{count} {word}{'s' if count != 1 else ''}" for count, word in ((files, "file"), (folders, "folder")) if count]
    return " and ".join(parts)


def check_output(out: Path, force: bool) -> None:
    """Refuse an `out` that exists, unless `force` and it holds a prepared dataset (and nothing else) or nothing."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FaceganError(f"{out} is a file; --out must name a directory.")
    is_dataset, foreign = _foreign_entries(out)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        what = _describe_entries(out, foreign)
        there = (f"a prepared dataset and {what} that {'is' if len(foreign) == 1 else 'are'} not part of it" if is_dataset
                 else f"{what} that {'is' if len(foreign) == 1 else 'are'} not a prepared dataset")
        raise FaceganError(f"{out} holds {there} ({shown}); --force replaces only a prepared dataset or an empty "
                           f"folder, so choose another --out or move {'it' if len(foreign) == 1 else 'them'} away first.")
    if not force:
        what = "a prepared dataset" if is_dataset else "an empty folder"
        raise FaceganError(f"{out} already holds {what}; pass --force to replace it or choose another --out.")


def check_source_and_output(source: str, out: Path) -> None:
    """Refuse an `out` that is the source, lies inside it, or holds it: --force or not, prepare would destroy it."""
    if source == SYNTHETIC:
        return
    real_source, real_out = real_path(source, "the source"), real_path(out, "--out")
    if real_out == real_source:
        where = "is the source itself"
    elif real_source in real_out.parents:
        where = f"is inside the source {source}"
    elif real_out in real_source.parents:
        where = f"holds the source {source}"
    else:
        return
    raise FaceganError(f"--out {out} {where}; prepare into a folder outside the source, such as "
                       f"{real_source.parent / (real_source.stem + '-prepared')}.")


@contextlib.contextmanager
def _sigterm_stops(out: Path) -> Iterator[Callable[[], contextlib.AbstractContextManager]]:
    """While inside, SIGTERM raises Interrupted (so the partial folder is cleaned up and the CLI says so).

    Yields `finishing`: inside it SIGTERM is ignored, because the dataset is complete and being renamed
    into place, and stopping half-way through the swap would leave neither the old one nor the new one.
    Worker processes end on SIGTERM as usual (_init_pool_worker); a SIGTERM to this process alone lets
    them finish their chunk first.
    """
    @contextlib.contextmanager
    def finishing() -> Iterator[None]:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        yield

    main = threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread only
    if not main:
        yield finishing
        return

    def stop(signum: int, frame: object) -> None:
        raise Interrupted(f"stopped by SIGTERM while preparing {out}; nothing was kept and any dataset already there "
                          "is untouched, so run the same command again.", signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield finishing
    finally:
        signal.signal(signal.SIGTERM, previous)


def prepare(
    source: str,
    out: str | os.PathLike,
    *,
    split: str = "all",
    size: int = 64,
    crop: int | None = None,
    filter: str = "bilinear",
    jpeg_draft: bool = True,
    count: int = 50_000,
    seed: int = 0,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    labels: str | os.PathLike | None = None,
) -> Path:
    """Prepare `source` (a CelebA copy, an image folder or zip, or "synthetic") into `out`; `labels` labels a folder."""
    out = Path(out).expanduser().absolute()
    if out.is_symlink():  # replace what the link points at, not the link
        out = real_path(out, "--out")
    check_source_and_output(source, out)
    check_output(out, force)
    plan, options = make_plan(source, split=split, size=size, crop=crop, filter=filter,
                              jpeg_draft=jpeg_draft, count=count, seed=seed, labels=labels)
    if len(plan) == 0:
        raise FaceganError(f"no images of {source} are left to prepare (split {split}); check --split and the folder.")
    if size not in RESOLUTIONS:
        warnings.warn(f"--size {size}: this size cannot be trained (the models are built at "
                      f"{', '.join(map(str, RESOLUTIONS))} pixels); preparing it anyway.", FaceganWarning, stacklevel=2)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FaceganError(f"cannot create {out.parent}: {error.strerror}.") from None
    _remove_stale_partials(out)
    row_bytes = size * size * 3
    _check_space(out.parent, len(plan) * row_bytes + _HEADER_BYTES)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    partial.mkdir()
    try:
        with _sigterm_stops(out) as finishing:
            manifest = _write(plan, options, partial, workers or os.cpu_count() or 1, progress)
            check_output(out, force)  # again: files may have been put there while we decoded
            with finishing():
                _swap_into_place(partial, out)
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise FaceganError(
                f"the disk filled up while writing {out}; nothing was kept: free some space or choose another --out."
            ) from None
        raise FaceganError(f"could not write {out}: {error.strerror or error}.") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _warn_about(manifest)
    if progress:
        log.info(f"prepared {manifest['count']:,} images of {size}x{size} in {out} ({len(manifest['skipped']):,} skipped)")
        if manifest.get("label_file", {}).get("rows_without_image"):
            log.info(label_rows_sentence(manifest["label_file"]))
    return out


def label_rows_sentence(record: dict) -> str:
    """The calm sentence for label rows that name no image: usual when a folder holds part of a collection."""
    rows, name = record["rows_without_image"], Path(record["path"]).name
    return (f"{rows:,} of the {record['rows']:,} rows of {name} name no image in the folder (usual when the folder holds "
            "part of a collection); dataset.json counts them as label_file.rows_without_image.")


def _warn_about(manifest: dict) -> None:
    """Once each: images that were upscaled, annotation rows that were repeated."""
    upscaled, size = manifest.get("upscaled_images", 0), manifest["size"]
    if upscaled:
        were = "was" if upscaled == 1 else "were"
        warnings.warn(f"{upscaled:,} of the {manifest['count']:,} images {were} smaller than the {size}x{size} output "
                      f"(after any --crop) and {were} upscaled, so they look blurred; dataset.json counts them as "
                      "upscaled_images.", FaceganWarning, stacklevel=3)
    _warn_about_labels(manifest.get("label_file"))
    repeated = manifest.get("duplicate_annotation_rows", [])
    if repeated:
        files = ", ".join(sorted({row["file"] for row in repeated}))
        has = "image has" if len(repeated) == 1 else "images have"
        warnings.warn(f"{len(repeated):,} {has} more than one identical row in {files}; each was used once, and "
                      "dataset.json lists them as duplicate_annotation_rows.", FaceganWarning, stacklevel=3)


# Each kind of label trouble a manifest counts, and its sentence: {count}, the label file's {name},
# and for malformed rows the first one's {line} and {reason}.
_LABEL_TROUBLE = (
    ("images_without_row", ("{count:,} images have no row in {name} and were left out of the prepared dataset (they "
                            "have no labels); dataset.json counts them as label_file.images_without_row.")),
    ("malformed_rows", ("{count:,} rows of {name} are malformed and were skipped (the first, line {line}, has "
                        "{reason}); dataset.json counts them as label_file.malformed_rows.")),
    ("duplicate_rows", ("{count:,} rows of {name} name an image that another row names too, so those images were left "
                        "out; dataset.json counts them as label_file.duplicate_rows.")),
    ("ambiguous_rows", ("{count:,} rows of {name} give a bare file name that several images in the folder share, so "
                        "they were matched to none; give paths relative to the folder. dataset.json counts them as "
                        "label_file.ambiguous_rows.")),
)


def _warn_about_labels(record: dict | None) -> None:
    """One sentence per kind of label trouble; rows that name no image are not trouble (label_rows_sentence)."""
    if not record:
        return
    name = Path(record["path"]).name
    first = (record.get("malformed_examples") or [{}])[0]
    for key, sentence in _LABEL_TROUBLE:
        if record[key]:
            warnings.warn(sentence.format(count=record[key], name=name, line=first.get("line"), reason=first.get("reason")),
                          FaceganWarning, stacklevel=4)
    for column in record["skipped_columns"]:
        warnings.warn(f"column {column['column']} of {name} was not made an attribute: {column['reason']}.",
                      FaceganWarning, stacklevel=4)


def _swap_into_place(partial: Path, out: Path) -> None:
    if out.exists():  # --force: move the old one aside first, so `out` is never half-written
        trash = out.parent / f".{out.name}.replaced-{os.getpid()}"
        os.replace(out, trash)
        os.replace(partial, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(partial, out)
    fsync_directory(out.parent)


def _write(plan: Plan, options: DecodeOptions, directory: Path, workers: int, progress: bool) -> dict:
    """Decode or render every image into `directory`; return the manifest written there."""
    started = time.perf_counter()
    size = options.size
    digest = hashlib.sha256()
    kept_parts: list[np.ndarray] = []
    attribute_parts: list[np.ndarray] = []
    skipped = list(plan.skipped)
    source_sizes: set[tuple[int, int]] = set()
    upscaled = 0  # images whose crop is smaller than the output: resizing enlarges them
    work = _render_chunk if plan.kind == "synthetic" else _decode_chunk
    written = 0
    bar = tqdm(total=len(plan), unit="img", desc="prepare", disable=not progress, dynamic_ncols=True)
    # closing(): on any failure the workers are shut down here and now, not whenever the garbage
    # collector finalises the generator (possibly on another thread).
    results = _run_chunks(work, plan, options, workers)
    with open(directory / "images.npy", "wb") as stream, contextlib.closing(results):
        stream.write(npy_header((len(plan), size, size, 3)))
        for kept, images, failures, extra in results:
            data = np.ascontiguousarray(images).tobytes()
            stream.write(data)
            digest.update(data)
            written += len(kept)
            kept_parts.append(kept)
            skipped += [{"file": plan.files[i], "reason": reason} for i, reason in failures]
            if plan.kind == "synthetic":
                attribute_parts.append(extra)
            else:
                source_sizes.update(extra)
                upscaled += sum(1 for width, height in extra if (options.crop or min(width, height)) < size)
            bar.update(len(kept) + len(failures))
        bar.close()
        if written == 0:
            first = skipped[0]["reason"] if skipped else "unknown"
            raise FaceganError(f"none of the {len(plan)} images in {plan.source} could be read (first: {first}).")
        stream.seek(0)
        stream.write(npy_header((written, size, size, 3)))
        stream.flush()
        os.fsync(stream.fileno())

    kept = np.concatenate(kept_parts)
    labels = {key: values[kept] for key, values in plan.labels.items()}
    if plan.kind == "synthetic":
        labels["attributes"] = np.concatenate(attribute_parts)
    for key, values in labels.items():
        np.save(directory / f"{key}.npy", values)
    if "attributes" in labels:
        digest.update(np.ascontiguousarray(labels["attributes"]).tobytes())
        digest.update("\n".join(plan.attribute_names).encode())
    names = [plan.names[i] for i in kept] if plan.kind != "synthetic" else [f"{plan.seed}/{i}" for i in kept]
    write_filenames(directory / "filenames.txt", names)

    manifest = _manifest(plan, options, written, labels, "sha256:" + digest.hexdigest(), skipped,
                         {"source_sizes": source_sizes, "upscaled": upscaled, "started": started})
    with open(directory / MANIFEST, "w", encoding="utf-8") as stream:
        json.dump(manifest, stream, indent=1)
        stream.flush()
        os.fsync(stream.fileno())
    return manifest


def _manifest(plan: Plan, options: DecodeOptions, written: int, labels: dict, content_hash: str, skipped: list,
              measured: dict) -> dict:
    """dataset.json's record of how the dataset was made: source, layout, crop, size, filter, what was skipped."""
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "source": plan.source,
        "kind": plan.kind,
        "layout": plan.layout,
        "split": plan.info.pop("split", "all"),
        "count": written,
        "size": options.size,
        "crop": _crop_record(options, measured["source_sizes"]),
        "resize_filter": f"PIL {options.filter}, antialiased",
        "jpeg_draft": options.jpeg_draft,
        "attribute_names": plan.attribute_names,
        "labels": sorted(labels),
        "content_hash": content_hash,
        "hash_covers": "images.npy rows, then attributes.npy and attribute names when present",
        "skipped": skipped,
        "upscaled_images": measured["upscaled"],
        "filenames_escaping": ESCAPING,
        **plan.info,
        "seconds": round(time.perf_counter() - measured["started"], 2),
        "facegan_version": __version__,
    }
    if plan.kind == "synthetic":  # rendered at the output size: nothing was cropped or resized
        manifest.update(seed=plan.seed, renderer="facegan.data.synthetic", crop=None, resize_filter=None, jpeg_draft=None)
    return manifest


def _crop_record(options: DecodeOptions, source_sizes: set[tuple[int, int]]) -> dict:
    record: dict = {"mode": "centre square", "side": options.crop}
    if len(source_sizes) == 1:  # one source size (CelebA): the exact box is known
        width, height = next(iter(source_sizes))
        record["source_size"] = [width, height]
        record["box"] = list(centre_box(width, height, options.crop))
    return record
