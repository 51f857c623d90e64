"""Images on their way to the reward model: checked, converted, resized like the paper (≤1024 px)."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image


class BadImage(ValueError):
    """An input image the reward cannot use (wrong type/shape, corrupt bytes); the message says why."""


def to_array(image: Any, name: str = "image") -> np.ndarray:
    """HxWx3 uint8 from an array (HxW, HxWx3, HxWx4), a PIL image, PNG/JPEG bytes or a path."""
    try:
        if isinstance(image, np.ndarray):
            arr = image
        elif isinstance(image, Image.Image):
            arr = np.asarray(image.convert("RGB"))
        elif isinstance(image, (bytes, bytearray)):
            with Image.open(io.BytesIO(image)) as im:
                arr = np.asarray(im.convert("RGB"))
        elif isinstance(image, str):
            with Image.open(image) as im:
                arr = np.asarray(im.convert("RGB"))
        else:
            raise BadImage(f"{name}: unsupported type {type(image).__name__}")
    except BadImage:
        raise
    except Exception as e:  # PIL raises many types for corrupt data
        raise BadImage(f"{name}: cannot decode ({type(e).__name__}: {e})") from None
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise BadImage(f"{name}: expected HxWx3, got shape {arr.shape}")
    if arr.shape[2] == 4:
        arr = np.asarray(Image.fromarray(arr.astype(np.uint8), "RGBA").convert("RGB"))
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all() and arr.max() <= 1.0 and arr.min() >= 0:
            arr = (arr * 255).round()
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def resize_max_side(image: np.ndarray, max_side: int) -> Image.Image:
    """PIL RGB image whose longer side is at most `max_side` (aspect kept; never upscaled)."""
    pil = Image.fromarray(image)
    w, h = pil.size
    scale = max_side / max(w, h)
    if scale < 1.0:
        pil = pil.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    return pil


def png_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
