"""Baseline rewards the paper compares against: pixel similarity (SSIM, MSE), TEDS for tables, edit distance of
the code to the ground-truth code, and embedding similarity under a local vision encoder (DINOv2-style).

Image metrics and TEDS come from `pipeline.evaluate` (one implementation for rewards and evaluation).
"""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.rewards.base import Term, Unavailable

log = logging.getLogger(__name__)


class SSIMReward(Term):
    """SSIM of the grayscale rendering against the reference (1 = identical)."""

    name = "ssim"

    def measure(self, sample, judgement):
        from pipeline.metrics.image import ssim  # heavy: pulls in scikit-image

        return {"value": ssim(sample.rendered_image, sample.reference_image)}


class PixelMSEReward(Term):
    """1 − mean squared error on [0, 1] intensities (1 = identical, 0 = black vs white everywhere)."""

    name = "pixel_mse"

    def measure(self, sample, judgement):
        from pipeline.metrics.image import pixel_mse  # heavy: pulls in scikit-image

        mse = pixel_mse(sample.rendered_image, sample.reference_image)
        return {"value": 1.0 - mse, "mse": mse}


class TEDSReward(Term):
    """TEDS of the predicted table code against the ground-truth table code (tables only)."""

    name = "teds"
    supported_tasks = ("table",)

    def measure(self, sample, judgement):
        from pipeline.metrics.table import table_to_html, teds  # heavy: pulls in the TEDS package

        if not sample.ground_truth_code:
            return Unavailable("no_ground_truth")
        value = teds(table_to_html(sample.code or ""), table_to_html(sample.ground_truth_code))
        return {"value": value}


def normalized_edit_similarity(a: str, b: str) -> float:
    """1 − Levenshtein(a, b) / max(len a, len b); 1.0 for two empty strings."""
    import Levenshtein

    if not a and not b:
        return 1.0
    return 1.0 - Levenshtein.distance(a, b) / max(len(a), len(b))


class CodeEditDistanceReward(Term):
    """Text similarity of the code to the ground-truth code (needs `ground_truth_code`)."""

    name = "code_edit_distance"

    def measure(self, sample, judgement):
        if not sample.ground_truth_code:
            return Unavailable("no_ground_truth")
        return {"value": normalized_edit_similarity(sample.code or "", sample.ground_truth_code)}


class VisionEncoder:
    """A local HF vision encoder (DINOv2-style: `AutoModel`, CLS token first) with its own preprocessing,
    read from the checkpoint's preprocessor_config.json when present (resize shortest edge, center crop,
    rescale, normalise) — done with PIL/numpy, so no torchvision is needed."""

    def __init__(self, path: str, device: str = "cpu", pooling: str = "cls"):
        import torch  # heavy: torch, only this path needs it
        from transformers import AutoModel  # heavy: transformers, only this path needs it

        self.torch = torch
        root = Path(os.path.expanduser(path))
        if not (root / "config.json").is_file():
            raise FileNotFoundError(f"embedding encoder {root} is not a HF checkpoint directory (no config.json)")
        self.model = AutoModel.from_pretrained(root).to(device).eval()
        self.device = device
        self.pooling = pooling
        pre = {}
        if (root / "preprocessor_config.json").is_file():
            pre = json.loads((root / "preprocessor_config.json").read_text())
        size = getattr(self.model.config, "image_size", 224)
        crop = pre.get("crop_size", {"height": size, "width": size})
        self.crop = (int(crop.get("height", size)), int(crop.get("width", size))) if isinstance(crop, dict) \
            else (int(crop), int(crop))
        short = pre.get("size", {}).get("shortest_edge", max(self.crop)) if isinstance(pre.get("size"), dict) \
            else max(self.crop)
        self.short = int(short)
        self.mean = np.asarray(pre.get("image_mean", [0.485, 0.456, 0.406]), np.float32)
        self.std = np.asarray(pre.get("image_std", [0.229, 0.224, 0.225]), np.float32)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(image)
        w, h = pil.size
        scale = self.short / min(w, h)
        pil = pil.resize((max(self.crop[1], round(w * scale)), max(self.crop[0], round(h * scale))), Image.BICUBIC)
        w, h = pil.size
        left, top = (w - self.crop[1]) // 2, (h - self.crop[0]) // 2
        pil = pil.crop((left, top, left + self.crop[1], top + self.crop[0]))
        arr = (np.asarray(pil, np.float32) / 255.0 - self.mean) / self.std
        return arr.transpose(2, 0, 1)

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        torch = self.torch
        batch = torch.from_numpy(np.stack([self.preprocess(im) for im in images])).to(self.device)
        with torch.no_grad():
            hidden = self.model(pixel_values=batch).last_hidden_state
        feats = hidden[:, 0] if self.pooling == "cls" else hidden.mean(dim=1)
        feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy()


@lru_cache(maxsize=4)
def load_encoder(path: str, device: str, pooling: str) -> VisionEncoder:
    return VisionEncoder(path, device, pooling)


class EmbeddingReward(Term):
    """Cosine similarity of the rendering's and the reference's embeddings under a vision encoder."""

    name = "embedding"

    def measure_batch(self, samples, judgements):
        e = self.cfg.embedding
        try:
            encoder = load_encoder(e.path, e.device, e.pooling)
            refs = encoder.embed([s.reference_image for s in samples])
            preds = encoder.embed([s.rendered_image for s in samples])
        except Exception as err:
            log.exception("embedding reward failed on %d samples", len(samples))
            return [Unavailable(f"error:{type(err).__name__}: {err}"[:200])] * len(samples)
        return [{"value": float(np.dot(r, p))} for r, p in zip(refs, preds)]
