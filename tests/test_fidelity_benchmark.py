"""benchmarks/fidelity.py: its records, its comparison with the truth and its targets.

The benchmark is a script, not a package module, so it is imported by path. Runs are tiny
(tiny preset, a handful of iterations, 32^3 truths) and single-threaded.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from safetensors.torch import load_file

from microforge.models.stats import compare_with_references

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fidelity.py"


def _load():
    spec = importlib.util.spec_from_file_location("fidelity_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fidelity = _load()


@pytest.fixture(autouse=True)
def _restore_threads():
    """--threads sets torch's global thread count: give the next tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


#: The region-size crop of these tests: the tiny preset's.
CROP = 32


def run_main(capsys, *args: str) -> tuple[int, list[dict], str]:
    code = fidelity.main(list(args))
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return code, records, captured.err


def stats_of(volume: np.ndarray, tortuosity: bool = False, phases=(0, 1, 2)) -> dict:
    return fidelity.volume_statistics(
        volume, phases, tortuosity, workers=1, device="cpu", crop=CROP
    )


def compare(volume: np.ndarray, truth_stats: dict, tortuosity: bool = False) -> tuple:
    """The script's comparison of one volume with the truth: figures and target checks."""
    per_seed = [fidelity.seed_figures(stats_of(volume, tortuosity), truth_stats, tortuosity)]
    figures = fidelity.aggregate(per_seed, truth_stats, tortuosity)
    return figures, fidelity.check_targets(per_seed, truth_stats, fidelity.DEFAULT_TARGETS)


# --------------------------------------------------------------------------- a whole run
def test_a_tiny_run_prints_machine_marks_and_summary(tmp_path, capsys):
    out = tmp_path / "out"
    code, records, err = run_main(
        capsys,
        "--synthetic", "blobs3", "--synthetic-size", "32",
        "--iterations", "4", "--mark-iterations", "2", "--seeds", "2",
        "--tortuosity", "none", "--threads", "1", "--label", "baseline",
        "--config", '{"critic_batch": 2}', "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    start, *marks, summary = records
    assert next(iter(start)) == "machine"
    assert start["machine"]["cpu_count"] >= 1 and start["record"] == "start"
    assert start["config"]["arch"] == "tiny" and start["config"]["critic_batch"] == 2
    training = dict(start["training"])
    fractions = training.pop("image_fractions")
    sizes = training.pop("region_size")
    assert sorted(sizes) == ["0", "1", "2"]
    for size in sizes.values():  # the middle z-slice among the truth's 32 z-sections
        assert size["images"] > 0 and size["truth"] > 0
        assert size["sections"]["p10"] <= size["sections"]["mean"] <= size["sections"]["p90"]
        assert 0 <= size["sections"]["rank"] < 1
    assert training == {
        "train_on": "slice",
        "slice_axis": "z",
        "slice_index": 16,
        "layout": "isotropic",
        "image_shapes": [[32, 32]],
    }
    assert sorted(fractions) == ["0", "1", "2"]
    assert sum(fractions.values()) == pytest.approx(1.0, abs=1e-3)
    assert sorted(start["truth"]["phases"]) == ["0", "1", "2"]
    assert all(r["label"] == "baseline" for r in records)
    assert [m["iteration"] for m in marks] == [2, 4]
    assert summary["record"] == "summary" and summary["iterations"] == 4
    for mark in marks:
        assert mark["train_seconds"] > 0 and mark["seconds_per_iteration"] > 0
        latest = mark["generators"]["latest"]
        assert Path(latest["file"]).is_file()
        assert latest["trainer_check"]["iteration"] == mark["iteration"]
        assert latest["report"]["verdict"] in ("good", "fair", "poor", None)
        assert len(latest["report"]["verdicts"]) == 2
        assert latest["report"]["agreement"] == fidelity.verdict_agreement(
            latest["report"]["verdict"], latest["targets"]
        )
        if latest["report"]["verdict"] is not None:  # the three errors the verdict is made of
            for error in ("fraction_error", "s2_error", "euler_error"):
                assert latest["report"][error]["mean"] >= 0, error
        assert 0 <= latest["diversity"]["mean"] <= 2
        assert set(latest["phases"]) == {"0", "1", "2"}
        phase = latest["phases"]["1"]
        assert set(phase["volume_fraction"]) == {
            "value",
            "truth",
            "abs_difference_points",
            "relative_difference",
        }
        assert {"mean", "std"} <= set(phase["volume_fraction"]["value"])
        assert set(phase["s2_mae"]) == set(phase["characteristic_length"]) == {"x", "y", "z"}
        assert "tortuosity" not in phase
        assert "tpb_density" in latest
        assert set(latest["targets"]) == {"fraction", "ssa", "s2", "tortuosity", "all"}
        assert latest["targets"]["tortuosity"]["pass"] is None
        if "best" in mark["generators"]:
            assert mark["generators"]["best"]["iteration"] < mark["iteration"]
    targets = summary["targets"]
    assert targets["limits"] == fidelity.DEFAULT_TARGETS
    assert isinstance(targets["latest"]["fraction"]["pass"], bool)
    assert (
        summary["report_agreement"]["latest"]
        == marks[-1]["generators"]["latest"]["report"]["agreement"]
    )
    lines = (out / "marks.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    assert (out / "slices.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fraction err (points)" in err
    assert "no flow" not in err  # no tortuosity measured, no tortuosity table
    assert len([line for line in err.splitlines() if line.strip()]) >= 1 + len(marks)


def test_raw_measures_the_training_weights_beside_their_moving_average(tmp_path, capsys):
    common = [
        "--synthetic", "blobs3", "--synthetic-size", "32", "--iterations", "10",
        "--mark-iterations", "10", "--seeds", "1", "--tortuosity", "none", "--threads", "1",
        "--raw",
    ]  # fmt: skip
    code, records, err = run_main(
        capsys, *common, "--config", '{"critic_batch": 2}', "--out", str(tmp_path / "a")
    )
    assert code == 0, err
    generators = records[1]["generators"]
    assert set(generators) == {"latest", "raw"}
    latest, raw = generators["latest"], generators["raw"]
    assert raw["iteration"] == latest["iteration"] == 10
    assert raw["trainer_check"] is None and latest["trainer_check"] is not None
    weights = [load_file(block["file"]) for block in (latest, raw)]
    assert weights[0].keys() == weights[1].keys()
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert raw["phases"] != latest["phases"]  # measured on their own volumes
    assert "raw" in err.split("fraction err (points)")[1]  # a row of the summary table
    # Without a moving average the training weights are what latest measures already.
    code, records, err = run_main(
        capsys, *common, "--config", '{"critic_batch": 2, "ema_decay": 0}',
        "--out", str(tmp_path / "b"),
    )  # fmt: skip
    assert code == 0, err
    assert set(records[1]["generators"]) == {"latest"}


def test_seconds_budget_stops_on_time_with_marks_on_the_way():
    truth, _ = fidelity.blobs3(32)
    data = fidelity.prepare_training_data([truth[16]], "nphase")
    config = fidelity.TrainConfig(
        arch="tiny", iterations=fidelity.MAX_ITERATIONS, seed=0, critic_batch=2, quality_every=0
    )
    torch.set_num_threads(1)
    trainer = fidelity.Trainer(data, config, "cpu")
    trainer.run(until=6)  # the first iterations are slow (lazy initialisation)
    budget = fidelity.Budget(seconds=1.2, mark_seconds=0.4)
    marks = list(fidelity.train_in_marks(trainer, budget))
    assert len(marks) >= 2
    assert [m.last for m in marks] == [False] * (len(marks) - 1) + [True]
    seconds = [m.train_seconds for m in marks]
    assert seconds == sorted(seconds) and seconds[-1] >= 1.2
    assert marks[-1].iteration > marks[0].iteration > 6
    assert [m.index for m in marks] == list(range(len(marks)))


# --------------------------------------------------------------------------- the comparison
def test_the_truth_against_itself_has_no_error_and_passes_every_target():
    truth, _ = fidelity.blobs3(24)
    truth_stats = stats_of(truth, tortuosity=True)
    figures, checks = compare(truth, truth_stats, tortuosity=True)
    for phase in figures["phases"].values():
        assert phase["volume_fraction"]["abs_difference_points"]["mean"] == 0.0
        assert phase["specific_surface_area"]["relative_difference"]["mean"] == 0.0
        assert all(phase["s2_mae"][a]["mean"] == 0.0 for a in "xyz")
        for axis in "xyz":
            length = phase["characteristic_length"][axis]
            assert length["value"]["mean"] == length["truth"]
            tau = phase["tortuosity"][axis]
            assert tau["percolating_seeds"] == "1/1"
            assert tau["relative_difference"]["mean"] == 0.0
            stagnant = phase["stagnant_share"][axis]
            assert stagnant["value"]["mean"] == stagnant["truth"]
            assert 0.0 < stagnant["truth"] < 1.0  # blobs have dead ends, and paths
        assert phase["connectivity"]["value"]["mean"] == phase["connectivity"]["truth"]
        for figure in phase["network"].values():
            assert figure["value"]["mean"] == figure["truth"]
        assert 0.5 < phase["network"]["share"]["truth"] <= 1.0
        assert phase["region_size"]["value"]["mean"] == phase["region_size"]["truth"] > 0
        for axis in "xyz":
            leaning = phase["orientation"][axis]
            assert leaning["anisotropy"]["mean"] == leaning["truth"]["anisotropy"]
            assert leaning["difference"]["mean"] == 0.0
        necks = phase["necks"]
        assert necks["kept"]["value"]["mean"] == necks["kept"]["truth"]
        assert 0.0 < necks["kept"]["truth"] < 1.0
        for axis in "xyz":
            assert necks["spanning"][axis]["value"]["mean"] == necks["spanning"][axis]["truth"]
    assert figures["tpb_density"]["relative_difference"]["mean"] == 0.0
    assert all(checks[name]["pass"] is True for name in ("fraction", "ssa", "s2", "tortuosity"))
    assert checks["all"] is True
    assert checks["tortuosity"]["generated_not_percolating"] == []


def test_the_verdict_is_checked_against_the_truth():
    """A "good" volume that misses a target the report can see is a disagreement; a missed
    tortuosity is listed as unseen (no slice shows 3D connectivity); "poor" must miss one."""
    truth, _ = fidelity.blobs3(24)
    truth_stats = stats_of(truth, tortuosity=True)
    _, meets = compare(truth, truth_stats, tortuosity=True)
    empty = np.full_like(truth, truth.max())
    _, misses = compare(empty, truth_stats, tortuosity=True)
    assert misses["fraction"]["pass"] is False and misses["tortuosity"]["pass"] is False
    agreement = fidelity.verdict_agreement
    assert agreement("good", meets) == {"agrees": True, "failed_seen": [], "failed_unseen": []}
    assert agreement("poor", meets)["agrees"] is False
    assert agreement("fair", meets)["agrees"] is True
    wrong = agreement("good", misses)
    assert wrong["agrees"] is False and "fraction" in wrong["failed_seen"]
    assert wrong["failed_unseen"] == ["tortuosity"]
    assert agreement("poor", misses)["agrees"] is True
    unseen = {**meets, "tortuosity": {**meets["tortuosity"], "pass": False}, "all": False}
    assert agreement("good", unseen) == {
        "agrees": True,
        "failed_seen": [],
        "failed_unseen": ["tortuosity"],
    }
    assert agreement(None, misses)["agrees"] is None
    unmeasured = {**meets, "tortuosity": {**meets["tortuosity"], "pass": None}}
    assert agreement("poor", unmeasured)["agrees"] is None  # tortuosity might have failed


def test_the_figures_agree_with_compare_with_references_on_a_3d_truth():
    truth, _ = fidelity.blobs3(32)
    other = fidelity.synthetic_volume(32, seed=1)
    figures, _ = compare(other, stats_of(truth))
    theirs = compare_with_references(other, [truth])["phases"]
    for name, phase in figures["phases"].items():
        reference = theirs[name]
        fraction = reference["volume_fraction"]
        assert phase["volume_fraction"]["abs_difference_points"]["mean"] == pytest.approx(
            100 * abs(fraction["difference"])
        )
        ssa = reference["specific_surface_area"]
        assert phase["specific_surface_area"]["relative_difference"]["mean"] == pytest.approx(
            ssa["difference"] / ssa["reference"]
        )
        for axis in "xyz":
            assert phase["s2_mae"][axis]["mean"] == pytest.approx(
                reference["tpc"][axis]["mean_abs_difference"]
            )


def test_one_phase_everywhere_fails_fraction_surface_s2_and_tortuosity():
    truth, _ = fidelity.blobs3(24)
    truth_stats = stats_of(truth, tortuosity=True)
    figures, checks = compare(np.zeros_like(truth), truth_stats, tortuosity=True)
    assert checks["fraction"]["pass"] is False
    assert checks["fraction"]["worst"]["points"] == pytest.approx(100 * (1 - 1 / 3), abs=1)
    assert checks["ssa"]["pass"] is False and checks["ssa"]["worst"]["relative"] == 1.0
    assert checks["s2"]["pass"] is False
    assert checks["tortuosity"]["pass"] is False
    assert "1/x" in checks["tortuosity"]["generated_not_percolating"]
    assert checks["all"] is False
    missing = figures["phases"]["2"]
    assert missing["volume_fraction"]["value"]["mean"] == 0.0
    assert missing["tortuosity"]["z"]["value"] == fidelity.NOT_PERCOLATING
    assert missing["stagnant_share"]["z"]["value"]["mean"] == 1.0
    assert figures["phases"]["0"]["stagnant_share"]["z"]["value"]["mean"] == 0.0  # all flows
    assert missing["characteristic_length"]["x"]["value"] is None
    assert missing["orientation"]["x"]["difference"] is None  # no features, no leaning
    assert figures["tpb_density"]["value"]["mean"] == 0.0
    # The phase that fills the volume has S2 = 1 at every lag, a missing one S2 = 0.
    for name, level in (("0", 1.0), ("2", 0.0)):
        truth_curve = np.asarray(truth_stats["phases"][name]["tpc"]["x"])
        expected = np.abs(level - truth_curve).mean()
        assert figures["phases"][name]["s2_mae"]["x"]["mean"] == pytest.approx(expected)


def test_the_tortuosity_table_shows_each_phases_error_and_its_dead_ends():
    truth, _ = fidelity.blobs3(24)
    truth_stats = stats_of(truth, tortuosity=True)
    itself, _ = compare(truth, truth_stats, tortuosity=True)
    one_phase, _ = compare(np.zeros_like(truth), truth_stats, tortuosity=True)
    marks = [{"mark": 3, "generators": {"latest": itself, "best": one_phase}}]
    header, *rows = fidelity.tortuosity_table(marks).splitlines()
    assert "tortuosity rel err x / y / z" in header and "no flow" in header
    assert [row.split()[:3] for row in rows] == [
        ["3", which, phase] for which in ("latest", "best") for phase in ("0", "1", "2")
    ]
    for name, row in zip("012", rows[:3], strict=True):
        truths = " / ".join(
            f"{truth_stats['phases'][name]['stagnant_share'][a]:.2f}" for a in "xyz"
        )
        assert "+0 % / +0 % / +0 %" in row and row.endswith(f"{truths} ({truths})")
    fills, _, missing = rows[3:]
    assert "none flows / none flows / none flows" in missing
    assert "1.00 / 1.00 / 1.00 (" in missing  # all of an absent phase counts as stagnant
    assert "0.00 / 0.00 / 0.00 (" in fills and "-" in fills.split()[3]  # straight: easier
    without, _ = compare(truth, stats_of(truth))
    assert fidelity.tortuosity_table([{"mark": 0, "generators": {"latest": without}}]) is None


def test_a_shuffled_volume_keeps_its_fractions_but_fails_surface_and_s2():
    truth, _ = fidelity.blobs3(32)
    shuffled = np.random.default_rng(0).permutation(truth.reshape(-1)).reshape(truth.shape)
    _, checks = compare(shuffled, stats_of(truth))
    assert checks["fraction"]["pass"] is True
    assert checks["fraction"]["worst"]["points"] == 0.0
    # Voxel noise has far more interface, but the smoothed-gradient measure is nearly blind
    # to voxel-scale structure (it reads a 3D checkerboard as 0): only "off" is asserted.
    assert checks["ssa"]["pass"] is False
    assert checks["s2"]["pass"] is False
    assert checks["tortuosity"]["pass"] is None
    assert checks["all"] is False


def _figures(**phases: tuple[float, float, float]) -> list[dict]:
    """One seed's figures by hand: phase -> (fraction delta, SSA relative error, S2 MAE)."""
    return [
        {
            "phases": {
                name: {
                    "fraction_delta": delta,
                    "ssa_relative": ssa,
                    "s2_mae": dict.fromkeys("xyz", mae),
                }
                for name, (delta, ssa, mae) in phases.items()
            }
        }
    ]


def test_each_target_has_its_own_limit():
    truth = {
        "phases": {
            "0": {"volume_fraction": 0.95, "specific_surface_area": 0.1},
            "1": {"volume_fraction": 0.05, "specific_surface_area": 0.1},
        }
    }
    limits = fidelity.DEFAULT_TARGETS

    def checks(**phases):
        return fidelity.check_targets(_figures(**phases), truth, limits)

    near = checks(**{"0": (-0.005, 0.2, 0.019), "1": (0.005, -0.24, 0.01)})
    assert near["all"] is True and near["tortuosity"]["pass"] is None
    # One point off a 5 % phase: within 2 points but 20 % of its value.
    rare = checks(**{"0": (-0.01, 0.0, 0.0), "1": (0.01, 0.0, 0.0)})
    assert rare["fraction"]["pass"] is False
    assert rare["fraction"]["worst"]["phase"] == "1"
    assert rare["fraction"]["worst"]["relative"] == pytest.approx(0.2)
    assert rare["ssa"]["pass"] is True and rare["s2"]["pass"] is True
    # Three points off the 95 % phase: 3 % of its value, but more than 2 points.
    common = checks(**{"0": (-0.03, 0.0, 0.0), "1": (0.0, 0.0, 0.0)})
    assert common["fraction"]["pass"] is False and common["fraction"]["worst"]["phase"] == "0"
    surface = checks(**{"0": (0.0, -0.3, 0.0), "1": (0.0, 0.1, 0.0)})
    assert surface["fraction"]["pass"] is True and surface["ssa"]["pass"] is False
    assert surface["ssa"]["worst"] == {"relative": pytest.approx(0.3), "phase": "0"}
    s2 = checks(**{"0": (0.0, 0.0, 0.01), "1": (0.0, 0.0, 0.021)})
    assert s2["s2"]["pass"] is False and s2["ssa"]["pass"] is True
    assert s2["s2"]["worst"]["phase"] == "1" and s2["all"] is False


def test_diversity_is_zero_for_one_volume_twice_and_about_one_for_independent_ones():
    truth, _ = fidelity.spheres2(32)
    rng = np.random.default_rng(1)
    same = fidelity.seed_diversity([truth, truth.copy()], ["0", "1"])
    assert same["mean"] == pytest.approx(0.0, abs=1e-9)
    independent = [rng.permutation(truth.reshape(-1)).reshape(truth.shape) for _ in range(3)]
    result = fidelity.seed_diversity(independent, ["0", "1"])
    # About 1 although the fractions are unequal (spheres are ~20 %).
    assert result["mean"] == pytest.approx(1.0, abs=0.05)
    assert fidelity.seed_diversity([truth], ["0", "1"]) is None


# --------------------------------------------------------------------------- inputs
def test_a_2d_truth_and_an_unknown_config_field_are_one_line_errors(tmp_path, capsys):
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((1, 40, 40), np.uint8))
    code, records, err = run_main(capsys, "--truth", str(flat), "--iterations", "2")
    assert code == 2 and records == []
    assert err.count("\n") == 1 and "2D image" in err
    code, _, err = run_main(
        capsys, "--synthetic", "rods", "--iterations", "2", "--config", '{"no_such_field": 1}'
    )
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: training config: no_such_field")
    code, _, err = run_main(capsys, "--synthetic", "rods")
    assert code == 2 and "budget" in err


def test_a_truth_smaller_than_the_crops_says_what_to_use(tmp_path, capsys):
    thin = tmp_path / "thin.tif"
    tifffile.imwrite(thin, (np.indices((20, 40, 40)).sum(0) % 2).astype(np.uint8))
    code, records, err = run_main(
        capsys, "--truth", str(thin), "--arch", "paper", "--iterations", "2"
    )
    assert code == 2 and records == []
    assert err == (
        "error: the truth is 20x40x40 voxels, and the paper preset trains on 64-pixel crops: "
        "use a truth at least 64 voxels a side where it is sliced, or a smaller network "
        "(--arch tiny trains on 32-pixel crops)\n"
    )
    # Sliced across z, its 40x40 sections hold tiny's crops; sliced across x, 20 rows do not.
    across_z = argparse.Namespace(train_on="slice", slice_axis="z")
    fidelity.check_truth_holds_crops(np.zeros((20, 40, 40)), across_z, 32, "tiny")
    code, _, err = run_main(capsys, "--truth", str(thin), "--slice-axis", "x", "--iterations", "2")
    assert code == 2 and err == (
        "error: the truth is 20x40x40 voxels, and the tiny preset trains on 32-pixel crops: "
        "use a truth at least 32 voxels a side where it is sliced\n"
    )  # no smaller network to suggest
    code, _, err = run_main(
        capsys, "--truth", str(thin), "--train-on", "volume", "--iterations", "2"
    )
    assert code == 2 and "20x40x40" in err


def test_the_synthetic_truths_have_their_known_statistics():
    for name, ssa_key, fraction_key in (
        ("spheres2", "sphere_ssa", "sphere_fraction"),
        ("rods", "rod_ssa", "rod_fraction"),
    ):
        volume, known = fidelity.SYNTHETIC[name](48)
        phase = stats_of(volume)["phases"]["1"]
        assert phase["volume_fraction"] == known[fraction_key]
        assert phase["specific_surface_area"] == pytest.approx(known[ssa_key], rel=0.08)
    volume, _ = fidelity.rods(48)
    lengths = stats_of(volume)["phases"]["1"]["characteristic_length"]
    assert lengths["x"] is None and lengths["y"] is not None
    fractions = np.bincount(fidelity.blobs3(48)[0].reshape(-1)) / 48**3
    assert fractions == pytest.approx([1 / 3] * 3, abs=0.01)


def test_real_volumes_read_and_a_one_page_stack_is_refused(shared_data, tmp_path, capsys):
    sofc = shared_data / "volumes" / "sofc_anode_3phase_62.tif"
    truth = fidelity.read_truth(sofc)
    assert truth.shape == (62, 62, 62) and truth.dtype == np.int8
    with pytest.raises(fidelity.FidelityError, match="2D image"):
        fidelity.read_truth(shared_data / "micrographs" / "sofc_anode_3phase.tif")
    code, records, err = run_main(
        capsys,
        "--truth", str(sofc), "--train-on", "volume", "--iterations", "2",
        "--seeds", "1", "--tortuosity", "none", "--threads", "1",
        "--config", '{"critic_batch": 2}', "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    latest = records[1]["generators"]["latest"]
    assert records[0]["training"]["layout"] == "volume"
    # Trained on the truth itself: its region sizes are the truth's, and no slice to rank.
    for size in records[0]["training"]["region_size"].values():
        assert size["images"] == size["truth"] > 0 and "sections" not in size
    assert set(latest["phases"]) == {"0", "1", "2"} and latest["diversity"] is None


def test_a_chosen_or_the_typical_slice_is_the_one_trained_on(shared_data, tmp_path, capsys):
    from microforge.models.stats.section_clusters import typical_section

    sofc = shared_data / "volumes" / "sofc_anode_3phase_62.tif"
    truth = fidelity.read_truth(sofc)
    common = ["--truth", str(sofc), "--iterations", "1", "--seeds", "1", "--tortuosity", "none",
              "--threads", "1", "--config", '{"critic_batch": 2}']  # fmt: skip
    # The middle z-slice ranks in the top tenth for phase 1's regions; the typical one at
    # the median for every phase, and its fractions are that section's.
    typical = typical_section(truth, "z", [0, 1, 2], CROP)
    code, records, err = run_main(
        capsys, *common, "--slice-index", "typical", "--out", str(tmp_path / "typical")
    )
    assert code == 0, err
    training = records[0]["training"]
    assert training["slice_index"] == typical != 31
    ranks = [size["sections"]["rank"] for size in training["region_size"].values()]
    assert all(0.3 <= rank <= 0.7 for rank in ranks), ranks
    assert training["image_fractions"]["1"] == pytest.approx((truth[typical] == 1).mean(), abs=1e-4)
    # A number picks that section along --slice-axis.
    code, records, err = run_main(
        capsys, *common, "--slice-axis", "x", "--slice-index", "5", "--out", str(tmp_path / "x5")
    )
    assert code == 0, err
    training = records[0]["training"]
    assert (training["slice_axis"], training["slice_index"]) == ("x", 5)
    fraction = (truth[:, :, 5] == 0).mean()
    assert training["image_fractions"]["0"] == pytest.approx(fraction, abs=1e-4)
    # Outside the truth, or with more than one image: one line that says what to do.
    code, records, err = run_main(capsys, *common, "--slice-index", "62")
    assert code == 2 and records == [] and err.count("\n") == 1
    assert "62 sections perpendicular to z (0 to 61)" in err
    code, _, err = run_main(capsys, *common, "--train-on", "volume", "--slice-index", "3")
    assert code == 2 and "--slice-index needs --train-on slice" in err
    with pytest.raises(SystemExit):
        fidelity.parse_args(["--synthetic", "rods", "--slice-index", "middle"])
    assert "neither a section number" in capsys.readouterr().err
