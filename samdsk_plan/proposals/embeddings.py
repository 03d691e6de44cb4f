"""A size-bounded disk cache of foundation-model image embeddings, shared by rounds and runs.

An image encoder's output depends only on the slice, the weights and the preprocessing, so it
is stored once per slice under ``ROOT/KK/KEY.npy`` (float16), ``KEY`` the sha256 of the model's
name, weight digest and preprocessing version and of the slice's shape, dtype and bytes. Any
change of image or weights is a new key, never a stale hit. Files are written atomically (a
killed run leaves whole files or none; leftover temporary files are ignored), an unreadable
entry is recomputed with a warning, and once the bound is reached new embeddings are computed
but not stored (said once per cache).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from samdsk_plan.io.atomic import atomic_write_bytes

logger = logging.getLogger(__name__)
CACHE_ENV = "SAMDSK_EMBEDDING_CACHE"


def default_root() -> Path:
    """``$SAMDSK_EMBEDDING_CACHE``, else ``$XDG_CACHE_HOME/samdsk-plan/embeddings`` (``~/.cache``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "samdsk-plan" / "embeddings"


class EmbeddingCache:
    """Embeddings of one model under ``root``, at most ``max_gb`` GB of files.

    Args:
        root: cache folder (created when the first embedding is stored).
        model: ``{"name": ..., "weights": digest, "preprocessing": version, ...}``: what,
            besides the slice, the embedding depends on.
        max_gb: size bound of the folder's ``.npy`` files, in GB (1e9 bytes); 0 stores nothing.
        shape: the embedding's shape, checked on reading.
    """

    def __init__(self, root: str | Path, model: dict, max_gb: float, shape: tuple[int, ...]) -> None:
        self.root = Path(root)
        self.model = json.dumps(model, sort_keys=True)
        self.max_bytes = int(max_gb * 1e9)
        self.shape = tuple(shape)
        self.used = sum(p.stat().st_size for p in self.root.glob("*/*.npy")) if self.root.is_dir() else 0
        self.hits = self.misses = 0
        self._full_said = False

    def key(self, image: np.ndarray) -> str:
        h = hashlib.sha256(self.model.encode())
        h.update(json.dumps({"shape": list(image.shape), "dtype": str(image.dtype)}).encode())
        h.update(np.ascontiguousarray(image).tobytes())
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, image: np.ndarray) -> np.ndarray | None:
        """The stored embedding of ``image``, or None (not stored, or unreadable: then removed)."""
        path = self.path(self.key(image))
        if not path.is_file():
            self.misses += 1
            return None
        try:
            array = np.load(path, allow_pickle=False)
            if array.shape != self.shape or array.dtype != np.float16:
                raise ValueError(f"holds a {array.dtype} array of shape {array.shape}, expected float16 {self.shape}")
        except (OSError, ValueError, EOFError) as exc:
            logger.warning("%s: unreadable embedding (%s: %s); recomputing it", path, type(exc).__name__, exc)
            self.used -= path.stat().st_size
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return array

    def put(self, image: np.ndarray, embedding: np.ndarray) -> bool:
        """Store ``embedding`` (cast to float16) for ``image`` unless that would pass the bound;
        whether it was stored."""
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(embedding, dtype=np.float16), allow_pickle=False)
        data = buffer.getvalue()
        if self.used + len(data) > self.max_bytes:
            if not self._full_said:
                logger.warning(
                    "%s: the embedding cache holds %.2f GB, its bound (--embedding-cache-gb) is %.2f GB: "
                    "further slices are encoded every time they are needed",
                    self.root,
                    self.used / 1e9,
                    self.max_bytes / 1e9,
                )
                self._full_said = True
            return False
        path = self.path(self.key(image))
        atomic_write_bytes(path, data)
        self.used += len(data)
        return True
