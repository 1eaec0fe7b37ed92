"""Entry point of the ``microforge`` command.

Each group of commands lives in its own module; heavy imports (torch) happen inside the
commands that need them, so ``microforge --help`` and the service commands stay light.
"""

from __future__ import annotations

import os

import click

from microforge import __version__
from microforge.cli import client_commands, client_views  # noqa: F401 - register remote commands
from microforge.cli.engine_commands import generate_command, train_command
from microforge.cli.import_commands import import_slicegan_command
from microforge.cli.keys_commands import keys_group
from microforge.cli.remote_group import remote_group
from microforge.cli.server_commands import up_command, worker_command
from microforge.cli.stats_commands import stats_command
from microforge.cli.storage_commands import storage_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="microforge")
def cli() -> None:
    """MicroForge: train SliceGAN on 2D micrographs and generate 3D microstructures."""
    use_huge_pages_for_large_tensors()


def use_huge_pages_for_large_tensors() -> None:
    """Let PyTorch back large CPU tensors with 2 MiB pages, unless the user said otherwise.

    Why: CPU generation spent about a third of its time in the kernel zeroing fresh 4 KiB
    pages for tensors that are allocated and freed chunk after chunk; with huge pages a
    (256, 1024, 1024) volume took 14.3 s instead of 16.4 s, for 5% more peak RSS
    (docs/benchmarks.md). PyTorch
    reads the variable when its allocator starts, so it is set here, before any command
    imports torch; the worker and the processes ``microforge up`` starts inherit it.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


cli.add_command(train_command)
cli.add_command(generate_command)
cli.add_command(import_slicegan_command)
cli.add_command(keys_group)
cli.add_command(up_command)
cli.add_command(worker_command)
cli.add_command(remote_group)
cli.add_command(stats_command)
cli.add_command(storage_group)
