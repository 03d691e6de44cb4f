"""SAM checkpoints: finding, identifying, inspecting and loading them.

:func:`load_sam` is the one way a SAM checkpoint enters the package: the standard ``vit_b`` /
``vit_l`` / ``vit_h`` files (SAM, MedSAM; flat or nested under ``"model"`` / ``"state_dict"``,
with or without a ``"module."`` prefix) and checkpoints that carry their own architecture as
``{"architecture": {...}, "model": state_dict}`` (see :func:`build_sam`). The generator that
uses the loaded model is :class:`~samdsk_plan.proposals.sam.SamGenerator`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from samdsk_plan.errors import SamdskError

CHECKPOINT_ENV = "SAMDSK_SAM_CHECKPOINT"
# Image-encoder width (out-channels of the patch embedding) and depth of each standard SAM type.
MODEL_TYPES: dict[str, tuple[int, int]] = {"vit_b": (768, 12), "vit_l": (1024, 24), "vit_h": (1280, 32)}
_PATCH_KEY = "image_encoder.patch_embed.proj.weight"
_ARCH_REQUIRED = ("embed_dim", "depth", "num_heads", "global_attn_indexes")
# Optional architecture entries, defaulting to SAM's own values. ``model_type`` only names it.
_ARCH_DEFAULTS: dict[str, Any] = {
    "model_type": None,
    "img_size": 1024,
    "patch_size": 16,
    "window_size": 14,
    "mlp_ratio": 4.0,
    "prompt_embed_dim": 256,
    "mask_in_chans": 16,
    "decoder_depth": 2,
    "decoder_mlp_dim": 2048,
    "decoder_num_heads": 8,
    "iou_head_hidden_dim": 256,
}


def resolve_checkpoint(path_or_none: str | os.PathLike | None) -> Path:
    """The SAM checkpoint to use: the given path, else ``$SAMDSK_SAM_CHECKPOINT``."""
    chosen = path_or_none if path_or_none is not None else os.environ.get(CHECKPOINT_ENV) or None
    if chosen is None:
        raise SamdskError(
            f"no SAM checkpoint given: pass a checkpoint path or set the {CHECKPOINT_ENV} environment variable"
        )
    return Path(chosen).expanduser()


def checkpoint_digest(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the checkpoint file: its identity in :meth:`SamGenerator.settings`."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise SamdskError(f"cannot read SAM checkpoint {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def build_sam(architecture: Mapping[str, Any]) -> Sam:
    """A randomly initialised SAM from ViT hyper-parameters.

    Required: ``embed_dim``, ``depth``, ``num_heads``, ``global_attn_indexes`` (image encoder).
    Optional (SAM's values by default): ``img_size`` (px, the resized long side), ``patch_size``,
    ``window_size``, ``mlp_ratio``, ``prompt_embed_dim`` (encoder output = prompt/decoder width),
    ``mask_in_chans``, ``decoder_depth``, ``decoder_mlp_dim``, ``decoder_num_heads``,
    ``iou_head_hidden_dim``; ``model_type`` is a name only.

    Raises:
        ValueError: missing or unknown entries.
    """
    missing = [k for k in _ARCH_REQUIRED if k not in architecture]
    unknown = sorted(set(architecture) - set(_ARCH_REQUIRED) - set(_ARCH_DEFAULTS))
    if missing or unknown:
        raise ValueError(f"architecture lacks {missing} / has unknown entries {unknown}")
    a = {**_ARCH_DEFAULTS, **architecture}
    grid = a["img_size"] // a["patch_size"]
    dim = a["prompt_embed_dim"]
    model = Sam(
        image_encoder=ImageEncoderViT(
            img_size=a["img_size"],
            patch_size=a["patch_size"],
            embed_dim=a["embed_dim"],
            depth=a["depth"],
            num_heads=a["num_heads"],
            mlp_ratio=a["mlp_ratio"],
            out_chans=dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=a["window_size"],
            global_attn_indexes=tuple(a["global_attn_indexes"]),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(grid, grid),
            input_image_size=(a["img_size"], a["img_size"]),
            mask_in_chans=a["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=dim,
            transformer=TwoWayTransformer(
                depth=a["decoder_depth"],
                embedding_dim=dim,
                num_heads=a["decoder_num_heads"],
                mlp_dim=a["decoder_mlp_dim"],
            ),
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=a["iou_head_hidden_dim"],
        ),
    )
    return model.eval()


def load_identified(
    checkpoint: str | os.PathLike | None, model_type: str = "vit_b", device: str | torch.device = "cpu"
) -> tuple[Sam, str]:
    """The SAM of ``checkpoint`` (or ``$SAMDSK_SAM_CHECKPOINT``, :func:`resolve_checkpoint`),
    loaded with :func:`load_sam`, and the file's digest that identifies it in generator settings."""
    path = resolve_checkpoint(checkpoint)
    return load_sam(path, model_type, device), checkpoint_digest(path)


def load_sam(checkpoint: str | os.PathLike, model_type: str = "vit_b", device: str | torch.device = "cpu") -> Sam:
    """Load a SAM checkpoint onto ``device`` in eval mode.

    Args:
        checkpoint: a state dict file (see module docstring for the accepted layouts).
        model_type: ``"vit_b"``, ``"vit_l"``, ``"vit_h"``, or ``"auto"``: the type inferred from the
            tensor shapes, or the architecture stored in the file. A file with a stored
            architecture takes ``"auto"`` or its stored ``model_type``.

    Raises:
        SamdskError: naming the file and the problem (missing, unreadable, not a SAM state dict,
            unknown model type, weights that do not fit the model type).
    """
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise SamdskError(f"SAM checkpoint {path} " + ("is not a file" if path.exists() else "does not exist"))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and torch errors alike
        raise SamdskError(
            f"SAM checkpoint {path} cannot be read as a PyTorch checkpoint of tensors (corrupt, truncated, "
            f"another format, or pickled objects that weights-only loading refuses): {_load_failure(exc)}"
        ) from exc
    state, architecture = _unwrap(loaded, path)
    if architecture is None:
        model_type = _standard_type(path, state, model_type)
        model = sam_model_registry[model_type](checkpoint=None)
    else:
        model = _build_stored(path, architecture, model_type)
    problems = _mismatches(model.state_dict(), state)
    if problems:
        raise _mismatch_error(path, model_type if architecture is None else None, state, problems)
    model.load_state_dict(state)
    return model.to(device).eval()


def _load_failure(exc: Exception) -> str:
    """The gist of a ``torch.load`` error, without its advice to load unsafely."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {line.split('. Please', 1)[0]}"


def _unwrap(loaded: Any, path: Path) -> tuple[dict[str, torch.Tensor], Mapping[str, Any] | None]:
    """The state dict (``"module."`` prefixes dropped) and the stored architecture, if any."""
    architecture = loaded.get("architecture") if isinstance(loaded, Mapping) else None
    if architecture is not None and not isinstance(architecture, Mapping):
        raise SamdskError(f"SAM checkpoint {path} has an 'architecture' entry that is not a mapping")
    state = loaded
    while isinstance(state, Mapping) and (inner := _nested_state(state)) is not None:
        state = inner
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = f"keys {sorted(map(str, state))[:5]}" if isinstance(state, Mapping) else type(state).__name__
        raise SamdskError(f"SAM checkpoint {path} holds no state dict of tensors (found {found})")
    return {str(k).removeprefix("module."): v for k, v in state.items()}, architecture


def _nested_state(mapping: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The mapping under ``"model"`` or ``"state_dict"``, if there is one."""
    return next((mapping[k] for k in ("model", "state_dict") if isinstance(mapping.get(k), Mapping)), None)


def _encoder_width(state: Mapping[str, torch.Tensor]) -> int | None:
    weight = state.get(_PATCH_KEY)
    return int(weight.shape[0]) if weight is not None and weight.ndim == 4 else None


def _type_of_width(width: int | None) -> str | None:
    return next((name for name, (w, _) in MODEL_TYPES.items() if w == width), None)


def _standard_type(path: Path, state: Mapping[str, torch.Tensor], model_type: str) -> str:
    """The standard type to build; checks the encoder width before building a large model."""
    width = _encoder_width(state)
    found = _type_of_width(width)
    shape_note = f"no 4D {_PATCH_KEY}" if width is None else f"{_PATCH_KEY} has {width} output channels"
    if model_type == "auto":
        if found is None:
            raise SamdskError(
                f"cannot infer the model type of SAM checkpoint {path}: {shape_note}, which fits no standard SAM type; "
                "pass model_type"
            )
        return found
    if model_type not in MODEL_TYPES:
        raise SamdskError(
            f"unknown SAM model type {model_type!r} for checkpoint {path}: use one of {sorted(MODEL_TYPES)} or 'auto'"
        )
    if found != model_type:
        raise _mismatch_error(
            path, model_type, state, [f"{shape_note}, {model_type} needs {MODEL_TYPES[model_type][0]}"]
        )
    return model_type


def _build_stored(path: Path, architecture: Mapping[str, Any], model_type: str) -> Sam:
    stored = architecture.get("model_type")
    if model_type not in ("auto", stored):
        raise SamdskError(
            f"SAM checkpoint {path} carries its own architecture (model type {stored!r}), "
            f"not {model_type!r}: load it with model_type='auto'"
        )
    try:
        return build_sam(architecture)
    except (ValueError, TypeError, AssertionError, RuntimeError) as exc:
        raise SamdskError(f"SAM checkpoint {path} has an invalid architecture: {exc}") from exc


def _mismatches(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> list[str]:
    """Missing, unexpected and wrongly shaped entries, a few examples of each."""
    groups = {
        "missing": sorted(expected.keys() - state.keys()),
        "unexpected": sorted(state.keys() - expected.keys()),
        "wrongly shaped": [
            f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
            for k, v in expected.items()
            if k in state and state[k].shape != v.shape
        ],
    }
    return [f"{len(keys)} {label} tensors, e.g. {', '.join(keys[:3])}" for label, keys in groups.items() if keys]


def _mismatch_error(
    path: Path, requested: str | None, state: Mapping[str, torch.Tensor], problems: list[str]
) -> SamdskError:
    """``requested``: the standard type asked for; None for an architecture stored in the file."""
    expected = "the architecture stored in it" if requested is None else f"the requested model type {requested!r}"
    width = _encoder_width(state)
    looks = _type_of_width(width)
    hint = ""
    if requested is not None and looks is not None and looks != requested:
        hint = f"; it looks like a {looks} checkpoint (image-encoder width {width}): load it with model_type={looks!r}"
    elif requested is not None and looks is None and width is not None:
        hint = f"; its image-encoder width {width} matches no standard SAM type"
    return SamdskError(f"SAM checkpoint {path} does not match {expected}{hint} ({'; '.join(problems)})")


def model_type_of(model: Sam) -> str:
    """``"vit_b"`` / ``"vit_l"`` / ``"vit_h"``, or ``"custom(...)"`` naming the encoder's size."""
    encoder = model.image_encoder
    width, depth = encoder.patch_embed.proj.out_channels, len(encoder.blocks)
    found = _type_of_width(width)
    if found is not None and MODEL_TYPES[found][1] == depth and encoder.img_size == 1024:
        return found
    return f"custom(embed_dim={width}, depth={depth}, img_size={encoder.img_size})"
