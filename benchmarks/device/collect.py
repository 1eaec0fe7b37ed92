"""Fold the parts of gpu_check.sh into one results.json and print the figures that matter.

The device tool brings back at most 8 files, so the parts' outputs travel as one JSON file
(each part's JSON, or its text when it printed no JSON) plus one log; the table printed last
lands in the reply's output tail, readable without fetching anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: Path) -> object:
    """One JSON document (.json), or one per line (.jsonl: a run killed by its timeout keeps
    its whole records, and a line it was cut in comes back as text); else the text itself."""
    text = path.read_text(errors="replace")
    if path.suffix == ".jsonl":
        return [record(line) for line in text.splitlines() if line.strip()]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def record(line: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return {"unreadable": line}


def gib(value: object) -> str:
    return "-" if not isinstance(value, int | float) else f"{value / 2**30:.2f} GiB"


def fidelity_lines(name: str, records: list[dict]) -> list[str]:
    """Iterations run, and each generator's targets at the last mark (pass, or the worst miss)."""
    summary = next((r for r in records if r.get("record") == "summary"), None)
    if summary is None:
        marks = [r for r in records if r.get("record") == "mark"]
        return [f"{name}: no summary ({len(marks)} marks measured)"]
    lines = [
        f"{name}: {summary['iterations']} iterations in {summary['train_seconds']:.0f} s "
        f"({1000 * summary['mean_seconds_per_iteration']:.1f} ms/it)"
    ]
    targets = summary["targets"]
    for which, verdicts in targets.items():
        if which == "limits":
            continue
        cells = []
        for target, verdict in verdicts.items():
            if isinstance(verdict, dict):
                worst = verdict.get("worst") or {}
                miss = ", ".join(f"{k} {v}" for k, v in worst.items() if k != "share_of_limit")
                cells.append(f"{target} {'pass' if verdict.get('pass') else 'FAIL'} ({miss})")
        lines.append(f"  {which}: " + "; ".join(cells))
    return lines


def table(parts: dict[str, object]) -> list[str]:
    lines = []
    rows = []
    for name in ("train", "train-channels-last"):
        part = parts.get(name)
        rows += part.get("results", []) if isinstance(part, dict) else []
    for row in rows:
        layout = " channels-last" if row.get("channels_last") else ""
        lines.append(
            f"train {row.get('arch')} b{row.get('critic_batch')} {row.get('precision')}{layout}: "
            f"{row.get('ms_per_iteration', row.get('error'))} ms/it, "
            f"peak {gib(row.get('peak_device_bytes'))}"
        )
    for name in ("generate-small", "generate-one-shot", "generate-big", "generate-bf16"):
        part = parts.get(name)
        for row in part.get("results", []) if isinstance(part, dict) else []:
            lines.append(
                f"{name} {row.get('arch')} {row.get('shape')} chunk {row.get('chunk')} "
                f"{row.get('precision')}: {row.get('seconds', row.get('error'))} s "
                f"(generate {row.get('generate_seconds')} s), device peak "
                f"{gib(row.get('peak_device_bytes'))}, host peak {gib(row.get('peak_rss_bytes'))}"
            )
    stats = parts.get("stats")
    if isinstance(stats, dict):
        keys = [k for k in stats if k.endswith("_s") and "tortuosity" in k or k.startswith("cpu_w")]
        lines.append("stats: " + ", ".join(f"{k}={stats[k]}" for k in keys))
    for name, records in parts.items():
        if name.startswith("fidelity-") and isinstance(records, list):
            lines += fidelity_lines(name, records)
    tests = parts.get("cuda-tests")
    if isinstance(tests, str):
        lines.append("cuda tests: " + (tests.strip().splitlines() or ["(no output)"])[-1])
    return lines


def main() -> None:
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    parts = {path.stem: load(path) for path in sorted(work.glob("*.json*"))}
    (out / "results.json").write_text(json.dumps(parts, indent=1))
    with (out / "logs.txt").open("w") as logs:
        for path in sorted(work.glob("*.log")) + sorted(work.glob("*.txt")):
            logs.write(f"===== {path.name}\n{path.read_text(errors='replace')}\n")
    print("\n".join(table(parts)))


if __name__ == "__main__":
    main()
