"""Tracker: metrics.jsonl, the sample table (local files + wandb offline), reward histograms, the progress
line, and the offline-log reader the checks go through."""

import io
import json
import logging
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.config import load_config
from pipeline.runlog import wandb_offline
from pipeline.runlog.tracking import TABLE_COLUMNS, TABLE_KEY, StepProgress, Tracker, select_table_samples
from pipeline.sample import Sample
from pipeline.schema import ConfigError


def _samples(step: int, rng: np.random.Generator, tasks=("chart", "table", "svg"), n=4) -> list[list[Sample]]:
    """n samples per task with distinct rewards; the last of each group failed to render."""
    groups = []
    for task in tasks:
        reference = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
        group = []
        for k in range(n):
            s = Sample(task=task, reference_image=reference, prompt_id=f"{task}-{step}", policy_version=step)
            s.code = f"# {task} answer {k}\n" + "x = 1\n" * 2000  # long: the table must cut it
            s.reward = float(rng.uniform(-1, 1))
            s.reward_breakdown = {"visual_erm": s.reward, "format": 1.0, "bad": float("nan")}
            if k == n - 1:
                s.render_error = "syntax_error"
                s.fail("render", "syntax_error")
            else:
                s.rendered_image = rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)
                s.discrepancies = [
                    {"category": "data", "severity": 2, "location": "bar 3", "description": "off"}
                ]
            group.append(s)
        groups.append(group)
    return groups


def _cfg(tmp_path, *overrides):
    return load_config(None, [f"run.output_dir={tmp_path}", "run.name=t", "run.total_steps=3", *overrides])


def test_select_table_samples_is_bounded_distinct_and_picks_extremes():
    groups = _samples(0, np.random.default_rng(0), n=6)
    rows = select_table_samples(groups, best=1, worst=2, randomly=2, seed=0)
    assert len(rows) == 3 * 5
    assert len({id(s) for _, s in rows}) == len(rows)
    for task in ("chart", "table", "svg"):
        mine = [s for g in groups for s in g if s.task == task]
        picked = {
            pick: [s for p, s in rows if p == pick and s.task == task] for pick in ("best", "worst", "random")
        }
        assert picked["best"][0].reward == max(s.reward for s in mine)
        assert picked["worst"][0].reward == min(s.reward for s in mine)
        assert len(picked["worst"]) == 2 and len(picked["random"]) == 2
    # Fewer samples than asked for: every sample once, none repeated.
    small = select_table_samples(_samples(0, np.random.default_rng(1), tasks=("svg",), n=2), 2, 2, 2, seed=0)
    assert len(small) == 2 and len({id(s) for _, s in small}) == 2
    three = select_table_samples(_samples(0, np.random.default_rng(1), tasks=("svg",), n=3), 1, 3, 1, seed=0)
    assert [pick for pick, _ in three] == ["best", "worst", "worst"]
    # Same seed, same random rows (a re-run logs the same table).
    again = select_table_samples(groups, best=1, worst=2, randomly=2, seed=0)
    assert [s.uid for _, s in again] == [s.uid for _, s in rows]


def test_offline_run_holds_the_image_table_histograms_config_and_commit(tmp_path):
    cfg = _cfg(
        tmp_path,
        "logging.wandb.table_every_steps=2",
        "logging.wandb.table_image_max_side=64",
        "logging.wandb.table_code_max_chars=200",
    )
    tracker = Tracker(cfg, cfg.run_dir, commit="0123456789abcdef")
    rng = np.random.default_rng(0)
    for step in range(3):
        groups = _samples(step, rng)
        tracker.log_step(
            {
                "samples/reward/mean": 0.1 * step,
                "samples/samples": 12,
                "perf/step_s": 1.5,
                "train/kl": 0.01,
                "train/bad": float("inf"),
            },
            groups,
            step,
        )
    tracker.log({"eval/reward": 0.5}, step=2)
    tracker.finish()

    # Local files: every logged scalar (non-finite ones left out); sample rows at steps 1 (every 2), 2 (last).
    records = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2, 2]
    assert "train/bad" not in records[0] and records[0]["train/kl"] == 0.01
    assert sorted(p.name for p in (cfg.run_dir / "samples").glob("*.jsonl")) == [
        "step_000001.jsonl",
        "step_000002.jsonl",
    ]
    rows = [
        json.loads(line) for line in (cfg.run_dir / "samples" / "step_000002.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 9 and {r["pick"] for r in rows} == {"best", "worst", "random"}
    assert all(len(r["code"]) < 300 and "chars cut" in r["code"] for r in rows)
    assert all(r["reward_breakdown"]["bad"] is None for r in rows)
    failed = [r for r in rows if r["failure"]]
    assert failed and all(
        r["failure"] == "render:syntax_error" and r["rendering_png"] is None for r in failed
    )
    png = Image.open(cfg.run_dir / "samples" / rows[0]["rendering_png"])
    assert max(png.size) == 64
    assert json.loads((cfg.run_dir / "run.json").read_text())["git_commit"] == "0123456789abcdef"

    # The offline wandb run, read back from its files.
    run = wandb_offline.load_run(cfg.run_dir, wait_for_exit_s=30)
    assert run.exit_code == 0
    assert run.config["git_commit"] == "0123456789abcdef" and run.git_commit
    assert run.config["run"]["total_steps"] == 3 and run.config["logging"]["wandb"]["table_every_steps"] == 2
    assert [row["_step"] for row in run.history] == [0, 1, 2]
    keys = run.keys()
    for key in (
        "samples/reward/mean",
        "train/kl",
        "eval/reward",
        "reward_hist/all",
        "reward_hist/chart",
        "reward_hist/table",
        "reward_hist/svg",
        TABLE_KEY,
    ):
        assert key in keys, key
    hist = run.history[1]["reward_hist/all"]
    assert hist["_type"] == "histogram" and sum(hist["values"]) == 12
    tables = run.tables(TABLE_KEY)
    assert [step for step, _ in tables] == [1, 2]
    table = tables[-1][1]
    assert table["columns"] == TABLE_COLUMNS
    assert len(table["data"]) == 9
    col = {name: i for i, name in enumerate(TABLE_COLUMNS)}
    for cells in table["data"]:
        reference = cells[col["reference"]]
        assert reference is not None and reference.is_file(), "reference image not in the offline run"
        assert max(Image.open(reference).size) == 64
        if cells[col["failure"]]:
            assert cells[col["rendering"]] is None and cells[col["failure"]] == "render:syntax_error"
        else:
            assert cells[col["rendering"]].is_file()
            assert cells[col["discrepancies"]] == "[2] data @ bar 3: off"
        assert cells[col["critic"]] == cfg.reward.critic_label()  # who listed them, on every row
        assert json.loads(cells[col["reward_breakdown"]])["format"] == 1.0
    # The images live with the run (staged for `wandb sync` under the run dir, not in the user's home).
    assert all(
        str(p).startswith(str(cfg.run_dir)) for cells in table["data"] for p in cells if hasattr(p, "is_file")
    )


def test_disabled_wandb_still_writes_local_rows_and_online_needs_credentials(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "logging.wandb.mode=disabled", "logging.wandb.table_every_steps=1")
    tracker = Tracker(cfg, cfg.run_dir)
    tracker.log_step({"samples/reward/mean": 0.0}, _samples(0, np.random.default_rng(0)), step=0)
    tracker.finish()
    assert (cfg.run_dir / "samples" / "step_000000.jsonl").is_file()
    assert not (cfg.run_dir / "wandb").exists()

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(ConfigError, match="credentials"):
        Tracker(_cfg(tmp_path, "logging.wandb.mode=online"), tmp_path / "online")


def test_step_line_is_short_at_info_and_the_full_record_is_at_debug(tmp_path, caplog):
    cfg = _cfg(
        tmp_path,
        "logging.wandb.mode=disabled",
        "logging.wandb.table_every_steps=0",
        "run.total_steps=4",
        "logging.progress=line",
    )
    tracker = Tracker(cfg, cfg.run_dir)
    metrics = {
        "samples/reward/mean": 0.25,
        "samples/reward/chart/mean": 0.5,
        "samples/reward/svg/mean": 0.0,
        "samples/samples": 12,
        "samples/render/success_rate": 0.75,
        "perf/step_s": 4.0,
        **{f"perf/stage{i}_busy_s": float(i) for i in range(30)},
    }
    with caplog.at_level(logging.DEBUG, logger="pipeline"):
        tracker.log_step(metrics, [], step=0)
        tracker.log_step(metrics, [], step=1)
    tracker.finish()
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(info) == 2
    first = info[0]
    assert first.startswith("step 0 [1/4]") and "reward 0.250 (chart 0.500 svg 0.000)" in first
    assert "render ok 75%" in first and "3.00 samples/s" in first and "4.0 s/step" in first
    assert "ETA 0:00:12" in first  # 3 steps left at 4 s each
    assert info[1].startswith("step 1 [2/4]") and "ETA" in info[1]
    assert len(first) < 200 and "perf/stage29_busy_s" not in first
    assert any("perf/stage29_busy_s=29" in m for m in debug)
    assert not (cfg.run_dir / "samples").exists()  # table_every_steps=0: no rows


def test_progress_bar_draws_on_request_and_closes(capsys):
    progress = StepProgress(total_steps=3, mode="bar")
    for step in range(3):
        line = progress.update(step, {"samples/reward/mean": 0.5, "samples/samples": 8, "perf/step_s": 2.0})
        assert line.startswith(f"step {step} [{step + 1}/3]")
    progress.close()
    err = capsys.readouterr().err
    assert "3/3" in err and "reward 0.500" in err
    assert "train" in err
    # Not a terminal (pytest captures stderr) and mode auto: no bar, only the line.
    auto = StepProgress(total_steps=3, mode="auto")
    auto.update(0, {"samples/reward/mean": 0.5})
    auto.close()
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------------ the offline log reader


def _write_log(path, records: list[bytes], block_size=wandb_offline.BLOCK_SIZE) -> None:
    """A minimal writer of the same format: records split across blocks as FIRST/MIDDLE/LAST, padded tails."""
    out = io.BytesIO()
    out.write(wandb_offline.HEADER.pack(b":W&B", 0xBEE1, 0))
    for data in records:
        first = True
        while True:
            left = block_size - out.tell() % block_size
            if left < 7:
                out.write(b"\0" * left)
                continue
            chunk, data = data[: left - 7], data[left - 7 :]
            kind = (1 if not data else 2) if first else (4 if not data else 3)
            out.write(
                struct.pack("<IHB", zlib.crc32(chunk, zlib.crc32(bytes([kind]))), len(chunk), kind) + chunk
            )
            first = False
            if not data:
                break
    path.write_bytes(out.getvalue())


def _history_record(step: int, **values) -> bytes:
    from wandb.proto import wandb_internal_pb2

    record = wandb_internal_pb2.Record()
    for key, value in values.items():
        item = record.history.item.add()
        item.nested_key.append(key)
        item.value_json = json.dumps(value)
    item = record.history.item.add()
    item.key = "_step"
    item.value_json = str(step)
    return record.SerializeToString()


def test_reader_reassembles_records_across_blocks_and_stops_at_a_torn_tail(tmp_path, caplog):
    big = "x" * 100_000  # spans four 32 KiB blocks
    records = [_history_record(0, a=1), _history_record(1, text=big), _history_record(2, a=3)]
    path = tmp_path / "run-test.wandb"
    _write_log(path, records)
    history = [wandb_offline._items_to_dict(r.history.item) for r in wandb_offline.read_records(path)]
    assert [h["_step"] for h in history] == [0, 1, 2] and history[1]["text"] == big

    # Killed mid-write: the records before the tear are kept, with a warning.
    path.write_bytes(path.read_bytes()[:-5])
    with caplog.at_level(logging.WARNING):
        steps = [
            wandb_offline._items_to_dict(r.history.item)["_step"] for r in wandb_offline.read_records(path)
        ]
    assert steps == [0, 1]
    assert "torn" in caplog.text

    # A flipped byte fails the checksum instead of yielding garbage.
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF
    path.write_bytes(bytes(data))
    assert list(wandb_offline.read_record_bytes(path)) == []

    (tmp_path / "other.wandb").write_bytes(b"not a wandb log at all")
    with pytest.raises(wandb_offline.OfflineLogError, match="not a wandb offline log"):
        list(wandb_offline.read_record_bytes(tmp_path / "other.wandb"))


def test_reader_cli_summarises_a_run(tmp_path, capsys):
    cfg = _cfg(tmp_path, "logging.wandb.table_every_steps=1", "run.total_steps=1")
    tracker = Tracker(cfg, cfg.run_dir, commit="feedbeef")
    tracker.log_step({"samples/reward/mean": 0.5}, _samples(0, np.random.default_rng(0), tasks=("svg",)), 0)
    tracker.finish()
    assert wandb_offline.main([str(cfg.run_dir), "--wait", "30"]) == 0
    out = capsys.readouterr().out
    assert "samples/reward/mean" in out and "reward_hist/svg" in out
    rows = [
        json.loads(line) for line in (cfg.run_dir / "samples" / "step_000000.jsonl").read_text().splitlines()
    ]
    images = sum(bool(r["reference_png"]) + bool(r["rendering_png"]) for r in rows)
    assert f"table {TABLE_KEY} @ step 0: 3 rows x {len(TABLE_COLUMNS)} columns" in out
    assert f"{images} images" in out and images >= 5
    assert wandb_offline.main([str(tmp_path / "missing")]) == 2
