"""GPU smoke test of the production components, without Ray or vLLM: what must work on a bare CUDA machine with
torch, to which only verl, DeepSpeed, transformers and this project are added.

Tiny models are built offline (no downloads). Each step is timed; one table is printed at the end (and written
as JSON with --out):
  1. HF rollout on the device: n answers per prompt, sampled, with per-token log-probs;
  2. HF critic on the device: constrained (xgrammar) judgements of rendered pairs;
  3. verl's FSDP2 engine on the device (1 rank; NCCL on CUDA, gloo on CPU), bf16 on CUDA: GRPO updates on
     the rollouts of step 1 (a reference policy and the KL loss included);
  4. one DeepSpeed critic-SFT run (ZeRO-2, bf16 on CUDA, the optimizer the GPU preset uses) on a small critic
     set from the data engine.

    python benchmarks/gpu_smoke.py                 # cuda when available, else cpu
    python benchmarks/gpu_smoke.py --device cpu    # the same steps on CPU (tests/test_gpu_smoke.py runs this)
Exit 0 when every step ran; 1 (with the step's error in the table) otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np
import torch

from pipeline.sample import Sample

GROUPS, GROUP_SIZE, NEW_TOKENS = 2, 4, 24


def build_models(out: Path) -> tuple[Path, Path]:
    """A tiny policy and a tiny critic (random Qwen3-VL, tokenizer trained on the project's programs)."""
    from pipeline.models.config import TinyModelConfig
    from pipeline.tiny.corpus import code_corpus
    from pipeline.tiny.model import build_tiny_qwen3_vl

    corpus = list(code_corpus(n=150))
    policy, critic = out / "policy", out / "critic"
    build_tiny_qwen3_vl(TinyModelConfig(), policy, corpus=lambda: corpus)
    build_tiny_qwen3_vl(TinyModelConfig(seed=1), critic, corpus=lambda: corpus)
    return policy, critic


def prompts() -> list[Sample]:
    from pipeline.data.loader import policy_messages

    rng = np.random.default_rng(0)
    return [Sample(task="chart", reference_image=rng.integers(0, 255, (96, 128, 3), dtype=np.uint8),
                   prompt_id=f"smoke/{g}", messages=policy_messages("chart")) for g in range(GROUPS)]


def step_rollout(policy: Path, device: str) -> tuple[dict, list[Sample]]:
    from pipeline.models.config import ModelConfig, ModelsConfig
    from pipeline.rollout.config import SamplingConfig
    from pipeline.rollout.hf import HFRollout

    rollout = HFRollout(ModelsConfig(policy=ModelConfig(path=str(policy))),
                        SamplingConfig(n=GROUP_SIZE, max_new_tokens=NEW_TOKENS, temperature=1.0), device=device)
    t0 = time.perf_counter()
    samples = rollout.generate(prompts())
    seconds = time.perf_counter() - t0
    tokens = sum(len(s.response_ids) for s in samples)
    rng = random.Random(0)
    for s in samples:  # rewards that differ within each group, so every advantage is non-zero
        s.reward = rng.random()
    return {"seconds": seconds, "detail": f"{len(samples)} answers, {tokens} tokens, {tokens / seconds:.0f} tok/s"}, samples


def step_critic(critic: Path, device: str) -> dict:
    from pipeline.critic.backends import JudgeRequest
    from pipeline.critic.backends.hf import HFBackend
    from pipeline.critic.testing import tiny_reward_config
    from pipeline.models.config import ModelConfig

    backend = HFBackend(tiny_reward_config(hf={"device": device}), ModelConfig(path=str(critic)))
    rng = np.random.default_rng(1)
    pairs = [JudgeRequest(task, rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
                          rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for task in ("chart", "table", "svg") * 2]
    t0 = time.perf_counter()
    judgements = backend.score(pairs)
    seconds = time.perf_counter() - t0
    valid = sum(j.valid for j in judgements)
    backend.close()
    if valid != len(pairs):
        raise RuntimeError(f"{len(pairs) - valid} of {len(pairs)} constrained judgements invalid")
    return {"seconds": seconds, "detail": f"{len(pairs)} judgements, all valid, {len(pairs) / seconds:.1f}/s"}


def step_verl(policy: Path, samples: list[Sample], device: str, updates: int) -> dict:
    from transformers import AutoConfig

    from pipeline.distributed import free_port
    from pipeline.models import load_processor
    from pipeline.training.batch import GRPORollout, build_grpo_batch
    from pipeline.training.config import TrainerConfig
    from pipeline.training.rank import RankTrainer
    from pipeline.training.verl_platform import shutdown_process_group

    cuda = device.startswith("cuda")
    cfg = TrainerConfig(lr=1e-4, micro_batch_size_per_device=2, num_gpus_per_rank=1 if cuda else 0,
                        param_dtype="bfloat16" if cuda else "float32", use_remove_padding=cuda,
                        kl_loss_coef=0.01, entropy_coeff=0.001)
    batch = build_grpo_batch([GRPORollout.from_sample(s) for s in samples], load_processor(policy),
                             AutoConfig.from_pretrained(policy))
    rank = RankTrainer(0, 1, policy, cfg, group_size=GROUP_SIZE)
    setup = rank.setup("127.0.0.1", free_port())
    try:
        t0 = time.perf_counter()
        metrics = [rank.update(batch, len(batch)) for _ in range(updates)]
        seconds = time.perf_counter() - t0
    finally:
        shutdown_process_group()
    losses = [m["loss"] for m in metrics]
    if not all(np.isfinite(losses)) or not metrics[-1]["grad_norm"] > 0:
        raise RuntimeError(f"non-finite loss or no gradient: {metrics[-1]}")
    return {"seconds": seconds, "detail": f"{updates} GRPO updates on {len(batch)} samples ({cfg.param_dtype}), "
                                          f"{seconds / updates:.2f} s/update, engine build {setup['engine_build_s']:.1f} s, "
                                          f"loss {losses[0]:.4f} → {losses[-1]:.4f}"}


def step_sft(critic: Path, device: str, work: Path) -> dict:
    from pipeline.critic.testing import TINY_LIMITS
    from pipeline.critic.training.config import load_train_config
    from pipeline.critic.training.data_builder import CriticDataConfig, build_critic_dataset
    from pipeline.critic.training.launch import train_local
    from pipeline.sample import JudgementLimits

    limits = JudgementLimits(**TINY_LIMITS)
    t0 = time.perf_counter()
    build_critic_dataset(CriticDataConfig(edits_per_task=2, clean_per_task=1, natural_per_task=0, limits=limits),
                         work / "critic-set", progress=False)
    data_s = time.perf_counter() - t0
    cuda = device.startswith("cuda")
    cfg = load_train_config(None, [
        f"data={work / 'critic-set'}", f"output_dir={work / 'sft'}", f"model.path={critic}",
        *[f"limits.{k}={v}" for k, v in TINY_LIMITS.items()], "steps=3", "micro_batch_size=1", "max_image_side=128",
        "wandb.mode=disabled", "deepspeed.zero_stage=2", "gradient_checkpointing=true", "timeout_s=900",
        *(["num_gpus_per_rank=1", "deepspeed.bf16=true", "model.dtype=bfloat16"] if cuda else []),
    ])
    t0 = time.perf_counter()
    summary = train_local(cfg)
    seconds = time.perf_counter() - t0
    if not np.isfinite(summary["final_loss"]):
        raise RuntimeError(f"non-finite SFT loss: {summary}")
    return {"seconds": seconds, "detail": f"{summary['steps']} SFT steps (ZeRO-2{', bf16' if cuda else ''}, torch AdamW), "
                                          f"loss {summary['first_loss']:.3f} → {summary['final_loss']:.3f}; "
                                          f"critic set built in {data_s:.1f} s"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--out", type=Path, help="also write the table as JSON")
    args = ap.parse_args(argv)
    rows: dict[str, dict] = {}

    def run(name: str, fn, *a):
        t0 = time.perf_counter()
        try:
            out = fn(*a)
        except Exception as e:  # noqa: BLE001 - a failed step is a row of the table, the others still run
            traceback.print_exc()
            rows[name] = {"ok": False, "seconds": time.perf_counter() - t0, "detail": f"{type(e).__name__}: {e}"[:300]}
            return None
        row, extra = (out if isinstance(out, tuple) else (out, None))
        rows[name] = {"ok": True, **row}
        return extra

    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        policy, critic = build_models(work)
        rows["build tiny models"] = {"ok": True, "seconds": time.perf_counter() - t0, "detail": "policy + critic"}
        samples = run("HF rollout", step_rollout, policy, args.device)
        run("HF critic", step_critic, critic, args.device)
        if samples is not None:
            run("verl FSDP2 GRPO", step_verl, policy, samples, args.device, args.updates)
        run("DeepSpeed critic SFT", step_sft, critic, args.device, work)

    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    print(f"\nGPU smoke on {args.device} ({name}), torch {torch.__version__}")
    print(f"{'step':<22} {'ok':<4} {'seconds':>8}  detail")
    for step, row in rows.items():
        print(f"{step:<22} {'yes' if row['ok'] else 'NO':<4} {row['seconds']:>8.1f}  {row['detail']}")
    if args.out:
        args.out.write_text(json.dumps({"device": args.device, "name": name, "steps": rows}, indent=2))
    return 0 if all(r["ok"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
