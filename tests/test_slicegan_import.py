"""Importing generators of the public SliceGAN code: same numbers, exact chunking, and
hostile files refused. The files are made by ``slicegan_reference`` from the format
description, for both generator kinds and all three image types."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from slicegan_reference import make_files, params_for

from microforge.cli.main import cli
from microforge.models.chunk_plan import make_latent, plan_volume
from microforge.models.export import load_generator
from microforge.models.generation import generate_array, generate_probabilities
from microforge.models.safe_pickle import UnsafePickleError, load_state_dict
from microforge.models.slicegan_import import SliceGANImportError, import_slicegan, read_params
from microforge.storage.tiff import read_volume_info

KINDS = {"transposed": False, "resize_conv": True}
TYPES = [("grayscale", 1), ("colour", 3), ("nphase", 3)]


def reference_output(net, loaded, shape, seed: int) -> torch.Tensor:
    """The original network on the latent MicroForge draws for ``shape`` and ``seed``."""
    latent = make_latent(loaded.network, plan_volume(loaded.network, shape, (False,) * 3), seed)
    with torch.no_grad():
        return net(latent)[0]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("image_type", "channels"), TYPES)
def test_an_imported_generator_computes_what_the_original_does(
    tmp_path, kind, image_type, channels
) -> None:
    weights, params, net = make_files(
        tmp_path, channels=channels, imtype=image_type, rc=KINDS[kind]
    )
    out = tmp_path / "imported.safetensors"
    info = import_slicegan(weights, params, out, image_type=image_type)
    assert info.network.last_layer == ("resize_conv" if KINDS[kind] else "transpose")
    loaded = load_generator(out, "cpu")
    # The public code draws cubic latents; the all-transposed kind is checked on a
    # non-cubic one too (latent 4 x 5 x 6).
    shape = (32, 32, 32) if KINDS[kind] else (32, 48, 64)
    ours = generate_probabilities(loaded, shape, seed=5)
    original = reference_output(net, loaded, shape, seed=5)
    assert ours.shape == original.shape
    torch.testing.assert_close(ours, original, rtol=0, atol=2e-6)
    assert original.std() > 0.02  # the comparison is not between two constants


def test_phase_labels_are_the_given_values_and_match_the_original_argmax(tmp_path) -> None:
    weights, params, net = make_files(tmp_path, channels=3, imtype="nphase", rc=True)
    out = tmp_path / "g.safetensors"
    info = import_slicegan(weights, params, out, image_type="nphase", phases=[0, 128, 255])
    assert info.phases == [0, 128, 255] and info.output_dtype == "uint8"
    loaded = load_generator(out, "cpu")
    volume = generate_array(loaded, (32, 32, 32), seed=2)
    original = reference_output(net, loaded, (32, 32, 32), seed=2)
    expected = np.array([0, 128, 255], dtype=np.uint8)[original.argmax(0).numpy()]
    assert (volume == expected).mean() > 0.999  # exact up to float ties between phases


def test_an_imported_resize_convolution_generator_chunks_exactly(tmp_path) -> None:
    weights, params, _ = make_files(tmp_path, channels=3, imtype="nphase", rc=True)
    out = tmp_path / "g.safetensors"
    import_slicegan(weights, params, out, image_type="nphase")
    loaded = load_generator(out, "cpu")
    for shape, periodic in (((40, 36, 29), (False,) * 3), ((32, 36, 48), (True, False, True))):
        one_shot = generate_probabilities(loaded, shape, seed=7, periodic=periodic)
        chunked = generate_probabilities(loaded, shape, seed=7, chunk=11, periodic=periodic)
        torch.testing.assert_close(chunked, one_shot, rtol=0, atol=1e-6)
        labels = generate_array(loaded, shape, seed=7, periodic=periodic, chunk=0)
        assert np.array_equal(
            generate_array(loaded, shape, seed=7, periodic=periodic, chunk=13), labels
        )
    # Periodic: the volume tiles seamlessly, as for generators trained here.
    tiled = generate_probabilities(loaded, (64, 16, 16), seed=1, periodic=(True, True, True))
    assert tiled.shape == (3, 64, 16, 16)


def test_the_weights_reader_reads_what_torch_load_reads(tmp_path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "module.convs.0.weight": torch.randn(2, 3, 4, 4, 4),
        "module.a.half": torch.randn(5).half(),
        "module.a.double": torch.randn(3, 2).double(),
        "module.a.long": torch.tensor(1234),
        "module.a.view": base.t(),  # non-contiguous
        "module.a.shared": base[1:3],  # a view with an offset into a shared storage
    }
    path = tmp_path / "state.pt"
    torch.save(state, path)
    ours = load_state_dict(path)
    theirs = torch.load(path, weights_only=True)
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.numpy().dtype
        assert np.array_equal(ours[key], value.numpy()), key


def test_data_parallel_files_import(tmp_path) -> None:
    """Runs on several GPUs save nn.DataParallel(netG).state_dict(): keys start 'module.'."""
    weights, params, net = make_files(tmp_path, channels=2, imtype="nphase", rc=False)
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, weights)
    info = import_slicegan(weights, params, tmp_path / "g.safetensors")
    assert info.image_type == "nphase" and info.phases == [0, 1]


def _params_bytes(value) -> bytes:
    return pickle.dumps(value)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_params_file_that_would_run_code_is_refused_unrun(tmp_path) -> None:
    marker = tmp_path / "pwned"
    for payload in (_RunsCode(marker), [*params_for(2)[:7], [_RunsCode(marker)]]):
        with pytest.raises(SliceGANImportError, match="refused") as caught:
            read_params(pickle.dumps(payload))
        assert caught.value.code == "invalid_slicegan_params"
        assert "\n" not in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (params_for(2)[:7], "holds 7 lists"),
        ([*params_for(2)[:6], [4, 8, 2], params_for(2)[7]], "gf has 3 entries"),
        ([*params_for(2)[:6], [4, 10**30, 6, 4, 2], params_for(2)[7]], "not a filter count"),
        ([*params_for(2)[:6], [4, 10**6, 6, 4, 2], params_for(2)[7]], "not a filter count"),
        ([*params_for(2)[:7], [2, 2, -1, 3]], "not a padding"),
        ([*params_for(2)[:4], [0, 4, 4, 4], *params_for(2)[5:]], "not a kernel"),
        ([*params_for(2)[:4], [4] * 40, [2] * 40, [4] * 41, [2] * 40], "40 entries"),
        ([*params_for(2)[:7], [2.0, 2, 2, 3]], "holds a float"),
        ([*params_for(2)[:7], [True, 2, 2, 3]], "holds a bool"),
        ("not a list", "holds a str"),
        ([[[[[1]]]]], "deeper"),
    ],
)
def test_bad_params_files_are_refused_with_one_line(value, message) -> None:
    with pytest.raises(SliceGANImportError, match=message) as caught:
        read_params(pickle.dumps(value))
    assert "\n" not in str(caught.value) and str(caught.value).startswith("params file:")


def test_params_that_are_not_a_pickle_or_too_large_are_refused(tmp_path) -> None:
    with pytest.raises(SliceGANImportError, match="not a readable pickle"):
        read_params(b"\x00garbage bytes")
    big = tmp_path / "big_params.data"
    big.write_bytes(pickle.dumps([list(range(100_000))] * 8))
    weights, _, _ = make_files(tmp_path, channels=2, imtype="nphase", rc=False)
    with pytest.raises(SliceGANImportError, match="larger than"):
        import_slicegan(weights, big, tmp_path / "g.safetensors")


def test_layers_microforge_cannot_run_are_refused(tmp_path) -> None:
    weights, params, _ = make_files(tmp_path, channels=2, imtype="nphase", rc=False)
    bad = params_for(2)
    bad[5] = [3, 2, 2, 2]  # stride 3 with kernel 4
    params.write_bytes(pickle.dumps(bad))
    with pytest.raises(SliceGANImportError, match="uniform information density"):
        import_slicegan(weights, params, tmp_path / "g.safetensors")


def test_files_of_different_runs_are_refused(tmp_path) -> None:
    weights, params, _ = make_files(tmp_path, channels=2, imtype="nphase", rc=False)
    other = params_for(2, latent_channels=16)
    params.write_bytes(pickle.dumps(other))
    with pytest.raises(SliceGANImportError, match="same run") as caught:
        import_slicegan(weights, params, tmp_path / "g.safetensors")
    assert caught.value.code == "invalid_slicegan_weights"


class _Storage:
    """Pickled as torch.save pickles a storage: a persistent id naming a data/ record."""


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


def _handmade_state_file(path: Path, numel: int, record_bytes: int, offset: int, size, stride):
    """A torch.save-shaped zip whose one tensor claims what the test wants."""
    storage = _Storage()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if obj is storage:
                return ("storage", torch.FloatStorage, "0", "cpu", numel)
            return None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"convs.0.weight": _Tensor(storage, offset, size, stride)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("run_Gen/data.pkl", buffer.getvalue())
        archive.writestr("run_Gen/byteorder", "little")
        archive.writestr("run_Gen/data/0", b"\x00" * record_bytes)


def test_hostile_weights_files_are_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    weights, params, net = make_files(tmp_path, channels=2, imtype="nphase", rc=False)

    torch.save({"convs.0.weight": _RunsCode(marker)}, weights)  # a pickle that runs code
    with pytest.raises(UnsafePickleError, match="refused"):
        load_state_dict(weights)
    assert not marker.exists()

    _handmade_state_file(weights, 4, 16, 0, (2, 2), (2, 1))  # a valid one, to be sure
    assert load_state_dict(weights)["convs.0.weight"].shape == (2, 2)
    _handmade_state_file(weights, 10**9, 16, 0, (2, 2), (2, 1))  # claims 4 GB of floats
    with pytest.raises(UnsafePickleError, match="bytes, not the"):
        load_state_dict(weights)
    _handmade_state_file(weights, 4, 16, 1, (2, 2), (2, 1))  # reaches past its storage
    with pytest.raises(UnsafePickleError, match="past the end"):
        load_state_dict(weights)
    _handmade_state_file(weights, 4, 16, 0, (2, -2), (2, 1))  # a negative size
    with pytest.raises(UnsafePickleError, match="impossible shape"):
        load_state_dict(weights)

    with zipfile.ZipFile(weights, "w", zipfile.ZIP_DEFLATED) as archive:  # a zip bomb shape
        archive.writestr("run_Gen/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("run_Gen/data/0", b"\x00" * 10**6)
    with pytest.raises(UnsafePickleError, match="compressed"):
        load_state_dict(weights)

    weights.write_bytes(pickle.dumps(net.state_dict()))  # legacy / plain pickle: no zip
    with pytest.raises(UnsafePickleError, match="torch.save it again"):
        load_state_dict(weights)

    buffer = io.BytesIO()
    torch.save([1, 2, 3], buffer)  # a zip, but not a state dict
    weights.write_bytes(buffer.getvalue())
    with pytest.raises(UnsafePickleError, match="not a state dict"):
        load_state_dict(weights)


def test_what_the_files_cannot_say_is_asked_for(tmp_path) -> None:
    weights, params, _ = make_files(tmp_path, channels=3, imtype="colour", rc=False)
    out = tmp_path / "g.safetensors"
    with pytest.raises(SliceGANImportError, match="colour or three phases") as caught:
        import_slicegan(weights, params, out)
    assert caught.value.code == "image_type_required"
    with pytest.raises(SliceGANImportError, match="1 channel"):
        import_slicegan(weights, params, out, image_type="grayscale")
    with pytest.raises(SliceGANImportError, match="2 phase value"):
        import_slicegan(weights, params, out, image_type="nphase", phases=[0, 1])
    with pytest.raises(SliceGANImportError, match="differ"):
        import_slicegan(weights, params, out, image_type="nphase", phases=[0, 1, 1])
    assert not out.exists()
    grey_weights, grey_params, _ = make_files(tmp_path, channels=1, imtype="grayscale", rc=True)
    assert import_slicegan(grey_weights, grey_params, out).image_type == "grayscale"


def test_the_cli_imports_and_generates_a_periodic_volume(tmp_path) -> None:
    weights, params, _ = make_files(tmp_path, channels=3, imtype="nphase", rc=True)
    out = tmp_path / "imported.safetensors"
    runner = CliRunner()
    refused = runner.invoke(cli, ["import-slicegan", str(weights), str(params), "--out", str(out)])
    assert refused.exit_code != 0 and "--type colour or --type nphase" in refused.output
    result = runner.invoke(
        cli,
        [
            "import-slicegan",
            str(weights),
            str(params),
            "--out",
            str(out),
            "--type",
            "nphase",
            "--phases",
            "0,128,255",
            "--pixel-size",
            "0.5",
            "--unit",
            "nm",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "resize-conv" in result.output and "period 16" in result.output
    volume = tmp_path / "volume.tif"
    result = runner.invoke(
        cli,
        ["generate", str(out), "--shape", "32", "20", "16", "--out", str(volume)]
        + ["--periodic", "z,x", "--chunk", "12", "--seed", "3"],
    )
    assert result.exit_code == 0, result.output
    info = read_volume_info(volume)
    assert tuple(info["shape"]) == (32, 20, 16)
    assert tuple(info["voxel_size"]) == (0.5, 0.5, 0.5) and info["unit"] == "nm"


@pytest.mark.parametrize(
    "lists",
    [
        # The public code's defaults: 6 critic kernels/strides but 5 paddings (zip uses 5).
        [[4] * 6, [2] * 6, [3, 64, 128, 256, 512, 1], [1, 1, 1, 1, 0]]
        + [[4] * 5, [2] * 5, [32, 1024, 512, 128, 32, 3], [2, 2, 2, 2, 3]],
        [[4] * 5, [2] * 5, [1, 64, 128, 256, 512, 1], [1, 1, 1, 1, 0]]
        + [[4] * 6, [2] * 6, [16, 512, 256, 128, 64, 1], [2, 2, 2, 2, 3]],
    ],
)
def test_the_public_codes_default_layers_map_onto_a_microforge_network(lists) -> None:
    from microforge.models.slicegan_import import _network

    params = read_params(pickle.dumps(lists))
    assert params.layers == 5
    for kind in ("transpose", "resize_conv"):
        network = _network(params, kind)
        assert network.latent_size == 4 and network.crop_size == 64 and network.period == 32
        assert network.critic_kernels == [4] * 5


def test_a_critic_that_does_not_fit_is_replaced_as_it_is_never_used(tmp_path) -> None:
    """The public code averages whatever its critic outputs; MicroForge's config wants 1x1."""
    weights, params, _ = make_files(tmp_path, channels=2, imtype="nphase", rc=False)
    lists = params_for(2)
    lists[:4] = [[1] * 4, [1] * 4, [2, 4, 4, 4, 1], [0] * 4]  # keeps every crop's size
    params.write_bytes(pickle.dumps(lists))
    info = import_slicegan(weights, params, tmp_path / "g.safetensors")
    assert info.network.critic_kernels == [info.network.crop_size] == [32]
