"""Streaming vs synchronous training loop: wall time per step and each stage's busy time, same workload.

    .venv/bin/python benchmarks/pipeline.py [--workload both|local|remote-reward] [--steps 7] [--warmup 2]
                                            [--rounds 1] [key.path=value ...]

Runs `pipeline/main.py` back to back with `stream.max_staleness=1` (streaming) and `stream.max_staleness=0`
(synchronous: generate, render, score, then train), alternating round by round with the same seed and config,
and reads each run's `<run_dir>/metrics.jsonl`. Extra key.path=value arguments change the workload for both modes
(of every workload run).

Two workloads (the default runs both, local first, and prints a table for each):

  local          every stage on this machine: rollout, render, the tiny reward model (hf backend) and the trainer
                 all compete for its cores.
  remote-reward  the production shape for the reward stage: Visual-ERM is served on its own GPUs behind an
                 OpenAI-compatible endpoint (`reward.backend: openai`), so judging costs the training machine
                 waiting, not CPU. SIMULATED: the endpoint is a fake server inside this benchmark process
                 (127.0.0.1, outside the measured process tree) that answers every request with a valid,
                 deterministic judgement after a model time per pair calibrated from the local workload of
                 the same invocation, serving `--rm-capacity` pairs at once (default 1). Calibration
                 (--rm-calibration):
                   balanced (default)  the reward service is provisioned to keep pace with the trainer, as a
                                       deployment sizes its reward GPUs: model time per step = the trainer's
                                       update time in the local synchronous run (per pair: that over the
                                       pairs judged per step). A pipeline is only as fast as its slowest stage,
                                       so this is the shape in which streaming can pay off at all.
                   tiny-rm             the tiny RM's own CPU seconds per judged pair in the local synchronous
                                       run (an arbitrary speed: a random model a few MB in size); here the
                                       reward stage is ~1.4x the update, which caps the speed-up near 1.7x.
                 or a fixed --rm-ms-per-pair. Everything else is real: the reward replica actor, its HTTP client
                 (PNG data URLs, JSON schema, concurrency limit, retries), the reward formula, the scheduler.
                 Rollout, render and trainer still run locally on CPU. Besides the backend, this workload
                 keeps two scoring calls in flight (reward_threads 2, two quarter-core client replicas, as
                 the GPU presets keep several), see REMOTE_REWARD_WORKLOAD; the same settings in both modes.

Per step it reports (first `--warmup` steps skipped: actor warm-up and pipeline fill):
  step          wall time between consecutive step records (everything the driver does per update)
  rollout       time inside rollout `generate` calls          ┐ busy time per step, from the scheduler's
  render        time inside render calls (summed over threads) │ cumulative perf/<stage>_busy_s
  reward        time inside reward calls (summed over threads) ┘
  train+sync    trainer update (batch build + FSDP step) + weight sync to the rollout workers

and the ratios the issue asks for: streaming speed-up over synchronous, and streaming step / slowest stage.

The bound: the local stages are CPU work (one torch thread per actor), so on C cores no schedule can beat
    step >= max(slowest stage, local CPU work per step / C)
with each stage's cost taken from the synchronous run (stages there mostly run alone, so less contended) and
the CPU work measured over the whole process tree of that run (driver, Ray daemons, every actor; psutil,
sampled twice a second, also printed per process kind). A remote reward stage costs its simulated model time
per step / capacity (waiting; measured at the fake server) and no local CPU beyond its client (the
RewardReplica process, which stays in the CPU total). The synchronous loop needs at least (slowest of rollout,
render, reward, which it already overlaps in chunks) + train. The benchmark prints that bound, the speed-up it
allows and the step/slowest ratio it allows next to the measured ones, so a shortfall reads as the
scheduler's (measured far from the bound) or the hardware's (bound itself short of the target). Background
load from other processes is printed too: it inflates every number.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
MAIN = REPO / "pipeline" / "main.py"
sys.path.insert(0, str(REPO))  # pipeline.critic: the local chat endpoint and the judgement categories

from pipeline.critic.testing import ChatServer  # noqa: E402
from pipeline.runlog.layout import RunLayout

# The workload both modes run. Sized so the two halves of the loop are comparable on a 2-core CPU box: the
# trainer's update (1 rank, 1 torch thread) and the rollout worker's generate (1 torch thread) take similar
# time, render and reward are lighter (the tiny policy writes little code that renders); rollouts are sent in
# one-prompt chunks so rendering and scoring start while the rest of the step is still generating. Streaming
# can at best hide the shorter half of the loop behind the longer one, so its speed-up is capped by
# (rollout + train) / max(rollout, train) <= 2: only a balanced workload can show 1.8x.
WORKLOAD = [
    "data.prompts_per_step=4",
    "rollout.sampling.n=4",
    "rollout.sampling.max_new_tokens=64",
    "rollout.num_cpus=0.5",
    "trainer.ranks=1",
    "trainer.num_cpus_per_rank=0.5",
    "trainer.threads_per_rank=1",
    "trainer.save_every_steps=0",
    "render.actors=1",
    "reward.actors.replicas=1",
    "stream.chunk_size=1",
    "stream.render_threads=1",
    "stream.reward_threads=1",
    # One driver thread sends one chunk at a time: a batching window would only add latency to every call.
    "reward.batching.max_wait_ms=5",
    "data.synth_eval_per_task=0",  # no evaluation pass: it is not part of the loop being measured
    "logging.wandb.mode=disabled",
]

# The production shape: the reward model is served off this machine. Added to WORKLOAD; the endpoint list is
# filled in with the simulated server's address at run time. The reward replicas stay (they are the HTTP
# clients and run the reward formula); their model time becomes waiting on the endpoint.
REMOTE_REWARD_WORKLOAD = [
    "reward.backend=openai",
    "reward.openai.model=simulated-visual-erm",
    "reward.openai.timeout_s=60",
    # Several scoring calls in flight, as the GPU presets have (reward_threads 8, 2+ replicas): with one, the
    # model sits idle while the client of the next call ships the sample to a replica, checks it, encodes the
    # PNGs and reads the answer (~25 ms of local CPU per pair). Two single-threaded clients keep a request
    # queued at the model instead. A client needs little CPU, so each reserves a quarter core (the other
    # actors keep their half cores, all within the 2 Ray CPUs of this box).
    "stream.reward_threads=2",
    "reward.actors.replicas=2",
    "reward.actors.num_cpus=0.25",
    # The trainer is left as in the local workload (one PPO epoch). Balancing the reward stage against the
    # update from the trainer's side instead (`trainer.ppo_epochs=2` against the tiny-RM calibration) brings
    # the local CPU work to 2 cores' worth of the slowest stage, and streaming then measured 1.58x: on 2 cores
    # the remote stage, which costs waiting rather than CPU, is the one to size.
]
WORKLOADS = ("local", "remote-reward")

MODES = {"streaming": 1, "synchronous": 0}  # name -> stream.max_staleness
# Which processes (CpuSampler labels) do each stage's work. The driver builds the trainer's batches.
STAGE_PROCESSES = {
    "rollout": ("RolloutWorker",),
    "render": ("RenderWorker", "python", "chromium", "node", "node-MainThread", "headless_shell"),
    "reward": ("RewardReplica",),
    "train": ("TrainerRank", "driver"),
}
STAGES = ("rollout", "render", "reward")


class SimulatedRemoteRM:
    """A stand-in for Visual-ERM served on other machines behind an OpenAI-compatible endpoint (`vllm serve`).

    A threaded HTTP server on 127.0.0.1 in this benchmark's process (so outside the measured run's process
    tree, as a remote server would be). Every chat completion waits its turn for one of `capacity` model slots,
    holds it `s_per_pair` (the simulated model time of one judgement: sleeping, not computing), and answers a
    valid judgement for the task named in the request's JSON schema, derived from a hash of the request (so
    rewards differ between samples, deterministically). Slot intervals are recorded: the reward stage's remote
    busy time per step is measured, not assumed."""

    def __init__(self, s_per_pair: float, capacity: int = 1):
        self.s_per_pair = s_per_pair
        self.capacity = capacity
        self.slots = threading.Semaphore(capacity)
        self.lock = threading.Lock()
        self.intervals: list[tuple[float, float]] = []  # (start, end) epoch seconds of each judgement
        self.requests = 0
        self.server = ChatServer(self._answer)
        self.url = self.server.url

    def _answer(self, raw: bytes) -> tuple[int, str]:
        from pipeline.sample import CATEGORIES

        try:
            task = json.loads(raw)["response_format"]["json_schema"]["name"].split("_")[0]
            cats = CATEGORIES[task]
        except (ValueError, KeyError, TypeError) as e:
            return 400, f"not a judgement request: {e!r}"
        digest = hashlib.sha1(raw).digest()
        with self.slots:
            start = time.time()
            time.sleep(self.s_per_pair)
            end = time.time()
        errors = [{"category": cats[digest[1 + k] % len(cats)], "severity": 1 + digest[4 + k] % 3,
                   "location": f"region {k}", "description": f"simulated {digest[:4].hex()}"}
                  for k in range(digest[0] % 3)]
        counts = {c: sum(e["category"] == c for e in errors) for c in cats}
        with self.lock:
            self.requests += 1
            self.intervals.append((start, end))
        return 200, json.dumps({"errors": errors, "counts": counts}, separators=(",", ":"))

    def overrides(self) -> list[str]:
        # The client may keep more requests in flight than the model has slots (they queue at the server,
        # as at a vLLM server whose batch is full).
        return [f"reward.openai.endpoints=[{{base_url: '{self.url}', max_concurrency: {max(8, self.capacity)}}}]"]

    def busy_between(self, t0: float, t1: float) -> tuple[float, int]:
        """Model-slot seconds spent on judgements inside [t0, t1], and how many judgements ended there."""
        with self.lock:
            spans = list(self.intervals)
        busy = sum(max(0.0, min(b, t1) - max(a, t0)) for a, b in spans)
        return busy, sum(t0 < b <= t1 for _, b in spans)

    def close(self) -> None:
        self.server.stop()


def run_mode(name: str, staleness: int, args, output_dir: Path, round_index: int, workload: str = "local",
             remote_rm: SimulatedRemoteRM | None = None) -> dict:
    run_name = f"{workload}-{name}-{round_index}"
    extra = [*REMOTE_REWARD_WORKLOAD, *remote_rm.overrides()] if remote_rm is not None else []
    cmd = [sys.executable, str(MAIN), "ray.address=local", f"run.output_dir={output_dir}", f"run.name={run_name}",
           f"run.seed={args.seed}", f"run.total_steps={args.steps}", *WORKLOAD, *extra, *args.overrides,
           f"stream.max_staleness={staleness}"]
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    env = dict(os.environ, RAY_ADDRESS="")
    log_path = output_dir / f"{run_name}.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        sampler = CpuSampler(proc.pid)
        try:
            returncode = proc.wait(timeout=args.timeout)
        finally:
            if proc.poll() is None:  # timed out or interrupted: let the driver save and tear Ray down
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
            sampler.stop()
    if returncode != 0:
        sys.exit(f"{run_name} failed (exit {returncode}), log: {log_path}\n{log_path.read_text()[-4000:]}")
    records = [json.loads(line) for line in RunLayout(output_dir / run_name).metrics.read_text().splitlines()]
    steps = [r for r in records if "perf/step_s" in r]
    if len(steps) != args.steps:
        sys.exit(f"{run_name}: {len(steps)} step records, expected {args.steps}")
    out = summarise(steps, args.warmup)
    window = (steps[args.warmup - 1]["time"], steps[-1]["time"])
    out["cpu"] = {k: v / (len(steps) - args.warmup) for k, v in sampler.cpu_between(*window).items()}
    out["cpu_total"] = sum(out["cpu"].values())
    n = len(steps) - args.warmup
    # Pairs the reward model judged per step (its work: failed renderings are not sent to it).
    out["judged"] = sum(r.get("reward_batch/judged", 0) for r in steps[args.warmup:]) / n
    if remote_rm is not None:
        busy, judged = remote_rm.busy_between(*window)
        out["remote_rm_busy"], out["remote_rm_judged"] = busy / n, judged / n
    return out | {"load_before": load_before, "run_s": time.monotonic() - started}


class CpuSampler:
    """CPU seconds used by a run's whole process tree (driver, Ray daemons, every actor), sampled twice a
    second and labelled by process (`ray::RolloutWorker` -> RolloutWorker): what each part really costs,
    unlike busy time, which also counts waiting (batching windows, queueing on a shared core)."""

    def __init__(self, pid: int, interval_s: float = 0.5):
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.snapshots: list[tuple[float, dict[str, float]]] = []
        self._per_pid: dict[int, tuple[str, float]] = {}  # last seen label and CPU seconds, exited ones too
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @staticmethod
    def _label(p: psutil.Process) -> str:
        cmd = p.cmdline()
        head = cmd[0] if cmd else p.name()
        if head.startswith("ray::"):
            return head[5:].split(".")[0].split(" ")[0]
        if any(part.endswith("pipeline/main.py") for part in cmd[:3]):
            return "driver"
        return "ray-system" if any(x in " ".join(cmd[:3]) for x in ("ray", "gcs_server", "raylet")) else p.name()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for p in procs:
                try:
                    t = p.cpu_times()
                    self._per_pid[p.pid] = (self._label(p),
                                            t.user + t.system + t.children_user + t.children_system)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            totals: dict[str, float] = {}
            for label, cpu in self._per_pid.values():
                totals[label] = totals.get(label, 0.0) + cpu
            self.snapshots.append((time.time(), totals))
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def cpu_between(self, t0: float, t1: float) -> dict[str, float]:
        def at(t):
            return min(self.snapshots, key=lambda s: abs(s[0] - t))[1] if self.snapshots else {}
        a, b = at(t0), at(t1)
        return {k: b[k] - a.get(k, 0.0) for k in b if b[k] - a.get(k, 0.0) > 0.005}


def summarise(steps: list[dict], warmup: int) -> dict:
    """Means over steps warmup..last. Busy counters are cumulative, so the window is last minus the record
    just before it; the step wall time is the time between step records."""
    first, last = steps[warmup - 1], steps[-1]
    n = len(steps) - warmup
    out = {"step": (last["time"] - first["time"]) / n}
    for stage in STAGES:
        out[stage] = (last[f"perf/{stage}_busy_s"] - first[f"perf/{stage}_busy_s"]) / n
    window = steps[warmup:]
    out["train+sync"] = sum(r["train/update_wall_s"] + r["perf/weight_sync_s"] for r in window) / n
    out["wait_for_batch"] = sum(r["perf/wait_for_batch_s"] for r in window) / n
    out["staleness_max"] = max(r.get("samples/staleness/max", 0) for r in window)
    return out


def mean(runs: list[dict], key: str) -> float:
    return sum(r[key] for r in runs) / len(runs)


def run_workload(workload: str, args, output_dir: Path, remote_rm: SimulatedRemoteRM | None) -> dict:
    results: dict[str, list[dict]] = {m: [] for m in MODES}
    order = list(MODES)
    for r in range(args.rounds):
        for name in (order if r % 2 == 0 else order[::-1]):  # alternate who goes first: drift hits both
            res = run_mode(name, MODES[name], args, output_dir, r, workload, remote_rm)
            results[name].append(res)
            print(f"[{workload}] round {r} {name:<12} step {res['step']:.2f} s  (load avg before "
                  f"{res['load_before']:.2f}, run {res['run_s']:.0f} s)", flush=True)
    return results


def report(workload: str, results: dict[str, list[dict]], args, cores: int, rm: dict | None) -> dict:
    """Print one workload's tables and ratios; return its summary. `rm`: the simulated remote reward model's
    settings (s_per_pair, capacity, how it was calibrated) for the remote-reward workload, else None."""
    rounds = len(results["streaming"])
    cols = ("step", "rollout", "render", "reward", "train+sync", "wait_for_batch")
    if rm:  # the remote model's own busy time (model slots in use / capacity), measured at the fake server
        for runs in results.values():
            for r in runs:
                r["rm model"] = r["remote_rm_busy"] / rm["capacity"]
        cols = (*cols[:4], "rm model", *cols[4:])
    extra = [*REMOTE_REWARD_WORKLOAD, "reward.openai.endpoints=[<simulated RM>]"] if rm else []
    print(f"\n=== workload: {workload} ===")
    if rm:
        print(f"SIMULATED reward model: served off this machine (OpenAI-compatible fake endpoint in the benchmark "
              f"process); {rm['s_per_pair'] * 1000:.0f} ms model time per judged pair ({rm['calibration']}), "
              f"{rm['capacity']} pair(s) at once; waiting, not local CPU. Rollout, render, trainer: real, local.")
    print(f"overrides: {' '.join(WORKLOAD + extra + args.overrides)}")
    print(f"{args.steps} steps per run, first {args.warmup} skipped, {rounds} round(s), {cores} cores\n")
    print(f"{'seconds per step':<16}" + "".join(f"{c:>15}" for c in cols))
    summary: dict[str, dict] = {}
    for name in MODES:
        summary[name] = {c: mean(results[name], c) for c in cols}
        print(f"{name:<16}" + "".join(f"{summary[name][c]:>15.3f}" for c in cols))

    stream, sync = summary["streaming"], summary["synchronous"]
    labels = sorted({k for m in MODES for r in results[m] for k in r["cpu"]},
                    key=lambda k: -sum(r["cpu"].get(k, 0.0) for r in results["synchronous"]))
    print(f"\n{'CPU s per step':<16}" + "".join(f"{k[:14]:>15}" for k in labels) + f"{'total':>15}")
    for name in MODES:
        summary[name]["cpu"] = {k: sum(r["cpu"].get(k, 0.0) for r in results[name]) / len(results[name])
                                for k in labels}
        summary[name]["cpu_total"] = mean(results[name], "cpu_total")
        summary[name]["judged"] = mean(results[name], "judged")
        print(f"{name:<16}" + "".join(f"{summary[name]['cpu'][k]:>15.3f}" for k in labels)
              + f"{summary[name]['cpu_total']:>15.3f}")

    # Each stage's cost per step in the synchronous run: CPU seconds (psutil) for the local stages, what they
    # really cost, unlike busy time, which on a shared machine is mostly waiting for a core; for a remote
    # reward model, its model-slot time per step / capacity (waiting; the client's CPU is in the total).
    stage_cost = {name: sum(sync["cpu"].get(label, 0.0) for label in labels_of)
                  for name, labels_of in STAGE_PROCESSES.items()}
    if rm:
        for name in MODES:
            summary[name]["remote_rm_busy"] = mean(results[name], "remote_rm_busy")
            summary[name]["remote_rm_judged"] = mean(results[name], "remote_rm_judged")
        stage_cost["reward"] = max(stage_cost["reward"], sync["remote_rm_busy"] / rm["capacity"])
        print(f"\nsimulated RM per step: streaming {stream['remote_rm_judged']:.1f} judgements, "
              f"{stream['remote_rm_busy']:.2f} slot-s; synchronous {sync['remote_rm_judged']:.1f} judgements, "
              f"{sync['remote_rm_busy']:.2f} slot-s (capacity {rm['capacity']})")
    total = sync["cpu_total"]
    slowest_name = max(stage_cost, key=stage_cost.get)
    bound = max(stage_cost[slowest_name], total / cores)
    sync_floor = max(stage_cost["rollout"], stage_cost["render"], stage_cost["reward"]) + stage_cost["train"]
    speedup = sync["step"] / stream["step"]
    # The slowest stage in the streaming run. Remote: the model's busy time stands for the reward stage (the
    # client's call time adds the HTTP round trips and, with several reward threads, counts each thread).
    stage_busy = {k: stream[k] for k in ("rollout", "render", "rm model" if rm else "reward", "train+sync")}
    slowest_busy_name = max(stage_busy, key=stage_busy.get)
    slowest_busy = stage_busy[slowest_busy_name]
    load = [r["load_before"] for m in MODES for r in results[m]]
    print(f"\nstage cost per step (synchronous run; {'reward: remote model time, ' if rm else ''}others CPU s): "
          + ", ".join(f"{k} {v:.2f}" for k, v in stage_cost.items()) + f"; local CPU, all processes {total:.2f}")
    print(f"cores the run actually got (CPU s / wall s per step): streaming "
          f"{stream['cpu_total'] / stream['step']:.2f}, synchronous {sync['cpu_total'] / sync['step']:.2f} of {cores}"
          f" (load average before the runs: {min(load):.1f}-{max(load):.1f})")
    print(f"idle-machine bound: streaming step >= max(slowest stage {slowest_name} {stage_cost[slowest_name]:.2f}, "
          f"local CPU work / cores {total / cores:.2f}) = {bound:.2f} s; synchronous step >= {sync_floor:.2f} s")
    print(f"{'':<44}{'measured':>10}{'bound':>10}{'target':>10}")
    print(f"{'streaming speed-up over synchronous':<44}{speedup:>10.2f}{sync_floor / bound:>10.2f}{'>= 1.8':>10}")
    # The synchronous floor leaves out what the synchronous loop really pays on top (pipeline fill and drain
    # each step, the driver's per-step work): measured synchronous step / streaming bound is the most any
    # streaming schedule could have gained over the synchronous run actually measured.
    print(f"{'  (measured synchronous step / bound)':<44}{'':>10}{sync['step'] / bound:>10.2f}")
    print(f"{f'streaming step / slowest stage ({slowest_busy_name})':<44}{stream['step'] / slowest_busy:>10.2f}"
          f"{bound / stage_cost[slowest_name]:>10.2f}{'<= 1.15':>10}")
    print("(bounds hold on an idle machine; with other load the measured wall times stretch, and a run with more "
          "runnable threads takes a larger share of the contended cores)")
    return {"summary": summary, "runs": results, "bound_s": bound, "sync_floor_s": sync_floor,
            "speedup_allowed_by_measured_sync": sync["step"] / bound, "stage_busy_s": stage_busy,
            "stage_cost_s": stage_cost, "speedup": speedup, "step_over_slowest": stream["step"] / slowest_busy,
            "remote_rm": rm, "workload": WORKLOAD + extra + args.overrides}


def calibrate_rm(local: dict[str, list[dict]], how: str) -> tuple[float, str]:
    """(seconds of model time per judged pair, how it was found) from the local synchronous runs.

    tiny-rm: the tiny reward model's replica CPU seconds per step over the pairs it judged per step (one torch
    thread, so CPU time is what it would take on a core of its own). balanced: the trainer's update (+ weight
    sync) wall time per step over the pairs judged per step, so the remote reward stage takes as long as the
    update (a reward service provisioned to keep pace with the trainer)."""
    runs = local["synchronous"]
    judged = mean(runs, "judged")
    if how == "tiny-rm":
        per_step = sum(r["cpu"].get("RewardReplica", 0.0) for r in runs) / len(runs)
        text = "calibrated: tiny RM CPU s per judged pair, local synchronous run"
    else:
        per_step = mean(runs, "train+sync")
        text = (f"balanced: model time per step = the local synchronous update, {per_step:.2f} s over "
                f"{judged:.1f} judged pairs")
    if judged <= 0 or per_step <= 0:
        sys.exit("cannot calibrate the simulated reward model: the local runs judged no pairs; "
                 "pass --rm-ms-per-pair")
    return per_step / judged, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=("both", *WORKLOADS), default="both",
                        help="local: every stage on this machine; remote-reward: the reward model served off it "
                             "(simulated endpoint); both (default): local first, which calibrates the other")
    parser.add_argument("--steps", type=int, default=7, help="GRPO updates per run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the averages (>= 1)")
    parser.add_argument("--rounds", type=int, default=1, help="streaming/synchronous pairs, alternated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("--rm-ms-per-pair", type=float, default=None,
                        help="simulated reward model time per judged pair (default: calibrated from this "
                             "invocation's local synchronous runs; required with --workload remote-reward)")
    parser.add_argument("--rm-calibration", choices=("balanced", "tiny-rm"), default="balanced",
                        help="how the local runs set the simulated model time per pair (see above)")
    parser.add_argument("--rm-capacity", type=int, default=1,
                        help="pairs the simulated reward model judges at once (1: one replica, like local)")
    parser.add_argument("--output-dir", default=None, help="run directories (default: a fresh temp dir)")
    parser.add_argument("--json", default=None, help="also write the summary here")
    parser.add_argument("--from-json", default=None, help="print the summary of an earlier --json, run nothing")
    parser.add_argument("overrides", nargs="*", help="workload overrides for both modes, key.path=value")
    args = parser.parse_args()
    if not 1 <= args.warmup < args.steps:
        parser.error("need 1 <= --warmup < --steps")
    if args.workload == "remote-reward" and args.rm_ms_per_pair is None and not args.from_json:
        parser.error("--workload remote-reward alone needs --rm-ms-per-pair (or run both: local calibrates it)")
    if args.rm_capacity < 1:
        parser.error("--rm-capacity must be >= 1")
    cores = os.cpu_count() or 1

    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        args.steps, args.warmup = saved["args"]["steps"], saved["args"]["warmup"]
        args.overrides = saved["args"]["overrides"]
        for workload, entry in saved["workloads"].items():
            report(workload, entry["runs"], args, cores, entry["remote_rm"])
        return

    output_dir = Path(args.output_dir or tempfile.mkdtemp(prefix="bench-pipeline-"))
    output_dir.mkdir(parents=True, exist_ok=True)
    workloads = WORKLOADS if args.workload == "both" else (args.workload,)
    out: dict[str, dict] = {}
    for workload in workloads:
        if workload == "local":
            results = run_workload(workload, args, output_dir, None)
            out[workload] = report(workload, results, args, cores, None)
            continue
        if args.rm_ms_per_pair is not None:
            rm = {"s_per_pair": args.rm_ms_per_pair / 1000, "calibration": "--rm-ms-per-pair"}
        else:
            s_per_pair, calibration = calibrate_rm(out["local"]["runs"], args.rm_calibration)
            rm = {"s_per_pair": s_per_pair, "calibration": calibration}
        rm["capacity"] = args.rm_capacity
        server = SimulatedRemoteRM(rm["s_per_pair"], args.rm_capacity)
        try:
            results = run_workload(workload, args, output_dir, server)
        finally:
            server.close()
        out[workload] = report(workload, results, args, cores, rm)
    if len(out) == 2:
        print("\n=== summary ===")
        print(f"{'workload':<16}{'streaming s':>13}{'sync s':>13}{'speed-up':>10}{'bound':>8}"
              f"{'step/slowest':>14}{'bound':>8}")
        for workload, o in out.items():
            sm = o["summary"]
            print(f"{workload:<16}{sm['streaming']['step']:>13.2f}{sm['synchronous']['step']:>13.2f}"
                  f"{o['speedup']:>10.2f}{o['sync_floor_s'] / o['bound_s']:>8.2f}{o['step_over_slowest']:>14.2f}"
                  f"{o['bound_s'] / max(o['stage_cost_s'].values()):>8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"workloads": out, "args": vars(args), "cores": cores}, indent=2))


if __name__ == "__main__":
    main()
