"""benchmarks/device/collect.py: what a GPU lease brings back must be readable, whatever broke.

The lent machine returns at most 8 files and the reply shows only the output's tail, so
collect.py folds every part of gpu_check.sh into results.json and prints the figures. A
fidelity run that was killed before its summary, and a part that printed no JSON, must still
come back as what they are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device" / "collect.py"

SUMMARY = {
    "record": "summary",
    "iterations": 7168,
    "train_seconds": 300.01,
    "mean_seconds_per_iteration": 0.0419,
    "targets": {
        "limits": {"fraction_points": 2.0},
        "latest": {
            "fraction": {"pass": True, "worst": {"points": 0.8247, "phase": "0"}},
            "tortuosity": {
                "pass": False,
                "worst": {"relative": 0.2587, "phase": "1", "axis": "y"},
                "generated_not_percolating": [],
            },
            "all": False,
        },
    },
}


def collect(work: Path, out: Path) -> str:
    out.mkdir()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(work), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_fidelity_runs_finished_killed_and_text_parts(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    start, mark = {"record": "start"}, {"record": "mark", "iteration": 3000}
    lines = [json.dumps(record) for record in (start, mark, SUMMARY)]
    (work / "fidelity-paper.jsonl").write_text("\n".join(lines) + "\n")
    (work / "fidelity-reference.jsonl").write_text(json.dumps(start) + "\n" + json.dumps(mark))
    (work / "cuda-tests.json").write_text("..\n18 passed in 37.40s\n")
    (work / "train.log").write_text("warming up\n")

    printed = collect(work, tmp_path / "out")

    assert "fidelity-paper: 7168 iterations in 300 s (41.9 ms/it)" in printed
    assert "fraction pass (points 0.8247, phase 0)" in printed
    assert "tortuosity FAIL (relative 0.2587, phase 1, axis y)" in printed
    assert "fidelity-reference: no summary (1 marks measured)" in printed
    assert "cuda tests: 18 passed in 37.40s" in printed
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["fidelity-paper"][-1]["iterations"] == 7168
    assert [r["record"] for r in results["fidelity-reference"]] == ["start", "mark"]
    assert results["cuda-tests"].endswith("18 passed in 37.40s\n")
    assert "===== train.log\nwarming up" in (tmp_path / "out" / "logs.txt").read_text()


def test_a_run_cut_mid_line_keeps_its_whole_records(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "fidelity-paper.jsonl").write_text('{"record": "start"}\n{"record": "ma')

    printed = collect(work, tmp_path / "out")

    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["fidelity-paper"] == [{"record": "start"}, {"unreadable": '{"record": "ma'}]
    assert "fidelity-paper: no summary (0 marks measured)" in printed
