"""Reading and writing medical images: nibabel for NIfTI, SimpleITK for everything else ITK reads.

Both paths return the same thing, so a dataset stored as ``.nii.gz`` and the same data stored as
``.mha`` or ``.nrrd`` give identical arrays, spacings and affines:

* ``array``: voxel data indexed ``[i, j, k]`` (nibabel's order; SimpleITK's ``[k, j, i]`` is
  transposed), with a trailing channel axis ``[i, j, k, c]`` for multi-channel files;
* ``spacing``: voxel size along ``i, j, k`` in mm;
* ``affine``: 4x4 voxel-index -> RAS+ world (mm) matrix, as in NIfTI.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr", ".nii", ".nii.gz")
# ITK stores world coordinates as LPS, NIfTI as RAS: flip the first two world axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class ImageData:
    """An image as read from disk (see module docstring for axis order and units)."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape[:3])


def image_suffix(path: str | os.PathLike) -> str:
    """The file's image extension, double ones included (``.nii.gz``); lower case."""
    name = Path(path).name.lower()
    for double in (".nii.gz",):
        if name.endswith(double):
            return double
    return Path(name).suffix


def strip_image_suffix(path: str | os.PathLike) -> str:
    """The file name without its image extension: ``case_001.nii.gz`` -> ``case_001``."""
    name = Path(path).name
    return name[: len(name) - len(image_suffix(name))]


def file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be opened as a file (missing, a symlink loop, a dangling link, a
    folder, no access), or None when it is a file."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop: the link cannot be resolved"
        if os.path.islink(path):
            return f"broken symbolic link: its target {os.readlink(path)} does not exist"
        if exc.errno == errno.ENOENT:
            return "file is missing"
        return f"cannot be accessed ({exc.strerror or exc})"
    return "is a folder, not a file" if stat.S_ISDIR(mode) else None


def read_image(path: str | os.PathLike, backend: str = "auto") -> ImageData:
    """Read a 3D (or 3D multi-channel) image.

    Args:
        path: image file.
        backend: ``"nibabel"``, ``"itk"`` (SimpleITK) or ``"auto"`` (nibabel for NIfTI).

    Raises:
        OSError / ValueError / RuntimeError from the backends when the file is unreadable; the
        callers turn these into :class:`~samdsk_plan.io.cases.Problem` records.
    """
    suffix = image_suffix(path)
    if backend == "auto":
        backend = "nibabel" if suffix in NIFTI_SUFFIXES else "itk"
    if backend == "nibabel":
        return _read_nibabel(Path(path))
    if backend == "itk":
        return _read_itk(Path(path))
    raise ValueError(f"unknown image backend {backend!r} (use 'auto', 'nibabel' or 'itk')")


def _read_nibabel(path: Path) -> ImageData:
    import nibabel as nib

    img = nib.load(str(path))
    array = np.asanyarray(img.dataobj)
    zooms = img.header.get_zooms()
    spacing = tuple(float(z) for z in (tuple(zooms[:3]) + (1.0, 1.0, 1.0))[:3])
    return ImageData(array=array, spacing=spacing, affine=np.asarray(img.affine, dtype=np.float64))


def _read_itk(path: Path) -> ImageData:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(img)
    ndim = img.GetDimension()
    # GetArrayFromImage puts axes in reverse order; vector components stay last.
    spatial = tuple(range(ndim))[::-1]
    array = np.transpose(array, spatial + tuple(range(ndim, array.ndim)))
    spacing = np.ones(3)
    spacing[:ndim] = img.GetSpacing()[:3]
    direction = np.eye(3)
    direction[:ndim, :ndim] = np.asarray(img.GetDirection()).reshape(ndim, ndim)[:3, :3]
    origin = np.zeros(3)
    origin[:ndim] = img.GetOrigin()[:3]
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ origin
    return ImageData(array=array, spacing=tuple(float(s) for s in spacing), affine=affine)


def write_image(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``array`` (``[i, j, k]`` or ``[i, j, k, c]``) with a voxel->RAS ``affine`` atomically.

    NIfTI goes through nibabel, other extensions through SimpleITK. The file appears under its
    final name only once it is complete.
    """
    path = Path(path)
    suffix = image_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{strip_image_suffix(path)}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        if suffix in NIFTI_SUFFIXES:
            import nibabel as nib

            img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
            img.set_qform(img.affine, code=1)
            img.set_sform(img.affine, code=1)
            nib.save(img, tmp)
        else:
            _write_itk(Path(tmp), np.asarray(array), np.asarray(affine, dtype=np.float64))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write_itk(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    import SimpleITK as sitk

    vector = array.ndim == 4
    order = (2, 1, 0, 3) if vector else (2, 1, 0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, order)), isVector=vector)
    lps = _LPS_TO_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(d) for d in (lps / spacing).ravel()])
    img.SetOrigin([float(o) for o in _LPS_TO_RAS @ affine[:3, 3]])
    sitk.WriteImage(img, str(path), useCompression=True)
