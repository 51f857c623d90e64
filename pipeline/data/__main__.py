"""python -m pipeline.data {synth,edits,grid,import} ...

  synth  --task chart --n 1000 --out DIR [--seed S]   reference programs rendered to a verl parquet dataset
  edits  --task svg --n 500 --out DIR [--seed S]      targeted-edit pairs with ground-truth discrepancies
  grid   --data DIR --out grid.png [--n 16]           contact sheet of a dataset for a person to look at
  taxonomy                                            the edit taxonomy: task, category, edit, severity rule
  import --format FORMAT SRC --out DIR                a public benchmark's layout (chartmimic, chart2code,
                                                      omnidocbench, pubtabnet, unisvg, svg-folder, folder,
                                                      jsonl, hf-disk) → verl parquet; every reference rendered
                                                      in our sandbox, failures in DIR/failures.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.data.config import DataConfig
from pipeline.sample import TASK_KINDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("synth", "edits"):
        p = sub.add_parser(name)
        p.add_argument("--task", required=True, choices=TASK_KINDS)
        p.add_argument("--n", type=int, required=True)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--split", default=None)
        p.add_argument("--table-format", choices=["mixed", "html", "markdown"], default="mixed")
        p.add_argument("--no-progress", action="store_true")
    g = sub.add_parser("grid")
    g.add_argument("--data", type=Path, required=True)
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--n", type=int, default=16)
    g.add_argument("--columns", type=int, default=4)
    sub.add_parser("taxonomy")
    from pipeline.data.importers.formats import FORMATS

    imp = sub.add_parser("import", help="convert a public benchmark's layout to verl parquet")
    imp.add_argument("--format", required=True, choices=FORMATS)
    imp.add_argument("src", type=Path, help="the folder or file of the layout")
    imp.add_argument("--out", type=Path, required=True)
    imp.add_argument("--split", default="train", help="split name written into the rows and file names")
    imp.add_argument("--task", choices=TASK_KINDS, default=None,
                     help="task of every item where the layout does not say (jsonl, hf-disk, folder)")
    imp.add_argument("--images", type=Path, default=None, help="folder relative image paths resolve against "
                     "(default: the source's own folder)")
    imp.add_argument("--field", action="append", default=[], metavar="ROLE=NAME",
                     help="jsonl / hf-disk column names, e.g. --field code=svg --field image=png")
    imp.add_argument("--source-split", default=None, help="hf-disk: the split of a saved DatasetDict")
    imp.add_argument("--max-side", type=int, default=1024,
                     help="shrink larger reference images to fit (0: keep)")
    imp.add_argument("--drop-unrendered", action="store_true",
                     help="exclude items whose reference code does not render in our sandbox even when the "
                     "source has their image (default: keep, flagged)")
    imp.add_argument("--limit", type=int, default=None, help="read at most this many items")
    imp.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "import":
        return _import(parser, args)

    if args.command == "taxonomy":
        from pipeline.data.edits import EDITS

        print("| task | category | edit | severity rule |\n|---|---|---|---|")
        for task, edits in EDITS.items():
            for e in sorted(edits, key=lambda e: e.category):
                print(f"| {task} | {e.category} | {e.name} | {e.severity_rule} |")
        return 0
    if args.command == "grid":
        from pipeline.data.grid import sample_grid

        print(sample_grid(args.data, args.out, n=args.n, columns=args.columns))
        return 0
    if args.n < 1:
        parser.error("--n must be at least 1")
    config = DataConfig(seed=args.seed, table_format=args.table_format)
    progress = not args.no_progress
    if args.command == "synth":
        from pipeline.data.synth import synthesize

        summary = synthesize(args.task, args.n, args.out, config, split=args.split or "train", progress=progress)
        print(json.dumps(summary.to_dict(), indent=2))
        return 0 if summary.rendered else 1
    from pipeline.data.pairs import make_edit_pairs

    summary = make_edit_pairs(args.task, args.n, args.out, config, split=args.split or "test", progress=progress)
    print(json.dumps(summary.to_dict(), indent=2))
    return 0 if summary.emitted else 1


def _import(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from pipeline.data.importers import FAILURES_FILE, REPORT_FILE, import_dataset
    from pipeline.data.importers.formats import SourceError

    fields = {}
    for item in args.field:
        role, sep, name = item.partition("=")
        if not sep or role not in ("image", "code", "task") or not name:
            parser.error(f"--field {item!r}: expected image=NAME, code=NAME or task=NAME")
        fields[role] = name
    try:
        summary = import_dataset(args.format, args.src, args.out, split=args.split, task=args.task,
                                 images_dir=args.images, fields=fields, max_side=args.max_side or None,
                                 drop_unrendered=args.drop_unrendered, limit=args.limit,
                                 source_split=args.source_split, progress=not args.no_progress)
    except (SourceError, FileNotFoundError, ValueError) as e:
        print(f"import error: {e}", file=sys.stderr)
        return 2
    print(summary.line())
    print(f"report: {args.out / REPORT_FILE}; excluded and flagged items: {args.out / FAILURES_FILE}")
    return 0 if summary.written else 1


if __name__ == "__main__":
    sys.exit(main())
