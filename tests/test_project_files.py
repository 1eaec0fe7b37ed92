"""The README's promises that CI relies on: its test command is the one CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(python3 -m venv [^\n]+)\n```", text)


def test_readme_has_the_two_set_up_commands():
    run_locally, run_tests = readme_commands()[:2]
    assert run_locally.endswith("microforge up")
    assert run_tests.endswith("pytest")
    for command in (run_locally, run_tests):
        # torch first, from the pinned build, so pip does not fetch a newer CUDA build.
        assert command.index("pip install torch==2.13.0") < command.index("pip install -e")


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci_lines


def test_torch_pin_admits_the_build_on_disk():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch>=2.4,<2.14"' in pyproject
