"""`microforge train` and `microforge generate` as a user runs them."""

import io
import json
import os
import re

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from rich.console import Console

from microforge.cli.main import cli
from microforge.cli.progress_display import progress_display

from engine_helpers import SHARED_DATA, blobs

TRAIN = ["--arch", "tiny", "--critic-batch", "2", "--seed", "1", "--device", "cpu"]


@pytest.fixture
def micrograph(tmp_path):
    path = tmp_path / "micrograph.png"
    from PIL import Image

    Image.fromarray(blobs((80, 80)) * 255).save(path)
    return path


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_train_resume_generate_and_read_back(micrograph, tmp_path):
    run = tmp_path / "run"
    result = invoke(
        "train",
        micrograph,
        "--out",
        run,
        "--iterations",
        4,
        "--checkpoint-every",
        2,
        "--quality-every",
        0,
        *TRAIN,
    )
    assert result.exit_code == 0, result.output
    assert "nphase (detected)" in result.output and "2 phases" in result.output
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "ckpt-00000002.pt",
        "ckpt-00000004.pt",
    ]
    assert (run / "generator.safetensors").exists() and (run / "preview.png").exists()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["iteration"] == 4

    result = invoke("train", "--out", run, "--resume", "--iterations", 6, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "starting at iteration 4" in result.output

    out = tmp_path / "volume.tif"
    result = invoke(
        "generate",
        run,
        "--shape",
        20,
        30,
        40,
        "--out",
        out,
        "--chunk",
        16,
        "--seed",
        3,
        "--device",
        "cpu",
        "--voxel-size",
        0.5,
    )
    assert result.exit_code == 0, result.output
    with tifffile.TiffFile(out) as tif:
        volume = tif.asarray()
        assert tif.series[0].axes == "ZYX"
        assert tif.is_imagej and tif.imagej_metadata["spacing"] == 0.5
        # Labels 0/255 are shown over their own range, not the dtype's.
        assert (tif.imagej_metadata["min"], tif.imagej_metadata["max"]) == (0, 255)
    assert "(ImageJ TIFF," in result.output
    assert volume.shape == (20, 30, 40) and volume.dtype == np.uint8
    assert set(np.unique(volume)) <= {0, 255}

    again = tmp_path / "again.tif"
    invoke(
        "generate",
        run / "generator.safetensors",
        "--shape",
        20,
        30,
        40,
        "--out",
        again,
        "--chunk",
        0,
        "--seed",
        3,
        "--device",
        "cpu",
    )
    assert np.array_equal(tifffile.imread(again), volume)


def test_progress_goes_to_logs_as_plain_lines_off_a_terminal(micrograph, tmp_path):
    """A batch job's log must show how far training got, not stay silent until the end."""
    runner = CliRunner(env={"MICROFORGE_PROGRESS_INTERVAL": "0"})
    run = tmp_path / "run"
    args = ["train", micrograph, "--out", run, "--iterations", 4, "--checkpoint-every", 2]
    result = runner.invoke(cli, [str(a) for a in [*args, "--quality-every", 2, *TRAIN]])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if re.search(r" train \d+/\d+ it", line)]
    assert any("train 2/4 it, W " in line and "score " in line for line in lines), lines
    assert "train 4/4 it" in lines[-1] and "ETA 0:00:00" in lines[-1]
    assert "\x1b" not in result.output  # no terminal control codes in a log

    out = tmp_path / "v.tif"
    shape = ["--shape", 20, 20, 20, "--out", out, "--chunk", 8, "--device", "cpu"]
    result = runner.invoke(cli, [str(a) for a in ["generate", run, *shape]])
    assert result.exit_code == 0, result.output
    assert "generate 27/27 chunks" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "missing.png", "--out", "{tmp}/r"], "no such file"),
        (["train", "{tmp}/empty.png", "--out", "{tmp}/r"], "empty"),
        (["train", "{tmp}/corrupt.png", "--out", "{tmp}/r"], "not a PNG, JPEG or TIFF"),
        (["train", "{tmp}/small.png", "--out", "{tmp}/r", "--arch", "paper"], "64-pixel crops"),
        (["train", "--out", "{tmp}/nothing", "--resume"], "no run to resume"),
        (["train", "{tmp}/small.png", "--out", "{tmp}/r", "--critic-batch", "0"], "critic_batch"),
        (["train", "{tmp}/small.png", "--out", "{tmp}/r", "--device", "gpu7"], "unknown device"),
        (
            ["generate", "{tmp}", "--shape", "4", "4", "4", "--out", "{tmp}/v.tif"],
            "no generator yet",
        ),
        (
            ["generate", "{tmp}/corrupt.png", "--shape", "4", "4", "4", "--out", "{tmp}/v.tif"],
            "not a MicroForge generator file",
        ),
    ],
)
def test_bad_input_exits_non_zero_with_one_actionable_line(tmp_path, args, message):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "corrupt.png").write_bytes(b"this is not an image at all" * 10)
    from PIL import Image

    Image.fromarray(blobs((40, 40)) * 255).save(tmp_path / "small.png")
    result = CliRunner().invoke(cli, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output


def test_an_existing_run_is_not_overwritten(micrograph, tmp_path):
    run = tmp_path / "run"
    assert invoke("train", micrograph, "--out", run, "--iterations", 1, *TRAIN).exit_code == 0
    result = CliRunner().invoke(cli, ["train", str(micrograph), "--out", str(run)])
    assert result.exit_code != 0 and "--resume" in result.output


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared data not present")
def test_three_phase_labels_round_trip_from_a_real_micrograph(tmp_path):
    run = tmp_path / "run"
    image = SHARED_DATA / "micrographs" / "sem_3phase.tif"
    result = invoke("train", image, "--out", run, "--iterations", 2, "--quality-every", 0, *TRAIN)
    assert result.exit_code == 0, result.output
    out = tmp_path / "v.tif"
    invoke("generate", run, "--shape", 16, 16, 16, "--out", out, "--device", "cpu")
    assert set(np.unique(tifffile.imread(out))) <= {0, 1, 2}


def test_a_collapsed_generator_is_called_out_after_training(capsys):
    from microforge.cli.engine_commands import _warn_if_collapsed
    from microforge.models.trainer import Trainer

    trainer = Trainer.__new__(Trainer)  # only its fidelity history matters here
    trainer.best = None
    trainer.quality_history = [{"iteration": 500, "score": 0.1, "diversity": 0.8}]
    _warn_if_collapsed(trainer)
    assert capsys.readouterr().err == ""
    trainer.quality_history.append({"iteration": 900, "score": 0.1, "diversity": 0.01})
    _warn_if_collapsed(trainer)
    warning = capsys.readouterr().err
    assert "diversity 0.01 at iteration 900" in warning and "train longer" in warning


def test_commands_ask_pytorch_for_huge_pages_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    assert invoke("stats", "--help").exit_code == 0
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    assert invoke("stats", "--help").exit_code == 0
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "0"


def test_a_line_that_carries_the_servers_eta_gets_no_second_one():
    console = Console(file=io.StringIO(), force_terminal=False, width=200)
    line = "{description} {percent}: {status}"
    with progress_display((), line=line, console=console, local_eta=False) as bar:
        bar.add_task("train job_1", total=1.0, completed=0.5, status="running ETA 0:01:00")
    printed = console.file.getvalue()
    assert "train job_1 50%: running ETA 0:01:00, elapsed 0:00:00" in printed
    assert printed.count("ETA") == 1


def test_ctrl_c_while_waiting_stops_the_waiting_not_the_job(capsys):
    from microforge.cli.client_commands import wait_with_progress

    class UserPressesCtrlC:
        def wait(self, job_id: str, on_update) -> dict:  # noqa: ANN001
            raise KeyboardInterrupt

    job = {"id": "job_1", "kind": "train", "state": "running", "progress": {}}
    with pytest.raises(SystemExit) as stopped:
        wait_with_progress(UserPressesCtrlC(), job)
    assert stopped.value.code == 130
    said = " ".join(capsys.readouterr().err.split())
    assert "job job_1 goes on on the server" in said
    assert "microforge remote cancel job_1" in said


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give IMAGES to upload, or --dataset"),
        (["x.png", "--dataset", "ds_1"], "not both"),
        (["--dataset", "ds_1", "--name", "n"], "describe an upload"),
    ],
)
def test_remote_train_needs_images_or_a_dataset(tmp_path, args, message):
    image = tmp_path / "x.png"
    image.write_bytes(b"")  # a file IMAGES can name; the command stops before reading it
    args = [str(image) if arg == "x.png" else arg for arg in args]
    result = CliRunner().invoke(cli, ["remote", "--key", "mf_k", "train", *args])
    assert result.exit_code == 2 and message in result.output


def test_an_unreachable_server_is_one_line_that_says_what_to_check():
    result = CliRunner().invoke(
        cli, ["remote", "--url", "http://127.0.0.1:1", "--key", "mf_k", "ls", "volumes"]
    )
    assert result.exit_code == 1
    assert "cannot reach the MicroForge server at http://127.0.0.1:1" in result.output
    assert "microforge up" in result.output and "Traceback" not in result.output


def test_a_runs_pixel_size_becomes_the_voxel_size_of_its_volumes(micrograph, tmp_path):
    from microforge.storage.tiff import read_volume_info

    run = tmp_path / "run"
    args = ["train", micrograph, "--out", run, "--iterations", 2, "--quality-every", 0]
    # --pixel-unit is the deprecated spelling of --unit: it still works, with a warning.
    args += ["--pixel-size", 0.2, "--pixel-unit", "nm", "--scale-factor", 0.5, *TRAIN]
    trained = CliRunner().invoke(cli, [str(a) for a in args])
    assert trained.exit_code == 0, trained.output
    assert "'pixel_unit' is deprecated. Use --unit instead." in trained.stderr
    out = tmp_path / "v.tif"
    shape = ["--shape", 8, 8, 8, "--out", out, "--device", "cpu"]
    result = CliRunner().invoke(cli, [str(a) for a in ["generate", run, *shape]])
    assert result.exit_code == 0, result.output
    info = read_volume_info(out)  # a voxel is two pixels: 0.2 nm / 0.5
    assert info["voxel_size"] == pytest.approx((0.4, 0.4, 0.4)) and info["unit"] == "nm"
    # Compressed: OME-TIFF with the same voxel size, which `stats` reports in.
    packed = tmp_path / "packed.ome.tif"
    result = invoke("generate", run, *shape[:4], "--out", packed, "--compress", "zlib")
    assert result.exit_code == 0 and "(OME-TIFF," in result.output, result.output
    info = read_volume_info(packed)
    assert info["format"] == "ome" and info["unit"] == "nm"
    assert info["voxel_size"] == pytest.approx((0.4, 0.4, 0.4))
    stats = invoke("stats", packed, "--json", "--no-tortuosity")
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["length_unit"] == "nm"
    told = ["generate", run, *shape[:-2], "--voxel-size", 3, "--unit", "um", "--device", "cpu"]
    result = CliRunner().invoke(cli, [str(a) for a in told])
    assert result.exit_code == 0, result.output
    assert read_volume_info(out)["voxel_size"] == pytest.approx((3, 3, 3))
    assert read_volume_info(out)["unit"] == "um"


def test_a_run_from_before_lattice_free_kernels_resumes_and_says_so(micrograph, tmp_path):
    """Its manifest lacks the field (today's default is lattice_free); the checkpoint holds
    free kernels, so the run goes on with those and the manifest records them."""
    run = tmp_path / "run"
    args = ["--iterations", 2, "--quality-every", 0, "--transposed-kernels", "free", *TRAIN]
    assert invoke("train", micrograph, "--out", run, *args).exit_code == 0
    manifest = json.loads((run / "run.json").read_text())
    del manifest["config"]["transposed_kernels"]
    (run / "run.json").write_text(json.dumps(manifest))
    result = invoke("train", "--out", run, "--resume", "--iterations", 4, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "run.json").read_text())["config"]["transposed_kernels"] == "free"
