"""Face datasets: sources (CelebA, folders, synthetic faces) -> prepare -> prepared arrays."""

from facegan.data.prepared import PreparedDataset, open_prepared

__all__ = ["PreparedDataset", "open_prepared"]
