"""Write the files in tests/models/old/ with the models as commit 3bf9834 built them.

They stand for what users have on disk from before the models had named blocks: checkpoints'
state dicts (keys like dcgan's `main.0.weight`, resnet's `l1.weight`) and files written by
`facegan export`. test_old_files.py loads them into today's models. Made once, from a checkout
of 3bf9834:

    OMP_NUM_THREADS=1 PYTHONPATH=src python tests/models/old/make_old_files.py

For each of dcgan (BatchNorm D), dcgan with spectral_norm=True and resnet (spectral norm by
default), at latent 8, widths 4, resolution 16, it writes NAME.pt holding the parameter names in
order, a latent batch z and an image batch x (torch.Generator seeded 1), then, for G and D built
by build_models under torch.manual_seed(0), one train-mode pass fakes = G(z),
loss = D(fakes).mean() - D(x).mean(), loss.backward(): its outputs, each model's gradients in
parameter order and the state dicts after it, as a checkpoint saves them (the parameters are still
the initial ones; BatchNorm's statistics and spectral norm's vectors have moved on); last, G(z)
and D(x) in eval mode. It also exports each family's G with that version's `facegan export`
code (from a checkpoint in a temporary folder) as FAMILY_generator.safetensors.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from facegan.config import TrainConfig
from facegan.export import export_generator
from facegan.models import build_models
from facegan.train.checkpoint import save_checkpoint

HERE = Path(__file__).resolve().parent
LATENT, WIDTH, RESOLUTION, BATCH = 8, 4, 16, 2
CONFIGS = {
    "dcgan": {"name": "dcgan"},
    "dcgan_sn": {"name": "dcgan", "spectral_norm": True},
    "resnet": {"name": "resnet"},
}


def main() -> None:
    """Write NAME.pt for every configuration and FAMILY_generator.safetensors for both families."""
    for file_name, options in CONFIGS.items():
        torch.manual_seed(0)
        G, D = build_models(options["name"], LATENT, WIDTH, WIDTH, RESOLUTION, spectral_norm=options.get("spectral_norm"))
        record: dict = {"options": options, "generator_parameters": [name for name, _ in G.named_parameters()],
                        "discriminator_parameters": [name for name, _ in D.named_parameters()]}
        noise = torch.Generator().manual_seed(1)
        z = torch.randn(BATCH, LATENT, generator=noise)
        x = torch.randn(BATCH, 3, RESOLUTION, RESOLUTION, generator=noise)
        fakes = G(z)
        fake_logits, real_logits = D(fakes), D(x)
        (fake_logits.mean() - real_logits.mean()).backward()
        record.update(z=z, x=x, fakes=fakes.detach(), fake_logits=fake_logits.detach(), real_logits=real_logits.detach(),
                      generator_grads=[p.grad for p in G.parameters()], discriminator_grads=[p.grad for p in D.parameters()],
                      generator=G.state_dict(), discriminator=D.state_dict())
        G.eval(), D.eval()
        with torch.no_grad():
            record.update(eval_images=G(z), eval_logits=D(x))
        torch.save(record, HERE / f"{file_name}.pt")
        if file_name in ("dcgan", "resnet"):
            config = TrainConfig(model=options["name"], latent_dim=LATENT, g_width=WIDTH, d_width=WIDTH, resolution=RESOLUTION)
            with tempfile.TemporaryDirectory() as folder:
                checkpoint = Path(folder) / "latest.pt"
                save_checkpoint({"config": config.to_dict(), "generator": G.state_dict(), "discriminator": D.state_dict(),
                                 "epoch": 1, "step": 1}, checkpoint)
                out = export_generator(checkpoint, HERE / f"{file_name}_generator.safetensors")
            out.with_suffix(".json").unlink()  # the description for people; loading reads only the safetensors file


if __name__ == "__main__":
    main()
