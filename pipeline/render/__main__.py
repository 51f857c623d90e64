"""python -m pipeline.render {chart,table,svg} FILE -o OUT.png [--size WxH] [--timeout S] [--trace OUT.json]

Exit 0 and write the PNG, or exit 1 with a one-line JSON failure on stderr: {"failure": <RenderFailure>,
"detail": ...}. Exit 2 for usage errors, 3 when the renderer cannot start here (e.g. missing sandbox layers).
--trace (charts only) also writes the chart trace as JSON: {"trace": {texts, layout, types, colors} or null,
"detail": why it is null}.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.render import RENDER_KINDS


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 640x480, got {text!r}") from None
    return w, h


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.render", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=RENDER_KINDS)
    parser.add_argument("file", help="code to render ('-' for stdin)")
    parser.add_argument("-o", "--output", required=True, help="PNG to write")
    parser.add_argument("--size", type=_size, default=None, help="output WxH (default: the kind's size)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds (default: the kind's limit)")
    parser.add_argument("--trace", metavar="OUT.json", default=None,
                        help="charts: also write the ChartMimic-style trace (texts, layout, types, colours)")
    args = parser.parse_args(argv)
    if args.trace and args.kind != "chart":
        parser.error("--trace is only available for charts")

    from PIL import Image

    from pipeline.render import close_all, render

    try:
        if args.file == "-":
            code = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8", errors="replace") as f:
                code = f.read()
    except OSError as e:
        print(json.dumps({"failure": "invalid_input", "detail": str(e)}), file=sys.stderr)
        return 1
    try:
        result = render(args.kind, code, size=args.size, timeout_s=args.timeout, trace=bool(args.trace))
    except RuntimeError as e:  # the renderer cannot start here (missing sandbox layers, no Chromium)
        print(json.dumps({"failure": "renderer_unavailable", "detail": str(e)}), file=sys.stderr)
        return 3
    finally:
        close_all()
    if not result.ok:
        print(json.dumps(result.to_error_json()), file=sys.stderr)
        return 1
    Image.fromarray(result.image).save(args.output)
    if args.trace:
        with open(args.trace, "w", encoding="utf-8") as f:
            json.dump({"trace": result.trace, "detail": "" if result.trace is not None else result.detail}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
