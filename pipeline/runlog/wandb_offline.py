"""Read an offline wandb run without wandb's servers: config, git commit, history, summary and tables.

`python -m pipeline.wandb_offline RUN_DIR` prints what a run recorded (RUN_DIR: a pipeline run directory, its
wandb/ folder, one offline-run-* folder, or a run-*.wandb file).

wandb 0.31 ships no reader for its offline log, so this is a small one. The log `run-<id>.wandb` is a
LevelDB-log style record stream:
    header   7 bytes: b":W&B", magic 0xBEE1 (uint16 LE), version 0 (uint8)
    blocks   of 32 KiB; each holds chunks `crc32 (uint32 LE) | length (uint16 LE) | type (uint8) | data`,
             type FULL=1, or FIRST=2, MIDDLE=3, LAST=4 for a record split across blocks; a block tail
             shorter than a chunk header is zero padding; crc32 (zlib) covers the type byte then the data
    records  each reassembled record is a protobuf `wandb_internal_pb2.Record` (history, run, config, ...)
A run killed mid-write ends in a torn chunk: reading stops there with a warning (what came before is kept).

Where things are: config and git commit in the `run` record (and later `config` records); scalars in `history`
records (one per step; a key logged as a dict, e.g. a table, comes as several items whose `nested_key` paths
are re-nested here); a logged wandb.Table with images is stored as a run artifact (an `artifact` record whose
manifest maps `media/images/*.png` and the table JSON to local staged files; the history item carries
`artifact_path` = wandb-client-artifact://<artifact client_id>/<file>). The table JSON copy under the run's
files/media/table/ has the rows, but images there are only the word "Image"; `tables()` resolves them.
"""

from __future__ import annotations

import argparse
import json
import logging
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

log = logging.getLogger(__name__)

HEADER = struct.Struct("<4sHB")  # ident, magic, version
HEADER_IDENT, HEADER_MAGIC, HEADER_VERSION = b":W&B", 0xBEE1, 0
CHUNK = struct.Struct("<IHB")  # crc32, length, type
BLOCK_SIZE = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class OfflineLogError(ValueError):
    """The file is not a wandb offline log (bad header)."""


def read_record_bytes(path: Path) -> Iterator[bytes]:
    """The raw protobuf bytes of each record in a run-*.wandb file, in order."""
    data = Path(path).read_bytes()
    if len(data) < HEADER.size:
        raise OfflineLogError(f"{path}: {len(data)} bytes, shorter than the wandb log header")
    ident, magic, version = HEADER.unpack_from(data, 0)
    if (ident, magic, version) != (HEADER_IDENT, HEADER_MAGIC, HEADER_VERSION):
        raise OfflineLogError(f"{path}: not a wandb offline log (header {data[: HEADER.size]!r})")
    pos, pending = HEADER.size, None
    while pos < len(data):
        left_in_block = BLOCK_SIZE - pos % BLOCK_SIZE
        if left_in_block < CHUNK.size:  # zero padding at a block's end
            pos += left_in_block
            continue
        if pos + CHUNK.size > len(data):
            log.warning("%s: torn chunk header at byte %d (run killed mid-write?): stopping there", path, pos)
            return
        crc, length, kind = CHUNK.unpack_from(data, pos)
        if crc == 0 and length == 0 and kind == 0:  # the rest of the block was never written
            pos += left_in_block
            continue
        body = data[pos + CHUNK.size : pos + CHUNK.size + length]
        if len(body) < length or zlib.crc32(body, zlib.crc32(bytes([kind]))) != crc:
            log.warning("%s: bad or torn chunk at byte %d (run killed mid-write?): stopping there", path, pos)
            return
        pos += CHUNK.size + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pending = bytearray(body)
        elif kind in (MIDDLE, LAST) and pending is not None:
            pending += body
            if kind == LAST:
                yield bytes(pending)
                pending = None
        else:
            log.warning("%s: unexpected chunk type %d at byte %d: skipped", path, kind, pos)


def read_records(path: Path):
    """Each record of a run-*.wandb file as a `wandb_internal_pb2.Record`."""
    from wandb.proto import wandb_internal_pb2  # heavy: wandb, only this path needs it

    for raw in read_record_bytes(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        yield record


def _items_to_dict(items) -> dict[str, Any]:
    """History/summary items → a dict; an item with a nested_key path lands in nested dicts."""
    out: dict[str, Any] = {}
    for item in items:
        path = list(item.nested_key) or [item.key]
        try:
            value = json.loads(item.value_json)
        except json.JSONDecodeError:
            value = item.value_json
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


@dataclass
class Artifact:
    name: str
    type: str
    client_id: str
    files: dict[str, Optional[str]]  # path in the artifact → local file it was staged from


@dataclass
class OfflineRun:
    """What one offline run recorded. `history`: one dict per history record, with `_step`."""

    path: Path
    run_id: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    git_commit: Optional[str] = None
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    exit_code: Optional[int] = None

    @property
    def files_dir(self) -> Path:
        return self.path.parent / "files"

    def keys(self) -> set[str]:
        return {k for row in self.history for k in row}

    def tables(self, key: str) -> list[tuple[int, dict[str, Any]]]:
        """Every logged table under `key` as (step, {"columns": [...], "data": [[...]]}); image cells become
        the local path (a Path) of the PNG, or None when the file cannot be found."""
        out = []
        for row in self.history:
            ref = row.get(key)
            if not isinstance(ref, dict) or ref.get("_type") not in ("table-file", "incremental-table-file"):
                continue
            table, files = self._artifact_table(ref)
            if table is None:  # no artifact: the run-level copy (media cells are not resolvable there)
                table, files = json.loads((self.files_dir / ref["path"]).read_text()), {}
            for cells in table["data"]:
                for i, cell in enumerate(cells):
                    if isinstance(cell, dict) and cell.get("_type") == "image-file":
                        local = files.get(cell.get("path"))
                        cells[i] = Path(local) if local and Path(local).is_file() else None
            out.append((row.get("_step"), table))
        return out

    def _artifact_table(self, ref: dict[str, Any]):
        target = ref.get("artifact_path", "")
        prefix = "wandb-client-artifact://"
        if not target.startswith(prefix):
            return None, {}
        client_id, _, name = target[len(prefix) :].partition("/")
        for artifact in self.artifacts:
            if artifact.client_id == client_id and artifact.files.get(name):
                return json.loads(Path(artifact.files[name]).read_text()), artifact.files
        return None, {}


def find_log(path: Path) -> Path:
    """The run-*.wandb file for a run dir, its wandb/ folder, an offline-run-* folder, or the file itself;
    the newest when there are several (a resumed run)."""
    path = Path(path)
    if path.is_file():
        return path
    candidates = [
        p
        for pattern in ("run-*.wandb", "offline-run-*/run-*.wandb", "wandb/offline-run-*/run-*.wandb")
        for p in path.glob(pattern)
    ]
    if not candidates:
        raise FileNotFoundError(f"no offline wandb log (run-*.wandb) under {path}")
    return max(candidates, key=lambda p: (p.parent.name, p.stat().st_mtime))


def load_run(path: Path, wait_for_exit_s: float = 0.0) -> OfflineRun:
    """Read a run. wandb's service may still be writing the log's tail (up to the `exit` record) just after
    `run.finish()` returns: `wait_for_exit_s` re-reads until that record is there or the time is up."""
    deadline = time.monotonic() + wait_for_exit_s
    while True:
        run = _load_once(find_log(path))
        if run.exit_code is not None or time.monotonic() >= deadline:
            return run
        time.sleep(0.2)


def _load_once(log_path: Path) -> OfflineRun:
    run = OfflineRun(path=log_path)
    for record in read_records(log_path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id
            run.git_commit = record.run.git.commit or run.git_commit
            run.config.update(_items_to_dict(record.run.config.update))
        elif kind == "config":
            run.config.update(_items_to_dict(record.config.update))
            for item in record.config.remove:
                run.config.pop(item.nested_key[0] if item.nested_key else item.key, None)
        elif kind == "history":
            run.history.append(_items_to_dict(record.history.item))
        elif kind == "summary":
            run.summary.update(_items_to_dict(record.summary.update))
        elif kind == "artifact":
            a = record.artifact
            run.artifacts.append(
                Artifact(
                    a.name, a.type, a.client_id, {e.path: e.local_path or None for e in a.manifest.contents}
                )
            )
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    # wandb finds the commit itself only when started inside the checkout; the driver puts it in the config.
    run.git_commit = run.git_commit or run.config.get("git_commit")
    return run


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.wandb_offline", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "path", type=Path, help="run dir, its wandb/ folder, an offline-run-* folder or run-*.wandb"
    )
    parser.add_argument("--table", default="samples/table", help="table key to list (default: %(default)s)")
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="for a run that is just finishing: re-read up to S seconds until its exit record",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        run = load_run(args.path, wait_for_exit_s=args.wait)
    except (FileNotFoundError, OfflineLogError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    steps = [row.get("_step") for row in run.history]
    print(f"run {run.run_id}: {run.path}")
    print(f"git commit: {run.git_commit}   exit code: {run.exit_code}")
    print(f"config sections: {', '.join(sorted(k for k in run.config if not k.startswith('_')))}")
    print(f"history: {len(steps)} rows, steps {min(steps, default=None)}..{max(steps, default=None)}")
    for key in sorted(run.keys()):
        print(f"  {key}")
    for step, table in run.tables(args.table):
        images = sum(1 for cells in table["data"] for c in cells if isinstance(c, Path))
        print(
            f"table {args.table} @ step {step}: {len(table['data'])} rows x {len(table['columns'])} columns "
            f"({', '.join(table['columns'])}), {images} images"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
