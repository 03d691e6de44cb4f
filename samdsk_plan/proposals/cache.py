"""A per-case store of proposals, keyed by the image content and the generator's settings.

Image-only proposals do not change between SamDSK rounds, so they are computed once per slice
and kept in ``CACHE_DIR/CASE_ID.npz``: bit-packed masks, scores and (for prompted proposals,
which the loop stores per round) the prompts' origins per ``(axis, slice)``, with a JSON header
holding the key and each slice's window (offset, size, slice shape) and grid scale
(:attr:`~samdsk_plan.proposals.base.Proposals.scale`). A file whose key differs
(new image content, other generator or settings, other probabilities for prompted proposals)
is stale and ignored; slices missing from a valid file, or stored for another window, are
computed and added.
Files are replaced atomically, so an interrupted run leaves either the old or the new file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from samdsk_plan.errors import SamdskError
from samdsk_plan.io.atomic import atomic_write_bytes
from samdsk_plan.proposals.base import ProposalGenerator, Proposals

logger = logging.getLogger(__name__)
SliceKey = tuple[int, int]  # (axis, slice index)
UNREADABLE = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile)
"""What reading a truncated, empty, foreign or corrupt file raises (JSONDecodeError is a ValueError)."""
FORMAT_VERSION = 3
"""2: slices carry the window their masks lie on; 3: and the scale of their grid (older
files are stale)."""


def cache_key(image: np.ndarray, generator: ProposalGenerator) -> str:
    """sha256 of the image's shape, dtype and bytes and of the generator's name and settings."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "shape": list(image.shape),
                "dtype": str(image.dtype),
                "format": FORMAT_VERSION,
                "generator": generator.name,
                "settings": generator.settings(),
            },
            sort_keys=True,
        ).encode()
    )
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


class ProposalCache:
    """Proposals of many cases under one folder (see module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, case_id: str) -> Path:
        return self.root / f"{case_id}.npz"

    def load(self, case_id: str, key: str) -> dict[SliceKey, Proposals]:
        """Cached slices of ``case_id`` if the file exists and was made with ``key``; else ``{}``."""
        path = self.path(case_id)
        if not path.is_file():
            return {}
        try:
            return self._read(path, key)
        except UNREADABLE as exc:  # recompute and overwrite
            logger.warning("%s: unreadable proposal cache file (%s: %s); recomputing it", path, type(exc).__name__, exc)
            return {}

    def stored(self, case_id: str) -> dict[SliceKey, Proposals]:
        """Every slice of ``case_id``'s file under whatever key it was written with (a finished
        round's own proposals, read back for analysis: the file holds one key, so nothing stale
        can be mixed in).

        Raises:
            SamdskError: the file is missing or unreadable (named, with the problem).
        """
        path = self.path(case_id)
        try:
            return self._read(path, None)
        except FileNotFoundError:
            raise SamdskError(f"{path}: no proposal cache file for case {case_id}") from None
        except UNREADABLE as exc:
            raise SamdskError(f"{path}: unreadable proposal cache file ({type(exc).__name__}: {exc})") from None

    @staticmethod
    def _read(path: Path, key: str | None) -> dict[SliceKey, Proposals]:
        """The slices of the file at ``path``; ``{}`` if its key is not ``key`` (``None``: any)."""
        with np.load(path) as data:
            header = json.loads(bytes(data["header"]).decode("utf-8"))
            if key is not None and header.get("key") != key:
                return {}
            out = {}
            for axis, index, n, h, w, row, col, height, width, scale, size_h, size_w in header["slices"]:
                packed = data[f"m_{axis}_{index}"]
                masks = np.unpackbits(packed, axis=-1, count=h * w).astype(bool).reshape(n, h, w)
                origins = data[f"o_{axis}_{index}"].astype(np.int32) if f"o_{axis}_{index}" in data.files else None
                frame = None if (row, col, height, width) == (0, 0, size_h, size_w) else (height, width)
                scores = data[f"s_{axis}_{index}"].astype(np.float32)
                size = (size_h, size_w) if scale > 1 else None
                out[(axis, index)] = Proposals(masks, scores, origins, (row, col), frame, scale, size)
            return out

    def save(self, case_id: str, key: str, slices: dict[SliceKey, Proposals]) -> Path:
        """Write all ``slices`` of ``case_id`` under ``key`` (replacing the file atomically)."""
        arrays: dict[str, np.ndarray] = {}
        table = []
        for (axis, index), props in sorted(slices.items()):
            n, h, w = props.masks.shape
            arrays[f"m_{axis}_{index}"] = np.packbits(props.masks.reshape(n, h * w), axis=-1)
            arrays[f"s_{axis}_{index}"] = props.scores.astype(np.float32)
            if props.origins is not None:
                arrays[f"o_{axis}_{index}"] = props.origins.astype(np.int32)
            table.append([axis, index, n, h, w, *props.offset, *props.shape, props.scale, *props.window_size])
        header = json.dumps({"key": key, "format": FORMAT_VERSION, "slices": table}).encode("utf-8")
        buffer = io.BytesIO()
        np.savez_compressed(buffer, header=np.frombuffer(header, dtype=np.uint8), **arrays)
        return atomic_write_bytes(self.path(case_id), buffer.getvalue())
