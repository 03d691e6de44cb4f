"""The package's own MONAI components that the emitted bundles name where MONAI has none.

Bad input files end a bundle run with a :class:`~samdsk_plan.errors.SamdskError` naming the
file. MONAI's runner wraps every error in its own ("applying transform ...", "Failed to
instantiate component ..."), so importing this module installs :func:`install_error_summary`:
an uncaught error caused by a SamdskError prints the usual traceback, then that error's message
as the last line.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import torch
from monai.data import ImageReader, MetaTensor
from monai.losses import DiceCELoss
from monai.transforms import LoadImage, MapTransform, SaveImage

from samdsk_plan.errors import SamdskError
from samdsk_plan.io.images import ImageData, label_plane, label_suffix, read_image

# how an error raised in a DataLoader worker appears in the text of the exception re-raised in the main process
_WORKER_ERROR = re.compile(r"^samdsk_plan\.errors\.\w+: (?P<message>.+)$", re.MULTILINE)


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """``TYPE: message`` of ``exc`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict:
    """The state dict in ``path`` (a ``model.pt`` the bundle saved: a state dict or
    ``{"model": state_dict}``), loaded with ``weights_only=True``; SamdskError naming the file
    when it is missing or not a PyTorch checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise SamdskError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        what = "the file is empty" if path.stat().st_size == 0 else "corrupt, truncated or not a saved model"
        raise SamdskError(f"{path}: not a PyTorch checkpoint ({what}; torch.load raised {type(exc).__name__})") from exc
    if isinstance(state, dict) and set(state) == {"model"}:
        state = state["model"]
    if not isinstance(state, Mapping):
        raise SamdskError(f"{path}: not a model checkpoint (holds a {type(state).__name__}, not a state dict)")
    return dict(state)


def load_weights(
    network: torch.nn.Module, path: str | Path, map_location: str | torch.device | None = "cpu"
) -> torch.nn.Module:
    """``network`` with the weights of the checkpoint ``path``; SamdskError naming the file when
    it cannot be read or does not fit the network."""
    state = read_checkpoint(path, map_location)
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise SamdskError(f"{path}: does not fit the bundle's network ({describe_error(exc)})") from None
    return network


def initialised(network: torch.nn.Module, checkpoint: str | None) -> torch.nn.Module:
    """``network`` with weights from ``checkpoint`` (see :func:`load_weights`), or unchanged when
    ``checkpoint`` is None (training from scratch)."""
    if checkpoint is None:
        return network
    if not Path(checkpoint).is_file():
        raise SamdskError(f"{checkpoint}: initial checkpoint not found")
    return load_weights(network, checkpoint)


class LoadImageNamedd(MapTransform):
    """MONAI's ``LoadImaged`` (``image_only``) whose read errors name the file: a SamdskError
    ``"FILE: cannot be read as an image (...)"``. For a list of channel files the failing one is
    named. ``loader_args`` go to :class:`monai.transforms.LoadImage`."""

    def __init__(self, keys: Hashable | Sequence[Hashable], allow_missing_keys: bool = False, **loader_args):
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadImage(image_only=True, **loader_args)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                d[key] = self.loader(d[key])
            except Exception as exc:
                culprit = self._culprit(d[key])
                raise SamdskError(f"{culprit}: cannot be read as an image ({describe_error(exc)})") from exc
        return d

    def _culprit(self, value: object) -> str:
        """The file of ``value`` (a path or a list of channel paths) that fails to load."""
        if isinstance(value, (list, tuple)) and len(value) > 1:
            for path in value:
                try:
                    self.loader(path)
                except Exception:
                    return str(path)
        return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


class PlanarImageReader(ImageReader):
    """A MONAI reader for 2D images that reads as the rest of the package does
    (:func:`samdsk_plan.io.images.read_image`): PNG / JPEG / BMP / TIFF through Pillow (alpha
    dropped), 2D NIfTI / MHA keeping their geometry. Returns the plane ``[x, y]`` (``(X, Y)``, or
    ``(X, Y, C)`` channel-last for RGB), a 3x3 RAS affine and ``spatial_shape`` ``(X, Y)``: what
    MONAI's ``PILReader`` gives for a PNG, and the same for a NIfTI of one slice.

    Args:
        label: read a label: an RGB label whose three planes are equal becomes one plane, a colour
            label is an error saying how to convert it.
    """

    def __init__(self, label: bool = False):
        self.label = label

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        return True

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs) -> list[tuple[str, ImageData]]:
        paths = [data] if isinstance(data, (str, Path)) else list(data)
        return [(str(p), read_image(p)) for p in paths]

    def get_data(self, img: list[tuple[str, ImageData]]) -> tuple[np.ndarray, dict]:
        planes = []
        for path, image in img:
            if not image.is_2d:
                raise SamdskError(f"{path}: a volume of shape {image.spatial_shape}; this bundle is for 2D images")
            array = label_plane(image.array) if self.label else image.array
            planes.append(array[:, :, 0])  # the one slice: (X, Y) or (X, Y, C)
        channels = [p.shape[2] if p.ndim == 3 else 1 for p in planes]
        if len(planes) == 1:
            data = planes[0]
        else:  # one file per channel
            data = np.concatenate([p if p.ndim == 3 else p[..., None] for p in planes], axis=-1)
        affine = np.asarray(img[0][1].affine, dtype=np.float64)[np.ix_([0, 1, 3], [0, 1, 3])]
        meta = {
            "affine": affine,
            "original_affine": affine.copy(),
            "spatial_shape": np.asarray(data.shape[:2]),
            "original_channel_dim": -1 if data.ndim == 3 else float("nan"),
            "channels": sum(channels),
        }
        return data, meta


class SaveSegmentationd(MapTransform):
    """MONAI's ``SaveImaged`` writing each label map in its input's own family of formats
    (:func:`samdsk_plan.io.images.label_suffix`: a PNG for a natural image, NIfTI otherwise),
    named ``IMAGE_<postfix><suffix>`` in ``output_dir``. ``saver_args`` go to ``SaveImage``."""

    def __init__(self, keys: Hashable | Sequence[Hashable], output_dir: str, output_postfix: str = "seg", **saver_args):
        super().__init__(keys)
        self.args = {"output_dir": output_dir, "output_postfix": output_postfix, **saver_args}
        self.savers: dict[str, SaveImage] = {}

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            suffix = label_suffix(d[key].meta["filename_or_obj"])
            if suffix not in self.savers:
                self.savers[suffix] = SaveImage(output_ext=suffix, **self.args)
            d[key] = self.savers[suffix](d[key])
        return d


class CheckLabelValuesd(MapTransform):
    """Refuse a label holding values that ``labels`` (the plan's value -> name map) does not
    declare: a SamdskError naming the label file, the values found and their voxel counts. Run it
    right after loading, before anything resamples the label."""

    def __init__(
        self, keys: Hashable | Sequence[Hashable], labels: Mapping | Sequence, allow_missing_keys: bool = False
    ):
        super().__init__(keys, allow_missing_keys)
        self.declared = {int(v) for v in labels}

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            tensor = label.as_tensor() if isinstance(label, MetaTensor) else torch.as_tensor(label)
            values, counts = torch.unique(tensor, return_counts=True)
            bad = [(v, n) for v, n in zip(values.tolist(), counts.tolist(), strict=True) if v not in self.declared]
            if bad:
                path = getattr(label, "meta", {}).get("filename_or_obj", key)
                found = ", ".join(f"{v:g} ({n} voxel(s))" for v, n in bad)
                raise SamdskError(
                    f"{path}: label values not declared in the plan's labels {sorted(self.declared)}: {found}"
                )
        return d


class DeepSupervisionDiceCE(torch.nn.Module):
    """Dice + cross-entropy over DynUNet's deep-supervision outputs.

    In training mode DynUNet returns ``(B, 1 + deep_supr_num, C, *spatial)`` (heads already
    up-sampled to full size); in eval mode ``(B, C, *spatial)``. Head ``i`` is weighted
    ``2**-i``, the weights normalised to sum to 1 (as nnU-Net), so the loss scale does not
    depend on the number of heads. The target is ``(B, 1, *spatial)`` label indices; Dice
    leaves the background out and is computed over the whole batch (MONAI ``DiceCELoss``).
    """

    def __init__(self, include_background: bool = False, batch: bool = True):
        super().__init__()
        self.base = DiceCELoss(to_onehot_y=True, softmax=True, include_background=include_background, batch=batch)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.ndim != target.ndim + 1:
            return self.base(prediction, target)
        heads = torch.unbind(prediction, dim=1)
        weights = [0.5**i for i in range(len(heads))]
        return sum(w / sum(weights) * self.base(h, target) for w, h in zip(weights, heads, strict=True))


def error_summary(exc: BaseException | None) -> str | None:
    """The message of the innermost SamdskError behind ``exc`` (following ``__cause__`` and
    ``__context__``, and the text of errors re-raised from DataLoader workers), or None."""
    found, seen = None, set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, SamdskError):
            found = str(exc).splitlines()[0]
        else:
            match = _WORKER_ERROR.search(str(exc))
            found = match["message"] if match else found
        exc = exc.__cause__ or exc.__context__
    return found


def install_error_summary() -> None:
    """Make an uncaught error that a SamdskError caused end with ``samdsk-plan: error: MESSAGE``
    after the traceback (idempotent)."""
    previous = sys.excepthook
    if getattr(previous, "samdsk_summary", False):
        return

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        previous(exc_type, exc, tb)
        summary = error_summary(exc)
        if summary:
            print(f"samdsk-plan: error: {summary}", file=sys.stderr, flush=True)

    hook.samdsk_summary = True
    sys.excepthook = hook


install_error_summary()
