"""SVG kind: cairosvg at a fixed output width × height (canvas bombs then cost nothing extra).

cairosvg parses with defusedxml (no entities, no external DTDs) and, without `unsafe`, fetches nothing but
data: URLs; the child's Landlock and network namespace back that up.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from PIL import Image

from pipeline.render.result import RenderFailure
from pipeline.render.snippet import SnippetFailed, classify, last_line

_WARMUP_SVG = b"""<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">
<defs><linearGradient id="g"><stop offset="0" stop-color="red"/><stop offset="1" stop-color="blue"/>
</linearGradient></defs><rect x="4" y="4" width="56" height="40" rx="6" fill="url(#g)" stroke="#333"/>
<circle cx="32" cy="32" r="10" fill="none" stroke="green" stroke-width="3"/><path d="M4 60 Q32 40 60 60"/>
<text x="8" y="58" font-family="DejaVu Sans" font-size="10">Warm 123</text></svg>"""


def warm(options: dict[str, Any]) -> None:
    import defusedxml  # noqa: F401 - imported here so children find it loaded

    _draw(_WARMUP_SVG, 64, 64)


def run(code: str, size: tuple[int, int], options: dict[str, Any], timings: dict[str, float] | None = None,
        want_trace: bool = False) -> tuple[np.ndarray, None]:
    """(HxWx3 RGB of exactly `size`, None): SVGs have no trace; `timings` gets draw_s."""
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException

    t0 = time.perf_counter()
    width, height = size
    try:
        premultiplied_bgra = _draw(code.encode("utf-8"), width, height)
    except DefusedXmlException as e:  # entities (billion laughs), external DTD / entity references (XXE)
        raise SnippetFailed(RenderFailure.SANDBOX_VIOLATION, last_line(e)) from None
    except ParseError as e:
        raise SnippetFailed(RenderFailure.SYNTAX_ERROR, last_line(e)) from None
    except BaseException as e:  # noqa: BLE001
        raise classify(e) from None
    # Cairo's ARGB32 is premultiplied BGRA in memory: "over white" is colour + (255 - alpha), per channel.
    alpha = premultiplied_bgra[..., 3:4].astype(np.uint16)
    rgb = (premultiplied_bgra[..., 2::-1].astype(np.uint16) + (255 - alpha)).clip(0, 255).astype(np.uint8)
    if rgb.shape[:2] != (height, width):  # cairosvg honours the output size; guard anyway
        rgb = np.asarray(Image.fromarray(rgb).resize((width, height)))
    if timings is not None:
        timings["draw_s"] = time.perf_counter() - t0
    return rgb, None


def _draw(svg: bytes, width: int, height: int) -> np.ndarray:
    """Draw into an in-memory cairo image (no PNG encode/decode) at exactly width × height."""
    # cairosvg: only the SVG zygote loads it, at prewarm
    from cairosvg.parser import Tree
    from cairosvg.surface import PNGSurface

    surface = PNGSurface(Tree(bytestring=svg, unsafe=False), None, 96, output_width=width, output_height=height)
    image = surface.cairo
    image.flush()
    stride_px = image.get_stride() // 4
    pixels = np.ndarray((image.get_height(), stride_px, 4), np.uint8, buffer=image.get_data())
    return pixels[:, : image.get_width()].copy()
