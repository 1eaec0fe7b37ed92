"""The layout of a local training run directory, shared by the CLI and benchmarks.

RUN_DIR/
  run.json                    config, input images, detected data description
  checkpoints/ckpt-NNNNNNNN.pt   keyed by iteration; the newest few are kept
  generator.safetensors       the latest exported generator
  generator-best.safetensors  the best by the fidelity score (when checks ran)
  preview.png, metrics.jsonl  what a person looks at while it trains
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d{8})\.pt$")


class RunDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def manifest(self) -> Path:
        return self.root / "run.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def generator(self) -> Path:
        return self.root / "generator.safetensors"

    @property
    def best_generator(self) -> Path:
        return self.root / "generator-best.safetensors"

    @property
    def preview(self) -> Path:
        return self.root / "preview.png"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    def exists(self) -> bool:
        return self.manifest.exists()

    def read_manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest.read_text())

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.manifest.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(manifest, indent=2))
        os.replace(temporary, self.manifest)

    def checkpoint_path(self, iteration: int) -> Path:
        return self.checkpoints / f"ckpt-{iteration:08d}.pt"

    def list_checkpoints(self) -> list[tuple[int, Path]]:
        if not self.checkpoints.is_dir():
            return []
        found = []
        for path in self.checkpoints.iterdir():
            match = CHECKPOINT_PATTERN.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        checkpoints = self.list_checkpoints()
        return checkpoints[-1][1] if checkpoints else None

    def prune_checkpoints(self, keep: int) -> None:
        for _, path in self.list_checkpoints()[:-keep]:
            path.unlink(missing_ok=True)
