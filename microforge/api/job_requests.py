"""What a job request may ask for, and the checks that refuse at once what a worker could
only fail on later (a periodic size the network cannot tile, a volume the disk cannot hold).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from microforge.api.problems import ProblemError
from microforge.api.state import ServiceState
from microforge.jobs import GenerateSpec
from microforge.models.config import NetworkConfig, TrainConfig, periodic_size_problem
from microforge.storage.tables import Generator


class TrainJobRequest(BaseModel):
    kind: Literal["train"]
    dataset_id: str
    config: TrainConfig = Field(default_factory=TrainConfig)


# The generate spec, plus which generator (stored in the job's column, not in its spec).
class GenerateJobRequest(GenerateSpec):
    kind: Literal["generate"]
    generator_id: str

    def spec(self, seed: int) -> GenerateSpec:
        """The spec to store, with the seed made concrete."""
        fields = self.model_dump(exclude={"kind", "generator_id"})
        return GenerateSpec.model_validate({**fields, "seed": seed})


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
