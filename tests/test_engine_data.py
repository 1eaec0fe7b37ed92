import numpy as np
import pytest
import torch

from microforge.models.data import CropSampler, DataError, prepare_training_data
from microforge.models.phases import analyse_images

from engine_helpers import SHARED_DATA, blobs


def test_detects_nphase_and_remembers_original_values():
    image = blobs((80, 90)) * 255
    data = prepare_training_data([image])
    assert data.image_type == "nphase" and data.analysis.detected
    assert data.phases == [0, 255]
    assert set(np.unique(data.arrays[0])) == {0, 1}
    assert sum(data.analysis.fractions) == pytest.approx(1.0)
    assert "nphase (detected)" in data.describe()


def test_three_phase_values_like_0_85_170_and_signed_labels():
    labels = np.random.default_rng(0).integers(0, 3, (64, 64))
    assert analyse_images([(labels * 85).astype(np.uint8)]).phases == [0, 85, 170]
    assert analyse_images([(labels - 1).astype(np.int8)]).phases == [-1, 0, 1]


def test_many_levels_are_grayscale_and_colour_is_colour():
    grey = np.random.default_rng(1).integers(0, 256, (64, 64)).astype(np.uint8)
    assert analyse_images([grey]).image_type == "grayscale"
    colour = np.random.default_rng(2).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    data = prepare_training_data([colour])
    assert data.image_type == "colour" and data.arrays[0].shape == (3, 64, 64)


def test_too_many_phases_for_nphase():
    grey = np.random.default_rng(1).integers(0, 256, (64, 64)).astype(np.uint8)
    with pytest.raises(DataError, match="too many phases.*grayscale"):
        analyse_images([grey], "nphase")


def test_anisotropic_images_must_share_phases():
    a, b = blobs((64, 64)), blobs((64, 64), seed=1)
    c = blobs((64, 64), seed=2) * 2
    with pytest.raises(DataError, match="different phase sets"):
        analyse_images([a, b, c])
    assert analyse_images([a, b, b]).layout == "anisotropic"


def test_wrong_number_of_images_and_single_phase():
    with pytest.raises(DataError, match="one 2D image"):
        analyse_images([blobs((64, 64)), blobs((64, 64))])
    with pytest.raises(DataError, match="single value"):
        analyse_images([np.zeros((64, 64), np.uint8)])


def test_image_smaller_than_crop_says_what_to_do():
    data = prepare_training_data([blobs((40, 100))])
    with pytest.raises(DataError, match="40x100 pixels.*64-pixel crops.*--arch tiny"):
        CropSampler(data, 64, torch.device("cpu"))


def test_scale_factor_downsamples_labels_by_majority():
    image = blobs((120, 100)) * 255
    data = prepare_training_data([image], scale_factor=0.5)
    assert data.arrays[0].shape == (60, 50)
    assert set(np.unique(data.arrays[0])) <= {0, 1}
    grey = prepare_training_data([np.linspace(0, 1, 120 * 100).reshape(120, 100)], "grayscale", 0.5)
    assert grey.arrays[0].shape == (1, 60, 50)


def test_crops_come_from_the_image_in_the_documented_orientation():
    volume = np.arange(40 * 50 * 60, dtype=np.float32).reshape(40, 50, 60)
    data = prepare_training_data([volume], "grayscale")
    sampler = CropSampler(data, 32, torch.device("cpu"))
    rng = torch.Generator().manual_seed(0)
    scaled = data.arrays[0][0]
    for axis, (row_step, col_step) in enumerate([(50 * 60, 60), (50 * 60, 1), (60, 1)]):
        crop = sampler.sample(axis, 3, rng)[:, 0].numpy()
        assert crop.shape == (3, 32, 32)
        step = scaled.ravel()[1] - scaled.ravel()[0]
        np.testing.assert_allclose(crop[:, 1, 0] - crop[:, 0, 0], row_step * step, rtol=1e-2)
        np.testing.assert_allclose(crop[:, 0, 1] - crop[:, 0, 0], col_step * step, rtol=1e-2)


def test_nphase_crops_are_one_hot():
    data = prepare_training_data([blobs((70, 70)) * 255])
    crops = CropSampler(data, 32, torch.device("cpu")).sample(0, 4, torch.Generator())
    assert crops.shape == (4, 2, 32, 32)
    assert torch.all(crops.sum(1) == 1)


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared data not present")
def test_real_micrographs_are_detected():
    from microforge.storage.images import read_image

    micrographs = SHARED_DATA / "micrographs"
    assert prepare_training_data([read_image(micrographs / "micro001.png")]).phases == [0, 255]
    assert prepare_training_data([read_image(micrographs / "sem_3phase.tif")]).phases == [0, 1, 2]
    assert prepare_training_data([read_image(micrographs / "micro007.png")]).image_type == (
        "grayscale"
    )
    volume = prepare_training_data([read_image(SHARED_DATA / "volumes/sofc_anode_3phase_62.tif")])
    assert volume.layout == "volume" and volume.phases == [0, 1, 2]


def test_images_as_trained_keep_their_values_at_the_training_scale():
    labels = np.zeros((64, 64), dtype=np.uint8)
    labels[:, 32:] = 255
    data = prepare_training_data([labels], scale_factor=0.5)
    (scaled,) = data.as_images()
    assert scaled.shape == (32, 32) and set(np.unique(scaled)) == {0, 255}
    assert (scaled[:, 16:] == 255).all() and (scaled[:, :16] == 0).all()
    grey = np.tile(np.arange(64, dtype=np.uint16) * 1000, (64, 1))
    (grey_scaled,) = prepare_training_data([grey], scale_factor=0.5).as_images()
    assert grey_scaled.shape == (32, 32)
    assert grey_scaled[0, 0] == pytest.approx(500, abs=1)  # mean of 0 and 1000
    (same,) = prepare_training_data([grey]).as_images()
    assert np.allclose(same, grey, atol=0.01)
