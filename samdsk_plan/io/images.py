"""Reading and writing images: nibabel for NIfTI, SimpleITK for everything else ITK reads, Pillow
for natural images (PNG, JPEG, BMP, TIFF).

Every path returns the same thing, so a dataset stored as ``.nii.gz`` and the same data stored as
``.mha`` or ``.nrrd`` give identical arrays, spacings and affines:

* ``array``: voxel data indexed ``[i, j, k]`` (nibabel's order; SimpleITK's ``[k, j, i]`` is
  transposed), with a trailing channel axis ``[i, j, k, c]`` for multi-channel files;
* ``spacing``: voxel size along ``i, j, k`` in mm;
* ``affine``: 4x4 voxel-index -> RAS+ world (mm) matrix, as in NIfTI.

**2D images are volumes of one slice**: a natural image of ``H x W`` pixels is the array
``[x, y, 0]`` = ``[column, row, 0]`` (shape ``(W, H, 1)``, RGB ``(W, H, 1, 3)``; the index order
ITK and MONAI read it in), spacing 1 and the identity affine (the formats carry no geometry we
trust); a 2D NIfTI / MHA of shape ``X x Y`` (or ``X x Y x 1``) keeps its spacing and becomes
``(X, Y, 1)``. ``ImageData.is_2d`` says so. Every
stage then treats a 2D image as a volume whose third axis has one slice, so the image-level
region counts along that axis are the paper's counts per image, with no 2D branch in the stages.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samdsk_plan.errors import SamdskError
from samdsk_plan.io.atomic import temporary_file

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr", ".nii", ".nii.gz")
NATURAL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# lossless formats a label may be written in (JPEG is lossy: a label there would change its values)
LOSSLESS_NATURAL = (".png", ".bmp", ".tif", ".tiff")
# ITK stores world coordinates as LPS, NIfTI as RAS: flip the first two world axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class ImageData:
    """An image as read from disk (see module docstring for axis order and units)."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    is_2d: bool = False
    notes: tuple[str, ...] = ()  # what reading changed (an alpha channel dropped, ...)

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


def label_suffix(image: str | os.PathLike) -> str:
    """The suffix a label map of ``image`` is written with: ``.png`` for a natural image (PNG,
    JPEG, ... in: a lossless PNG out), ``.nii.gz`` otherwise."""
    return ".png" if image_suffix(image) in NATURAL_SUFFIXES else ".nii.gz"


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
    """Read a 3D (or 3D multi-channel) image, or a 2D one as a one-slice volume (module docstring).

    Args:
        path: image file.
        backend: ``"nibabel"``, ``"itk"`` (SimpleITK), ``"natural"`` (Pillow) or ``"auto"``
            (nibabel for NIfTI, Pillow for PNG / JPEG / BMP / TIFF, SimpleITK otherwise).

    Raises:
        OSError / ValueError / RuntimeError from the backends when the file is unreadable; the
        callers turn these into :class:`~samdsk_plan.io.cases.Problem` records.
    """
    suffix = image_suffix(path)
    if backend == "auto":
        backend = "nibabel" if suffix in NIFTI_SUFFIXES else "natural" if suffix in NATURAL_SUFFIXES else "itk"
    if backend == "natural":
        return _read_natural(Path(path))
    if backend == "nibabel":
        return _as_volume(_read_nibabel(Path(path)))
    if backend == "itk":
        return _as_volume(_read_itk(Path(path)))
    raise ValueError(f"unknown image backend {backend!r} (use 'auto', 'nibabel', 'itk' or 'natural')")


def read_image_or_fail(path: str | os.PathLike) -> ImageData:
    """:func:`read_image` whose every failure is one :class:`~samdsk_plan.errors.SamdskError`
    naming the file (``"FILE: cannot be read as an image (...)"``), for stages that stop on it."""
    try:
        image = read_image(path)
        np.asarray(image.array)  # nibabel reads lazily: a truncated file fails here
    except Exception as exc:
        raise SamdskError(f"{path}: cannot be read as an image ({type(exc).__name__}: {exc})") from None
    return image


def _as_volume(data: ImageData) -> ImageData:
    """A 2D NIfTI / ITK image (``X x Y``) as the one-slice volume ``(X, Y, 1)``, flagged 2D; an
    ``X x Y x 1`` file is flagged 2D as it is."""
    a = data.array
    if a.ndim == 2:
        return ImageData(a[:, :, None], data.spacing, data.affine, True, data.notes)
    if a.ndim >= 3 and a.shape[2] == 1:
        return ImageData(a, data.spacing, data.affine, True, data.notes)
    return data


def _read_natural(path: Path) -> ImageData:
    """A PNG / JPEG / BMP / TIFF image of ``H x W`` pixels as ``(W, H, 1)`` (grayscale, palette
    indices) or ``(W, H, 1, 3)`` (RGB; an alpha channel is dropped and noted), spacing 1,
    identity affine."""
    from PIL import Image

    with Image.open(path) as img:
        if getattr(img, "n_frames", 1) > 1:
            raise ValueError(f"holds {img.n_frames} frames; only single-frame images are read")
        mode, notes = img.mode, ()
        if mode in ("RGBA", "LA", "PA"):
            notes = (f"its alpha channel was dropped ({mode} image)",)
            img = img.convert("RGB" if mode == "RGBA" else "L" if mode == "LA" else "P")
            mode = img.mode
        if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            img, mode = img.convert("RGB"), "RGB"
        array = np.swapaxes(np.asarray(img), 0, 1)  # Pillow's [row, column] -> [x, y]
    array = array[:, :, None] if array.ndim == 2 else array[:, :, None, :]
    return ImageData(array, (1.0, 1.0, 1.0), np.eye(4), True, notes)


def label_plane(array: np.ndarray) -> np.ndarray:
    """A label image as one integer plane: an RGB label ``(W, H, 1, 3)`` whose three planes are
    equal becomes ``(W, H, 1)``.

    Raises:
        ValueError: a colour label (planes differ), saying how to convert it.
    """
    if array.ndim == 4 and array.shape[3] == 3:
        if not (np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])):
            raise ValueError(
                "is a colour label (its red, green and blue planes differ); store one integer value per "
                "class in a single-channel image (e.g. a grayscale or palette PNG with values 0, 1, 2, ...)"
            )
        return array[..., 0]
    return array


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

    NIfTI goes through nibabel, natural formats (a one-slice volume; the affine is not stored)
    through Pillow, other extensions through SimpleITK. The file appears under its final name
    only once it is complete.
    """
    path = Path(path)
    suffix = image_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_file(path, strip_image_suffix(path), suffix)
    os.close(fd)
    try:
        if suffix in NATURAL_SUFFIXES:
            _write_natural(Path(tmp), np.asarray(array), suffix)
        elif suffix in NIFTI_SUFFIXES:
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


def _write_natural(path: Path, array: np.ndarray, suffix: str) -> None:
    """A one-slice volume ``(W, H, 1)`` (or ``(W, H, 1, 3)`` RGB, ``[x, y]`` as read) as a natural
    image; labels (integers) only in a lossless format, as uint8 (or uint16 above 255)."""
    from PIL import Image

    if array.ndim not in (3, 4) or array.shape[2] != 1:
        raise ValueError(f"a {suffix} file holds one slice; got an array of shape {array.shape}")
    plane = np.swapaxes(array[:, :, 0], 0, 1)  # [x, y] -> Pillow's [row, column]
    if plane.dtype.kind in "iub":
        if suffix not in LOSSLESS_NATURAL:
            raise ValueError(f"{suffix} is lossy; write integer images as one of {', '.join(LOSSLESS_NATURAL)}")
        if plane.min() < 0 or plane.max() > 65535:
            raise ValueError(f"values {plane.min()}..{plane.max()} do not fit an unsigned 16-bit image")
        plane = plane.astype(np.uint8 if plane.max() <= 255 else np.uint16)
    else:
        plane = np.clip(np.rint(plane), 0, 255).astype(np.uint8)
    Image.fromarray(plane).save(
        path, format={".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(suffix, suffix[1:].upper())
    )


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
