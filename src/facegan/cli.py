"""The `facegan` command: parses arguments and calls the library; no logic of its own."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facegan import __version__
from facegan.errors import FaceganError

PREPARE_EXAMPLES = """\
examples:
  facegan prepare /data/celeba --out data/celeba64             official or Kaggle layout, or the zip
  facegan prepare ~/photos/faces --out data/myfaces             any folder (or zip) of images
  facegan prepare synthetic --count 50000 --out data/synth64    built-in faces, no download
  facegan prepare celeba --download ~/celeba --out data/celeba64   fetch CelebA first (online)
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="facegan", description="Train GANs that make faces.")
    parser.add_argument("--version", action="version", version=f"facegan {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = commands.add_parser(
        "prepare",
        help="turn CelebA, a folder of images, or synthetic faces into a prepared dataset",
        description="Decode, crop and resize a face collection once into a compact uint8 array.",
        epilog=PREPARE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prepare.add_argument("source", help="a CelebA folder or zip, any folder or zip of images, `synthetic`, or `celeba` with --download")
    prepare.add_argument("--out", required=True, type=Path, help="directory to create")
    prepare.add_argument("--split", default="all", choices=["all", "train", "valid", "test"],
                         help="CelebA partition to keep (default: all, as most FID protocols use)")
    prepare.add_argument("--size", type=_positive_int, default=64, help="output side in pixels (default 64)")
    prepare.add_argument("--crop", type=_positive_int, default=None,
                         help="side of the centred square crop in source pixels (default: 178 for CelebA, the largest square otherwise)")
    prepare.add_argument("--filter", default="bilinear", choices=["box", "bilinear", "bicubic", "lanczos"],
                         help="antialiased PIL resize filter (default bilinear, as torchvision/Mimicry)")
    prepare.add_argument("--no-jpeg-draft", dest="jpeg_draft", action="store_false",
                         help="decode JPEGs at full size (slower) instead of libjpeg's reduced-size decoding")
    prepare.add_argument("--count", type=_positive_int, default=50_000, help="number of synthetic faces (default 50000)")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the synthetic faces (default 0)")
    prepare.add_argument("--workers", type=_positive_int, default=None, help="decoding processes (default: all cores)")
    prepare.add_argument("--force", action="store_true", help="replace --out if it exists")
    prepare.add_argument("--download", type=Path, metavar="DIR", default=None,
                         help="with source `celeba`: fetch CelebA into DIR first (resumable, checksummed)")
    prepare.add_argument("--mirror", default=None, help="base URL to download CelebA from (default: built-in mirror)")
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    prepare.set_defaults(run=run_prepare)

    info = commands.add_parser("info", help="describe a prepared dataset")
    info.add_argument("dataset", type=Path)
    info.add_argument("--verify", action="store_true", help="recompute the content hash")
    info.set_defaults(run=run_info)
    return parser


def run_prepare(args: argparse.Namespace) -> None:
    """`facegan prepare`."""
    from facegan.data.prepare import prepare

    source = args.source
    if source == "celeba" and not Path(source).exists():
        if args.download is None:
            raise FaceganError(
                "CelebA is not on disk: pass --download DIR to fetch it (about 1.4 GB), or put "
                "img_align_celeba.zip (or its extracted img_align_celeba/) with list_attr_celeba.txt and "
                "list_eval_partition.txt in a folder and run `facegan prepare FOLDER --out DIR`."
            )
        from facegan.data.download import download_celeba

        source = str(download_celeba(args.download, mirror=args.mirror, progress=not args.quiet))
    elif args.download is not None:
        raise FaceganError("--download works with the source `celeba` only, as in `facegan prepare celeba --download DIR`.")
    prepare(
        source, args.out, split=args.split, size=args.size, crop=args.crop, filter=args.filter,
        jpeg_draft=args.jpeg_draft, count=args.count, seed=args.seed, workers=args.workers,
        force=args.force, progress=not args.quiet,
    )


def run_info(args: argparse.Namespace) -> None:
    """`facegan info`."""
    from facegan.data import open_prepared

    dataset = open_prepared(args.dataset)
    manifest = dict(dataset.manifest)
    skipped = manifest.pop("skipped", [])
    manifest["skipped"] = f"{len(skipped)} files (listed in {dataset.path / 'dataset.json'})"
    print(json.dumps(manifest, indent=1))
    if args.verify:
        dataset.verify()
        print("content hash verified")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `facegan` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except FaceganError as error:
        print(f"facegan: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("facegan: interrupted; nothing half-written was kept, run the same command again.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
