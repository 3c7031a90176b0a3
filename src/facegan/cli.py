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


TRAIN_EXAMPLES = """\
examples:
  facegan train                                      built-in synthetic faces, the seed DCGAN
  facegan train --data data/celeba64 --epochs 15     a prepared dataset
  facegan train --resume runs/00003-dcgan            continue exactly where it stopped
  facegan train --resume runs/00003-dcgan --epochs 30   ... and train longer
"""

SAMPLE_EXAMPLES = """\
examples:
  facegan sample runs/00003-dcgan -n 64 --seed 7 --out faces.png    one grid
  facegan sample runs/00003-dcgan -n 10000 --out samples/           one PNG per image, for metrics
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
    prepare.set_defaults(handler=run_prepare)

    train = commands.add_parser(
        "train", help="train a GAN (default: the seed DCGAN on built-in synthetic faces)",
        description="Train a GAN. Without --data it trains on built-in synthetic faces, prepared once.",
        epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--preset", default=None, help="recipe to start from (default dcgan)")
    train.add_argument("--data", default=None, help="a prepared dataset (from `facegan prepare`)")
    train.add_argument("--resume", type=Path, default=None, metavar="RUN", help="continue a run exactly where it stopped")
    train.add_argument("--epochs", type=_positive_int, default=None, help="epochs in total (default 5)")
    train.add_argument("--batch-size", type=_positive_int, default=None, help="images per step (default 128)")
    train.add_argument("--latent-dim", type=_positive_int, default=None, help="latent vector size (default 100; 128 is common)")
    train.add_argument("--g-width", type=_positive_int, default=None, help="channels of G's last layer (default 64)")
    train.add_argument("--d-width", type=_positive_int, default=None, help="channels of D's first layer (default 64)")
    train.add_argument("--lr", type=float, default=None, help="learning rate of both G and D (default 2e-4)")
    train.add_argument("--lr-g", type=float, default=None, help="learning rate of G")
    train.add_argument("--lr-d", type=float, default=None, help="learning rate of D")
    train.add_argument("--beta1", type=float, default=None, help="Adam beta1 (default 0.5)")
    train.add_argument("--beta2", type=float, default=None, help="Adam beta2 (default 0.999)")
    train.add_argument("--seed", type=int, default=None, help="seed of initialisation, noise and batch order (default 0)")
    train.add_argument("--device", default=None, help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    train.add_argument("--runs-dir", default=None, help="where run directories are made (default runs)")
    train.add_argument("--synthetic-count", type=_positive_int, default=None, help="synthetic faces when no --data (default 10240)")
    train.add_argument("--checkpoint-every", dest="checkpoint_every_epochs", type=int, default=None,
                       help="keep a checkpoint every N epochs besides latest.pt (default 1; 0 = latest only)")
    train.add_argument("--checkpoint-steps", dest="checkpoint_every_steps", type=int, default=None,
                       help="also refresh latest.pt every N steps (default 0: at epoch ends)")
    train.add_argument("--log-every", type=_positive_int, default=None, help="steps between stats records (default 10)")
    train.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    train.set_defaults(handler=run_train)

    sample = commands.add_parser("sample", help="generate faces from a trained run",
                                 epilog=SAMPLE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sample.add_argument("run", type=Path, help="a run directory (its latest checkpoint) or a checkpoint file")
    sample.add_argument("-n", type=_positive_int, default=64, help="how many images (default 64)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the latent vectors (default 0)")
    sample.add_argument("--out", type=Path, required=True, help="a .png for one grid, or a folder for one PNG per image")
    sample.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    sample.add_argument("--batch-size", type=_positive_int, default=256, help="images generated at once (default 256)")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")
    sample.set_defaults(handler=run_sample)

    info = commands.add_parser("info", help="describe a prepared dataset")
    info.add_argument("dataset", type=Path)
    info.add_argument("--verify", action="store_true", help="recompute the content hash")
    info.set_defaults(handler=run_info)
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


_TRAIN_KEYS = ("data", "epochs", "batch_size", "latent_dim", "g_width", "d_width", "lr_g", "lr_d", "seed", "device",
               "runs_dir", "synthetic_count", "checkpoint_every_epochs", "checkpoint_every_steps", "log_every")


def run_train(args: argparse.Namespace) -> None:
    """`facegan train`."""
    from facegan.config import from_preset
    from facegan.train.loop import resume_config, train

    overrides = {key: getattr(args, key) for key in _TRAIN_KEYS}
    if args.data is not None:  # absolute, so a run resumes from any directory and compares equal
        overrides["data"] = str(Path(args.data).expanduser().resolve())
    if args.lr is not None:
        overrides["lr_g"] = overrides["lr_g"] if overrides["lr_g"] is not None else args.lr
        overrides["lr_d"] = overrides["lr_d"] if overrides["lr_d"] is not None else args.lr
    if args.beta1 is not None or args.beta2 is not None:
        defaults = from_preset(args.preset or "dcgan").betas
        overrides["betas"] = (args.beta1 if args.beta1 is not None else defaults[0],
                              args.beta2 if args.beta2 is not None else defaults[1])
    if args.resume is not None:
        if args.preset is not None:
            raise FaceganError("--preset cannot change when resuming; the run keeps the preset it started with.")
        config = resume_config(args.resume, overrides)
    else:
        config = from_preset(args.preset or "dcgan", **overrides)
    run_dir = train(config, resume=args.resume, progress=not args.quiet)
    if not args.quiet:
        print(f"done: {run_dir}  (see {run_dir / 'samples'} and {run_dir / 'plots'}; "
              f"`facegan sample {run_dir} -n 64 --out faces.png`)", file=sys.stderr)


def run_sample(args: argparse.Namespace) -> None:
    """`facegan sample`."""
    from facegan.sample import sample

    out = sample(args.run, args.n, args.out, seed=args.seed, device=args.device, batch_size=args.batch_size,
                 progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {args.n} images to {out}", file=sys.stderr)


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
        args.handler(args)
    except FaceganError as error:
        print(f"facegan: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("facegan: interrupted; run the same command again (a training run: add --resume RUN).", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
