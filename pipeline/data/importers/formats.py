"""Readers of the public layouts, one function each: a source path → `SourceItem`s / `Unreadable`s.

- chartmimic (folder): `<stem>.png` + `<stem>.py` (ChartMimic's ori_500, direct mimic).
- chart2code (.json list or .jsonl): ChartCoder's Chart2Code-160k rows: `image` + LLaVA `conversations`
  (the gpt turn holds the code), or a `code` field.
- omnidocbench (OmniDocBench.json): every `layout_dets` entry of `category_type` "table": its `html`, the
  page image (`page_info.image_path`, under `images/`) cropped to its `poly`.
- pubtabnet (.jsonl): PubTabNet / FinTabNet rows: `filename` (under `<split>/`), `html.structure.tokens` +
  `html.cells[].tokens`.
- unisvg (.json list or .jsonl): `image` + an SVG in `svg` / `code` or in the answer turn of
  `conversations`; rows without an `<svg>` (its understanding tasks) are listed.
- svg-folder (folder): every `*.svg`, recursively (code only: rendered).
- folder (folder): an image and/or a code file per stem; task from the code's extension (.py chart, .svg
  svg, .html/.htm/.md table).
- jsonl (.jsonl): `image` (path, may be absent) + `code` + `task` per line.
- hf-disk (a `datasets` `save_to_disk` folder): columns `image` (Image feature or bytes/path) + `code` +
  `task`.

Relative image paths resolve against `images_dir` (default: the source file's folder). The generic formats
(jsonl, hf-disk) take other column names through `fields` (`{"image": ..., "code": ..., "task": ...}`).
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
from PIL import Image

from pipeline.data.importers.items import SourceItem, Unreadable
from pipeline.tasks import get_task

Yielded = Union[SourceItem, Unreadable]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CODE_SUFFIXES = {".py": "chart", ".svg": "svg", ".html": "table", ".htm": "table", ".md": "table"}


class SourceError(ValueError):
    """The source as a whole is not of the format (wrong file type, unparseable JSON document)."""


# --------------------------------------------------------------------------------------------- helpers
def load_image(data: Any, where: str) -> np.ndarray:
    """HxWx3 uint8 from a path, bytes, a {"bytes"/"path"} dict or a PIL image; ValueError if it cannot."""
    if isinstance(data, dict):
        data = data.get("bytes") or data.get("path")
    try:
        if isinstance(data, Image.Image):
            return np.asarray(data.convert("RGB"))
        if isinstance(data, (bytes, bytearray)):
            with Image.open(io.BytesIO(data)) as im:
                return np.asarray(im.convert("RGB"))
        if isinstance(data, (str, Path)):
            with Image.open(data) as im:
                return np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises several types for missing or corrupt files
        raise ValueError(f"{where}: image does not load ({type(e).__name__}: {e})") from None
    raise ValueError(f"{where}: no image ({type(data).__name__})")


def resolve_image(name: str, bases: list[Path]) -> Optional[Path]:
    """The first existing of base/name and base/basename(name) over the bases."""
    candidates = [Path(name)] if Path(name).is_absolute() else []
    for base in bases:
        candidates += [base / name, base / Path(name).name]
    return next((p for p in candidates if p.is_file()), None)


def json_records(path: Path) -> Iterator[tuple[int, Any, Optional[str]]]:
    """(line or position, record, error) of a .jsonl file or of a .json file holding a list of records."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line), None
                except json.JSONDecodeError as e:
                    yield lineno, None, f"invalid JSON: {e}"
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}: invalid JSON: {e}") from None
    if isinstance(data, dict):  # {"data": [...]}-style wrappers
        data = next((v for v in data.values() if isinstance(v, list)), None)
    if not isinstance(data, list):
        raise SourceError(f"{path}: expected a list of records (or a .jsonl file)")
    for i, record in enumerate(data):
        yield i, record, None


def answer_turn(record: dict) -> Optional[str]:
    """The assistant's text of a LLaVA-style `conversations` list (the last gpt/assistant turn)."""
    turns = record.get("conversations") or record.get("messages") or []
    answers = [t.get("value", t.get("content")) for t in turns if isinstance(t, dict)
               and t.get("from", t.get("role")) in ("gpt", "assistant")]
    return answers[-1] if answers and isinstance(answers[-1], str) else None


def _first(record: dict, names: tuple[str, ...]) -> Any:
    return next((record[n] for n in names if record.get(n) not in (None, "")), None)


def _require_file(src: Path, fmt: str, suffixes: tuple[str, ...]) -> None:
    if not src.is_file() or src.suffix.lower() not in suffixes:
        raise SourceError(f"{fmt}: expected a {' or '.join(suffixes)} file, got {src}")


def _require_dir(src: Path, fmt: str) -> None:
    if not src.is_dir():
        raise SourceError(f"{fmt}: expected a folder, got {src}")


def _image_item(id_: str, where: str, task: Optional[str], code: Optional[str], image_ref: Any,
                bases: list[Path], meta: Optional[dict] = None) -> Yielded:
    """An item whose image is given by a path (resolved against bases), bytes or a PIL image; None = none."""
    image = None
    if image_ref is not None:
        if isinstance(image_ref, str):
            path = resolve_image(image_ref, bases)
            if path is None:
                return Unreadable(id_, where, "image_missing", f"{image_ref} not found under "
                                  + ", ".join(str(b) for b in bases))
            image_ref = path
        try:
            image = load_image(image_ref, where)
        except ValueError as e:
            return Unreadable(id_, where, "image_unreadable", str(e))
    return SourceItem(id_, where, task, code, image, meta or {})


# --------------------------------------------------------------------------------------------- formats
def read_chartmimic(src: Path, **_) -> Iterator[Yielded]:
    _require_dir(src, "chartmimic")
    yield from _paired_folder(src, {".py": "chart"})


def read_folder(src: Path, task: Optional[str] = None, **_) -> Iterator[Yielded]:
    _require_dir(src, "folder")
    yield from _paired_folder(src, CODE_SUFFIXES, task)


def _paired_folder(src: Path, code_suffixes: dict[str, str], task: Optional[str] = None) -> Iterator[Yielded]:
    by_stem: dict[str, dict[str, Path]] = {}
    for path in sorted(src.iterdir()):
        suffix = path.suffix.lower()
        if path.is_file() and (suffix in IMAGE_SUFFIXES or suffix in code_suffixes):
            kind = "image" if suffix in IMAGE_SUFFIXES else "code"
            if kind in by_stem.setdefault(path.stem, {}):
                yield Unreadable(path.stem, str(path), "ambiguous_stem",
                                 f"two {kind} files: {by_stem[path.stem][kind].name}, {path.name}")
                continue
            by_stem[path.stem][kind] = path
    for stem, files in by_stem.items():
        code_path = files.get("code")
        where = str(code_path or files["image"])
        if code_path is None:
            yield Unreadable(stem, where, "no_code", "an image without a code file of the same stem "
                             f"({', '.join(code_suffixes)})")
            continue
        try:
            code = code_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            yield Unreadable(stem, where, "code_unreadable", str(e))
            continue
        item_task = task or code_suffixes[code_path.suffix.lower()]
        image = files.get("image")
        yield _image_item(stem, where, item_task, code, str(image) if image else None, [src],
                          {"code_file": code_path.name, "image_file": image.name if image else None})


def read_svg_folder(src: Path, **_) -> Iterator[Yielded]:
    _require_dir(src, "svg-folder")
    for path in sorted(src.rglob("*.svg")):
        rel = str(path.relative_to(src))
        try:
            yield SourceItem(rel, str(path), "svg", path.read_text(encoding="utf-8"), None, {"file": rel})
        except (OSError, UnicodeDecodeError) as e:
            yield Unreadable(rel, str(path), "code_unreadable", str(e))


def _conversation_rows(src: Path, fmt: str, task: str, code_fields: tuple[str, ...],
                       images_dir: Optional[Path], missing: str) -> Iterator[Yielded]:
    """Rows with an image path and code in a field or in the answer turn (Chart2Code, UniSVG)."""

    _require_file(src, fmt, (".json", ".jsonl"))
    bases = [images_dir] if images_dir else [src.parent, src.parent / "images"]
    spec = get_task(task)
    for pos, record, error in json_records(src):
        where = f"{src}:{pos}"
        if error or not isinstance(record, dict):
            yield Unreadable(str(pos), where, "bad_record",
                             error or f"a {type(record).__name__}, not an object")
            continue
        id_ = str(record.get("id", pos))
        raw = _first(record, code_fields) or answer_turn(record)
        code = spec.extract_code(raw).code if isinstance(raw, str) else None
        if code is None:
            yield Unreadable(id_, where, "no_code", missing)
            continue
        image_ref = _first(record, ("image", "image_path", "img", "png"))
        if isinstance(image_ref, list):
            image_ref = image_ref[0] if len(image_ref) == 1 else None
        meta = {k: record[k] for k in ("chart_type", "type", "task", "source") if k in record}
        yield _image_item(id_, where, task, code, image_ref, bases, meta)


def read_chart2code(src: Path, images_dir: Optional[Path] = None, **_) -> Iterator[Yielded]:
    yield from _conversation_rows(src, "chart2code", "chart", ("code", "python_code"), images_dir,
                                  "no Python code in `code` or in the answer turn")


def read_unisvg(src: Path, images_dir: Optional[Path] = None, **_) -> Iterator[Yielded]:
    yield from _conversation_rows(src, "unisvg", "svg", ("svg", "svg_code", "code"), images_dir,
                                  "no <svg> in `svg`/`code` or in the answer turn (not an image/text-to-SVG "
                                  "item)")


def read_omnidocbench(src: Path, images_dir: Optional[Path] = None, **_) -> Iterator[Yielded]:
    _require_file(src, "omnidocbench", (".json",))
    bases = [images_dir] if images_dir else [src.parent / "images", src.parent]
    pages: dict[Path, Image.Image] = {}
    for pos, page, error in json_records(src):
        if error or not isinstance(page, dict):
            yield Unreadable(str(pos), f"{src}[{pos}]", "bad_record", error or "page is not an object")
            continue
        info = page.get("page_info") or {}
        image_name = info.get("image_path") or ""
        for k, det in enumerate(page.get("layout_dets") or []):
            if not isinstance(det, dict) or det.get("category_type") != "table":
                continue
            id_ = f"{Path(image_name).stem or pos}#{det.get('anno_id', k)}"
            where = f"{src}[{pos}].layout_dets[{k}]"
            if det.get("ignore"):  # OmniDocBench marks regions its own evaluation skips
                yield Unreadable(id_, where, "ignored_in_benchmark", "the annotation has ignore: true")
                continue
            code = det.get("html")
            if not code:
                yield Unreadable(id_, where, "no_code", "table without an `html` annotation")
                continue
            path = resolve_image(image_name, bases) if image_name else None
            if path is None:
                yield Unreadable(id_, where, "image_missing", f"page image {image_name!r} not found")
                continue
            poly = det.get("poly") or []
            try:
                if path not in pages:
                    pages.clear()  # a page's tables are consecutive: hold one page at a time
                    with Image.open(path) as im:
                        pages[path] = im.convert("RGB")
                page_image = pages[path]
                xs, ys = [float(v) for v in poly[0::2]], [float(v) for v in poly[1::2]]
                box = (max(0, int(min(xs))), max(0, int(min(ys))),
                       min(page_image.width, round(max(xs))), min(page_image.height, round(max(ys))))
                if len(poly) < 4 or box[2] <= box[0] or box[3] <= box[1]:
                    raise ValueError(f"empty region {poly}")
                crop = np.asarray(page_image.crop(box))
            except Exception as e:  # unreadable page image or malformed poly
                yield Unreadable(id_, where, "image_unreadable", f"{type(e).__name__}: {e}")
                continue
            attrs = det.get("attribute") or {}
            yield SourceItem(id_, where, "table", code, crop, {"page": image_name, "bbox": box, **attrs})


def pubtabnet_html(annotation: dict) -> str:
    """PubTabNet / FinTabNet structure tokens + cell tokens → one `<table>` (the layout TEDS compares).

    Each cell fills the next `<td>` (or the `>` closing a `<td ...` with spans), in order; single-character
    tokens are text and get HTML-escaped, longer ones are markup (`<b>`, `<sup>`) and stay as they are."""
    structure = annotation["structure"]["tokens"]
    cells = annotation["cells"]
    slots = [i for i, tag in enumerate(structure) if tag in ("<td>", ">")]
    if len(slots) != len(cells):
        raise ValueError(f"{len(slots)} cells in the structure, {len(cells)} cell annotations")
    out = list(structure)
    for i, cell in zip(reversed(slots), reversed(cells)):
        tokens = cell.get("tokens") or []
        if tokens:
            out.insert(i + 1, "".join(html.escape(t) if len(t) == 1 else t for t in tokens))
    return "<table>" + "".join(out) + "</table>"


def read_pubtabnet(src: Path, images_dir: Optional[Path] = None, **_) -> Iterator[Yielded]:
    _require_file(src, "pubtabnet", (".jsonl",))
    for pos, record, error in json_records(src):
        where = f"{src}:{pos}"
        if error or not isinstance(record, dict):
            yield Unreadable(str(pos), where, "bad_record", error or "not an object")
            continue
        name = record.get("filename") or ""
        id_ = str(record.get("imgid", name or pos))
        try:
            code = pubtabnet_html(record["html"])
        except (KeyError, TypeError, ValueError) as e:
            yield Unreadable(id_, where, "bad_annotation", f"{type(e).__name__}: {e}")
            continue
        split = record.get("split") or ""
        bases = [images_dir] if images_dir else [src.parent / split, src.parent]
        yield _image_item(id_, where, "table", code, name or None, bases, {"filename": name, "split": split})


def _generic_row(record: dict, id_: str, where: str, task: Optional[str], fields: dict[str, str],
                 bases: list[Path]) -> Yielded:
    image_field, code_field, task_field = (fields.get(k, k) for k in ("image", "code", "task"))
    code = record.get(code_field)
    if not isinstance(code, str) or not code.strip():
        return Unreadable(id_, where, "no_code", f"no text in field {code_field!r}")
    return _image_item(id_, where, task or record.get(task_field), code, record.get(image_field), bases,
                       {k: v for k, v in record.items() if k not in (image_field, code_field)
                        and isinstance(v, (str, int, float, bool))})


def read_jsonl(src: Path, task: Optional[str] = None, images_dir: Optional[Path] = None,
               fields: Optional[dict] = None, **_) -> Iterator[Yielded]:
    _require_file(src, "jsonl", (".jsonl",))
    bases = [images_dir] if images_dir else [src.parent]
    for pos, record, error in json_records(src):
        where = f"{src}:{pos}"
        if error or not isinstance(record, dict):
            yield Unreadable(str(pos), where, "bad_record", error or "not an object")
            continue
        yield _generic_row(record, str(record.get("id", pos)), where, task, fields or {}, bases)


def read_hf_disk(src: Path, task: Optional[str] = None, images_dir: Optional[Path] = None,
                 fields: Optional[dict] = None, split: Optional[str] = None, **_) -> Iterator[Yielded]:
    try:
        import datasets  # heavy: datasets, only this path needs it
    except ImportError:
        raise SourceError("hf-disk needs the `datasets` package (pip install datasets)") from None
    _require_dir(src, "hf-disk")
    try:
        ds = datasets.load_from_disk(str(src))
    except (FileNotFoundError, ValueError) as e:
        raise SourceError(f"hf-disk: {src} is not a `save_to_disk` folder: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        names = [split] if split in ds else sorted(ds)
        parts = [(name, ds[name]) for name in names]
    else:
        parts = [("", ds)]
    bases = [images_dir] if images_dir else [src]
    for name, part in parts:
        for i, record in enumerate(part):
            where = f"{src}[{name + ':' if name else ''}{i}]"
            yield _generic_row(record, str(record.get("id", f"{name}{i}")), where, task, fields or {}, bases)


READERS: dict[str, Callable[..., Iterator[Yielded]]] = {
    "chartmimic": read_chartmimic,
    "chart2code": read_chart2code,
    "omnidocbench": read_omnidocbench,
    "pubtabnet": read_pubtabnet,
    "unisvg": read_unisvg,
    "svg-folder": read_svg_folder,
    "folder": read_folder,
    "jsonl": read_jsonl,
    "hf-disk": read_hf_disk,
}
FORMATS = tuple(READERS)


def read_source(fmt: str, src: Path, **options) -> Iterator[Yielded]:
    try:
        reader = READERS[fmt]
    except KeyError:
        raise ValueError(f"unknown import format {fmt!r}; expected one of {', '.join(FORMATS)}") from None
    return reader(Path(src), **options)
