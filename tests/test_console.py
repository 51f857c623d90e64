"""The console policy (pipeline/console.py) and `--print-config`'s resolved YAML (pipeline/config.py)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from pipeline import console
from pipeline.config import REPO_ROOT, config_to_dict, dump_resolved, load_config


def _python(code: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run `code` with stdout/stderr piped: no terminal, as under `ray job submit`. Bytes, decoded without
    newline translation (text mode would turn tqdm's \r redraws into newlines)."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, timeout=timeout,
                          cwd=REPO_ROOT, env=env or dict(os.environ), check=False)
    proc.stdout, proc.stderr = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    return proc


@pytest.mark.slow  # three processes import verl (torch, transformers): ~40 s on 2 idle cores
def test_unactionable_warnings_are_filtered_once_at_start_up():
    """verl's optional-engine warnings (at import) and its NUMA print (at trainer start), for real: shown
    without the policy, gone with it, in this process and in a child that only inherits the environment."""
    code = """
        import subprocess, sys
        {setup}
        import verl.workers.engine  # warns once per optional engine that is not installed
        from verl.utils.distributed import set_numa_affinity
        set_numa_affinity()  # print()s a warning where libnuma or pynvml is missing (this box)
        print("after", flush=True)
        child = subprocess.run([sys.executable, "-c", "import verl.workers.engine"], capture_output=True,
                               text=True, timeout=120)
        print("child:", child.stderr, file=sys.stderr)
    """
    plain = _python(code.format(setup=""))
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "engine is not available" in plain.stderr  # the control: the noise is real here
    assert plain.stderr.count("engine is not available") >= 2 * 2  # in this process and in the child
    quiet = _python(code.format(setup="from pipeline import console; console.setup()"))
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "after" in quiet.stdout
    assert "engine is not available" not in quiet.stdout + quiet.stderr
    assert "NUMA" not in quiet.stdout + quiet.stderr
    if _numa_print_expected():  # where verl cannot pin NUMA (no libnuma: this CPU box), it is there
        assert "Failed to set NUMA affinity" in plain.stdout


def _numa_print_expected() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libnuma.so")  # what verl's set_numa_affinity() loads first
    except OSError:
        return True
    return False


def test_without_a_terminal_progress_is_a_line_every_interval_not_every_tick():
    code = """
        import sys, time
        {setup}
        from tqdm import tqdm
        for _ in tqdm(range(60), desc="phase"):
            time.sleep(0.05)  # 3 s in all
        print("done", file=sys.stderr)
    """
    plain = _python(code.format(setup=""))
    ticks = plain.stderr.count("\r")
    assert ticks >= 20, plain.stderr  # tqdm's default: a redraw every 0.1 s, glued into one physical line
    quiet = _python(code.format(setup="from pipeline import console; console.setup(interval_s=1.0)"))
    assert quiet.returncode == 0, quiet.stderr
    lines = quiet.stderr.split("\n")[:-1]
    assert "\r" not in quiet.stderr  # each refresh is a line of its own
    bar_lines = [line for line in lines if line.startswith("phase:")]
    assert 2 <= len(bar_lines) <= 6, lines  # start, ~one per second, end
    assert "60/60" in bar_lines[-1] and lines[-1] == "done"


def test_filtered_stream_drops_forwarded_noise_and_keeps_the_rest():
    out = io.StringIO()
    stream = console.FilteredStream(out, lines=True)
    print("\x1b[36m(TrainerRank pid=5262)\x1b[0m Warning: Failed to set NUMA affinity: libnuma.so: cannot "
          "open", file=stream)
    print("(TrainerRank pid=5262) /x/verl/workers/engine/__init__.py:32: UserWarning: torchtitan engine is "
          "not available: ModuleNotFoundError(\"No module named 'torchtitan'\")", file=stream)
    print('(TrainerRank pid=5262)   warnings.warn(f"torchtitan engine is not available: {e!r}", '
          "stacklevel=1)", file=stream)
    print("17:20:29 INFO pipeline: step 0 [1/4] | reward 1.500", file=stream)
    stream.write("\rtrain:  50%|#####     | 1/2")  # a bar refresh, then its close
    stream.flush()
    stream.write("\rtrain: 100%|##########| 2/2")
    stream.flush()
    stream.write("\n")
    print("next line", file=stream)
    # a worker's bar as Ray forwards it: every redraw in one line; its last state is what matters
    print("\x1b[36m(RolloutWorker pid=7)\x1b[0m Loading weights:   0%|  | 0/64 [00:00<?]\r"
          "Loading weights: 100%|##| 64/64 [00:00<00:00]", file=stream)
    assert out.getvalue().splitlines() == ["17:20:29 INFO pipeline: step 0 [1/4] | reward 1.500",
                                           "train:  50%|#####     | 1/2", "train: 100%|##########| 2/2",
                                           "next line",
                                           "(RolloutWorker pid=7) Loading weights: 100%|##| 64/64 "
                                           "[00:00<00:00]"]


def test_at_a_terminal_bars_stay_live():
    out = io.StringIO()
    stream = console.FilteredStream(out, lines=False)
    stream.write("\rtrain:  50%")
    stream.flush()
    assert out.getvalue() == "\rtrain:  50%"  # shown at once, redrawn in place
    stream.write("\rtrain: 100%\n")
    print("Warning: Failed to set NUMA affinity: no libnuma", file=stream)
    assert out.getvalue() == "\rtrain:  50%\rtrain: 100%\n"


def test_setup_is_undone_by_restore_and_exports_the_worker_environment(monkeypatch):
    monkeypatch.setenv("PYTHONWARNINGS", "error::DeprecationWarning")
    before = (sys.stdout, sys.stderr)
    policy = console.setup("line", interval_s=3)
    try:
        assert isinstance(sys.stderr, console.FilteredStream) and not policy.tty
        assert os.environ["TQDM_MININTERVAL"] == "3"
        filters = os.environ["PYTHONWARNINGS"].split(",")
        assert filters[0] == "error::DeprecationWarning"  # the user's own filter is kept
        assert "ignore::UserWarning:verl.workers.engine" in filters
        assert console.worker_env()["PYTHONWARNINGS"] == os.environ["PYTHONWARNINGS"]
    finally:
        policy.restore()
    assert (sys.stdout, sys.stderr) == before
    assert os.environ["PYTHONWARNINGS"] == "error::DeprecationWarning"
    assert "TQDM_MININTERVAL" not in os.environ


def test_print_config_yaml_is_the_resolved_config_and_loads_back(tmp_path):
    cfg = load_config(None, ["run.total_steps=7", "rollout.sampling.temperature=0.7"])
    text = dump_resolved(cfg, source="configs/default.yaml")
    data = yaml.safe_load(text)
    assert data["run"]["total_steps"] == 7
    assert data["trainer"]["temperature"] == 0.7  # derived values are resolved too
    assert set(data) == set(config_to_dict(cfg))  # every section, defaults included
    path = tmp_path / "resolved.yaml"
    path.write_text(text)
    assert config_to_dict(load_config(path)) == config_to_dict(cfg)
