"""A few training steps of a tiny model, under torchrun (2 ranks) or alone (1 process), for test_distributed.py.

    python ddp_worker.py OUT_DIR NAME:PRESET[:KEY=VALUE,...] ... [fid:DATA]

(a list, as condition's attributes, is written A+B); a conditional run trains on random labels.

writes OUT_DIR/NAME.pt (rank 0) for each run, one after the other in one process group, and with
`fid:DATA` OUT_DIR/fid.json (ddp_fid_worker.py), in the same launch: starting processes is what costs.

Alone, every random draw of the state's noise generator is made as two ranks would make it (half
the batch from seed + 0, half from seed + 1), so that 2 ranks x 16 and 1 process x 32 see the same
latents and penalty points and differ only in how the arithmetic is spread.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import torch

from facegan import distributed
from facegan.config import from_preset
from facegan.train.state import build_state
from facegan.train.step import train_step

STEPS, BATCH, RESOLUTION, HALVES = 6, 32, 32, 2


@contextlib.contextmanager
def split_draws(noise: torch.Generator, seed: int) -> Iterator[None]:
    """Inside, torch.randn/rand on `noise` draw each half of the batch from its own rank's generator."""
    halves = [torch.Generator().manual_seed(seed + rank) for rank in range(HALVES)]
    originals = {name: getattr(torch, name) for name in ("randn", "rand")}
    for name, original in originals.items():

        def draw(*size, generator=None, _original=original, **options):
            if generator is not noise:
                return _original(*size, generator=generator, **options)
            shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else size
            half = (shape[0] // HALVES, *shape[1:])
            return torch.cat([_original(half, generator=g, **options) for g in halves])

        setattr(torch, name, draw)
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch, name, original)


def run(path: str, preset: str, **values) -> None:
    """STEPS updates of `preset` on fixed reals; rank 0 saves the models and the losses (averaged over the ranks)."""
    config = from_preset(preset, batch_size=BATCH, g_width=8, d_width=8, latent_dim=16, device="cpu",
                         precision="fp32", compile="off", **values)
    device = torch.device("cpu")
    rank, ranks = distributed.rank(), distributed.world_size()
    state = build_state(config, RESOLUTION, device)
    state.parallel = distributed.parallel(state.generator, state.discriminator, device, sync_bn=config.sync_bn)
    with split_draws(state.noise, config.seed) if ranks == 1 else contextlib.nullcontext():
        losses = _train(state, config, rank, ranks)
    distributed.check_consistent(state.generator, state.discriminator)
    if rank == 0:
        torch.save({"generator": state.generator.state_dict(), "discriminator": state.discriminator.state_dict(),
                    "losses": losses}, path)


def _train(state, config, rank: int, ranks: int) -> list[dict[str, float]]:
    reals = torch.rand(STEPS, BATCH, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(7)) * 2 - 1
    labels = torch.randint(0, 2, (STEPS, BATCH, len(config.condition)), generator=torch.Generator().manual_seed(8)).float()
    share = BATCH // ranks
    losses = []
    for step in range(STEPS):
        batch = reals[step, rank * share : (rank + 1) * share].contiguous(memory_format=torch.channels_last)
        mine = labels[step, rank * share : (rank + 1) * share] if config.condition else None
        result = train_step(state, batch, config, update_g=(step + 1) % config.d_steps == 0, labels=mine)
        scalars = distributed.mean_over_ranks({k: v for k, v in result.items() if v.ndim == 0})
        losses.append({k: float(v) for k, v in scalars.items()})
    return losses


def _value(text: str) -> object:
    if "+" in text:
        return tuple(text.split("+"))
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text)


def main(out_dir: str, *specs: str) -> None:
    with distributed.process_group(torch.device("cpu")):
        for spec in specs:
            if spec.startswith("fid:"):
                from ddp_fid_worker import measure

                measure(spec[len("fid:"):], f"{out_dir}/fid.json")
                continue
            name, preset, *rest = spec.split(":")
            values = dict(item.split("=") for item in rest[0].split(",")) if rest else {}
            run(f"{out_dir}/{name}.pt", preset, **{key: _value(value) for key, value in values.items()})


if __name__ == "__main__":
    main(*sys.argv[1:])
