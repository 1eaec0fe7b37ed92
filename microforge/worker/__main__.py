"""``python -m microforge.worker``: the same as ``microforge worker``; ``up`` runs it."""

from microforge.cli.server_commands import worker_command

if __name__ == "__main__":
    worker_command(prog_name="python -m microforge.worker")
