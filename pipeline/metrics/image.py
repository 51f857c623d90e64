"""Pixel-level similarity of a rendering to its reference: SSIM (grayscale) and MSE, for every task kind."""

from __future__ import annotations

import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity


def _as_rgb(image: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        raise ValueError(f"{name} must be an HxWx3 uint8 array, got {type(image).__name__} {shape}")
    if min(image.shape[:2]) < 7:  # SSIM's default 7x7 window
        raise ValueError(f"{name} is too small for SSIM: {image.shape[:2]}")
    return image


def match_size(predicted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The prediction resized to the reference's size (a wrong canvas size is judged on content, and
    also costs through the resampling blur)."""
    if predicted.shape[:2] == reference.shape[:2]:
        return predicted
    h, w = reference.shape[:2]
    return np.asarray(Image.fromarray(predicted).resize((w, h), Image.BILINEAR))


def pixel_mse(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Mean squared error on [0, 1] intensities (0 = identical, 1 = black vs white everywhere)."""
    ref = _as_rgb(reference, "reference").astype(np.float32) / 255.0
    pred = match_size(_as_rgb(predicted, "prediction"), reference).astype(np.float32) / 255.0
    return float(np.mean((pred - ref) ** 2))


def ssim(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Structural similarity of the grayscale images (1 = identical)."""
    ref = np.asarray(Image.fromarray(_as_rgb(reference, "reference")).convert("L"))
    pred = np.asarray(Image.fromarray(match_size(_as_rgb(predicted, "prediction"), reference)).convert("L"))
    return float(structural_similarity(pred, ref, data_range=255))


def image_metrics(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    return {"ssim": ssim(predicted, reference), "mse": pixel_mse(predicted, reference)}
