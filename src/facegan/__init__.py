"""facegan: train GANs that make 64x64 faces, on CelebA or any face collection."""

__version__ = "0.1.0"
