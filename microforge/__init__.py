"""MicroForge: 2D micrographs in, 3D microstructures out (SliceGAN as a service)."""

__version__ = "0.1.0"
