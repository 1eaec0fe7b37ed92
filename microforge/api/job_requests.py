"""What a job request may ask for, and the checks that refuse at once what a worker could
only fail on later (a periodic size the network cannot tile, a volume the disk cannot hold).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from microforge.api.problems import ProblemError
from microforge.api.state import ServiceState
from microforge.bounds import INT32_MAX, SEED_MAX, int_range
from microforge.models.config import NetworkConfig, TrainConfig, periodic_size_problem
from microforge.storage.tables import Generator
from microforge.units import LengthUnit


class TrainJobRequest(BaseModel):
    kind: Literal["train"]
    dataset_id: str
    config: TrainConfig = Field(default_factory=TrainConfig)


#: Voxels along one axis: TIFF pages and torch sizes are 32-bit.
Edge = int_range(1, INT32_MAX)


class GenerateJobRequest(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    kind: Literal["generate"]
    generator_id: str
    shape: tuple[Edge, Edge, Edge] = Field(description="Voxels along [z, y, x]; any size.")
    seed: int_range(0, SEED_MAX) | None = Field(
        default=None, description="Omit for a random (recorded) seed."
    )
    periodic: tuple[bool, bool, bool] = Field(
        default=(False, False, False), description="Periodic boundaries along [z, y, x]."
    )
    chunk: Edge | tuple[Edge, Edge, Edge] | None = Field(
        default=None, description="Chunk edge in voxels (or [z, y, x]); omit for auto."
    )
    voxel_size: float | None = Field(
        default=None,
        gt=0,
        description="Edge of a voxel in `unit` (a training pixel, after any scale factor): "
        "stored in the TIFF (ImageJ or OME-TIFF metadata) for Fiji/napari, and the report's "
        "lengths and surface densities are then physical. Omit for voxel units.",
    )
    unit: LengthUnit = Field(default="um", description="Unit of voxel_size.")
    compression: Literal["zlib", "lzw"] | None = Field(
        default=None,
        description="Lossless TIFF compression: label volumes shrink many-fold on disk and "
        "in transfer; readers decompress page by page. The file is then OME-TIFF (Fiji "
        "opens it with Bio-Formats). Omit for an uncompressed ImageJ TIFF.",
    )


JobRequest = Annotated[TrainJobRequest | GenerateJobRequest, Field(discriminator="kind")]


def check_periodic_sizes(
    generator: Generator, shape: tuple[int, int, int], periodic: tuple[bool, bool, bool]
) -> None:
    """Refuse at once what the worker could only fail on later."""
    described = (generator.config or {}).get("network")
    if not described:
        return  # an old row without its network: the worker checks the shape instead
    network = NetworkConfig(**described)
    for size, flag, axis in zip(shape, periodic, ("z", "y", "x")):
        problem = periodic_size_problem(network, size, axis) if flag else None
        if problem:
            raise ProblemError(422, "invalid_periodic_shape", problem)


def check_disk_space(state: ServiceState, at_least_bytes: int) -> None:
    """Refuse at once a volume that cannot fit (the worker checks again, exactly, before it
    starts: space may go meanwhile). ``at_least_bytes`` is a lower bound, one byte per
    voxel and sample, so nothing that fits is refused."""
    free = state.blobs.free_bytes()
    if at_least_bytes > free:
        raise ProblemError(
            507,
            "disk_full",
            f"the volume needs at least {at_least_bytes / 1e9:.1f} GB but the server has "
            f"{free / 1e9:.1f} GB free: delete volumes, jobs or generators you no longer need "
            "(GET /v1/usage shows what you keep), or ask for a smaller volume",
        )
