"""Images on their way to the reward model: checked, converted, resized (ours: ≤ reward.max_image_side px;
the released layout: as the official reward code, `prepare_pair`)."""

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


# The released model's image handling (InternLM/Visual-ERM, rl_scripts/reward_func/):
RELEASED_TABLE_SIDE = 768  # table_parse_rm_v2.py: img.thumbnail((768, 768)), PNG, both images
RELEASED_TABLE_PADDING = 12  # table_parse_rm_v2.py: crop_with_padding(raw, final, padding=12), the rendering
RELEASED_CHART_SIDE = 1024  # reward_utils.py: MAX_IMG_SIDE = 1024, thumbnail, JPEG (PIL's default quality 75)


def thumbnail(image: np.ndarray | Image.Image, max_side: int) -> Image.Image:
    """PIL's `Image.thumbnail((max_side, max_side))`, as the official code resizes (aspect kept, never up)."""
    pil = image.copy() if isinstance(image, Image.Image) else Image.fromarray(image)
    pil.thumbnail((max_side, max_side))
    return pil


def crop_with_padding(image: Image.Image, padding: int = RELEASED_TABLE_PADDING) -> Image.Image:
    """The official table crop: the bounding box of the pixels that differ from the top-left pixel, widened by
    `padding` (clamped to the image); the whole image when every pixel is that colour."""
    from PIL import ImageChops

    img = image.convert("RGB")
    bbox = ImageChops.difference(img, Image.new("RGB", img.size, img.getpixel((0, 0)))).getbbox()
    if bbox:
        left, upper, right, lower = bbox
        img = img.crop((max(0, left - padding), max(0, upper - padding), min(img.width, right + padding),
                        min(img.height, lower + padding)))
    return img


def jpeg_roundtrip(image: Image.Image) -> Image.Image:
    """The pixels a server decodes from the official client's JPEG (quality 75): every backend then sees the
    same image whether it receives pixels (HF, vLLM) or a data URL (OpenAI-compatible)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG")
    buf.seek(0)
    with Image.open(buf) as im:
        return im.convert("RGB")


def prepare_pair(task: str, reference, rendered, layout: str, max_side: int) -> tuple[Image.Image, Image.Image]:
    """(reference, rendering) as the critic receives them under `layout`: ours = both ≤ `max_side` px;
    released = the official code's handling (tables PNG ≤ 768 px with the rendering cropped with padding,
    charts/SVG JPEG ≤ 1024 px). Raises BadImage for an unusable input."""
    ref = to_array(reference, "reference image")
    pred = to_array(rendered, "rendered image")
    if layout != "released":
        return resize_max_side(ref, max_side), resize_max_side(pred, max_side)
    if task == "table":
        return (thumbnail(ref, RELEASED_TABLE_SIDE),
                thumbnail(crop_with_padding(Image.fromarray(pred)), RELEASED_TABLE_SIDE))
    return (jpeg_roundtrip(thumbnail(ref, RELEASED_CHART_SIDE)), jpeg_roundtrip(thumbnail(pred, RELEASED_CHART_SIDE)))
