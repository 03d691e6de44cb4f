"""Image IO: nibabel and SimpleITK paths agree on arrays, spacing and affine."""

import numpy as np
import pytest

from samdsk_plan.io import read_image, write_image
from samdsk_plan.io.images import strip_image_suffix


def oblique_affine() -> np.ndarray:
    """Spacing (0.8, 1.2, 3.0) mm, rotated 30 degrees about the third axis, axis 1 flipped."""
    t = np.deg2rad(30)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([0.8, -1.2, 3.0])
    a[:3, 3] = [12.5, -40.0, 7.25]
    return a


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
def test_round_trip_keeps_array_spacing_affine(tmp_path, suffix):
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    path = write_image(tmp_path / f"img{suffix}", array, oblique_affine())
    img = read_image(path)
    np.testing.assert_array_equal(img.array, array)
    np.testing.assert_allclose(img.spacing, (0.8, 1.2, 3.0), atol=1e-6)
    np.testing.assert_allclose(img.affine, oblique_affine(), atol=1e-5)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_nibabel_and_itk_read_the_same_nifti(tmp_path):
    array = np.random.default_rng(0).random((7, 8, 9)).astype(np.float32)
    path = write_image(tmp_path / "img.nii.gz", array, oblique_affine())
    nib_img, itk_img = read_image(path, backend="nibabel"), read_image(path, backend="itk")
    np.testing.assert_array_equal(nib_img.array, itk_img.array)
    np.testing.assert_allclose(nib_img.affine, itk_img.affine, atol=1e-5)
    assert nib_img.spacing == pytest.approx(itk_img.spacing)


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_multichannel_channels_last(tmp_path, suffix):
    array = np.stack([np.full((3, 4, 5), c, dtype=np.float32) for c in range(2)], axis=-1)
    img = read_image(write_image(tmp_path / f"mc{suffix}", array, np.eye(4)))
    assert img.array.shape == (3, 4, 5, 2)
    assert img.spatial_shape == (3, 4, 5)
    np.testing.assert_array_equal(img.array[..., 1], 1)


def test_strip_image_suffix():
    assert strip_image_suffix("a/case_001.nii.gz") == "case_001"
    assert strip_image_suffix("case.v2.mha") == "case.v2"
