"""One rank of critic SFT with DeepSpeed: `train_rank(cfg, rank, world_size, master_addr, master_port)`.

No Ray here: `actors/critic_trainer.py` runs one of these per Ray actor, `launch.py` one in a subprocess.

What is trained is exactly what is served (`pipeline/critic/backends/hf.py`): the prompt is the processor's
chat template over `prompts.messages(task, serve)` with the generation prompt (`serve`: the reward settings the
critic will be served with — each task's prompt file and message layout; unset: ours), the images are
(reference, rendering) through `images.prepare_pair` under that layout, and the target is the row's answer text followed by
the tokenizer's eos token (one of the ids generation stops at). The loss covers the answer and eos only.

Batches: every optimizer step takes the next `global_batch_size` examples of one seeded stream (an
independent permutation per epoch), the same on every rank; rank r trains on its contiguous share, in
`gradient_accumulation_steps` micro-batches. The order is a function of (seed, step) alone, so a resumed run
sees exactly the batches an uninterrupted one would have.

Loss: summed answer-token cross-entropy / the answer tokens of the whole global batch (all ranks, all
micro-batches), so every answer token weighs the same whatever the split. DeepSpeed averages gradients over
ranks, so each rank's loss is multiplied by the world size, and `backward(scale_wrt_gas=False)` keeps it from
dividing by the accumulation steps: 2 ranks compute the gradient 1 rank computes on the same global batch.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.critic.config import FORMAT_NAMES, OURS_FORMAT, builtin_format
from pipeline.critic.images import prepare_pair
from pipeline.critic.prompts import layout, messages
from pipeline.critic.training.config import CriticTrainConfig
from pipeline.critic.training.dataset import (
    CriticDataError,
    CriticExample,
    answer_formats,
    read_examples,
    read_manifest,
)
from pipeline.critic.training.memory import SFTShape, estimate, format_estimate
from pipeline.distributed import set_rank_env
from pipeline.models import load_model, load_processor, model_dir
from pipeline.models.processor import collate
from pipeline.runlog.wandb_env import has_wandb_credentials
from pipeline.schema import deep_merge

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"  # <output_dir>/checkpoints/step<N>/ (DeepSpeed) + `latest`
FINAL = "final"  # <output_dir>/final/: a Hugging Face checkpoint of the trained critic
METRICS = "metrics.jsonl"
TRAINER_STATE = "trainer_state.json"  # in each checkpoint: step, seed, global batch, world size


# ------------------------------------------------------------------------------------------------ data
def check_manifest(cfg: CriticTrainConfig) -> dict[str, Any]:
    """The set's manifest, after checking it was written with the limits this run serves the critic with."""
    manifest = read_manifest(Path(cfg.data).expanduser())
    written = manifest.get("limits")
    if written != cfg.limits.model_dump():
        raise CriticDataError(
            f"{cfg.data}: the set was written with limits {written}, this run has limits "
            f"{cfg.limits.model_dump()}; set `limits` to the manifest's (answers were cut to those limits, and "
            "the served critic's grammar is built from the run's)")
    # The answers must be in the format the critic will be served with (its grammar and parser follow it).
    for task, fmt in answer_formats(manifest).items():
        served = cfg.serve.answer_format(task) if cfg.serve is not None else OURS_FORMAT
        if fmt != served:
            raise CriticDataError(
                f"{cfg.data}: the {task} answers are in the {_format_name(fmt, task)} answer format, the critic "
                f"would be served with {_format_name(served, task)}; set serve.tasks.{task}.answer_format to the "
                "set's (or rebuild the set with the serving format)")
    return manifest


def _format_name(fmt, task: str) -> str:
    return next((repr(n) for n in FORMAT_NAMES if builtin_format(n, task) == fmt), "a custom")


def load_examples(cfg: CriticTrainConfig) -> list[CriticExample]:
    """Every row the run trains on, each checked (a bad row raises CriticDataError naming it)."""
    check_manifest(cfg)
    return read_examples(Path(cfg.data).expanduser(), cfg.limits, tasks=cfg.tasks)


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    return tuple(np.random.default_rng([seed, epoch]).permutation(n).tolist())


def global_batch(n: int, step: int, size: int, seed: int) -> list[int]:
    """Example indices of optimizer step `step` (0-based): positions step·size … of the epoch stream."""
    out = []
    for position in range(step * size, (step + 1) * size):
        epoch, i = divmod(position, n)
        out.append(_permutation(n, seed, epoch)[i])
    return out


def rank_share(batch: list[int], rank: int, world_size: int) -> list[int]:
    per_rank = len(batch) // world_size
    return batch[rank * per_rank:(rank + 1) * per_rank]


class Encoder:
    """(example) → the model inputs of the serving prompt + answer + eos, labels on answer + eos only."""

    def __init__(self, processor, max_image_side: int, serve=None):
        self.processor = processor
        self.max_image_side = max_image_side
        self.serve = serve  # the RewardConfig the critic will be served with (prompt, layout); None = ours
        self.eos = processor.tokenizer.eos_token
        self.prompts: dict[str, str] = {}

    def prompt(self, task: str) -> str:
        if task not in self.prompts:  # the HF backend's prompt, character for character
            self.prompts[task] = self.processor.apply_chat_template(messages(task, self.serve),
                                                                    add_generation_prompt=True, tokenize=False)
        return self.prompts[task]

    def answer_ids(self, example: CriticExample) -> list[int]:
        """The answer + eos tokens as they follow the prompt. Raises when appending the answer changes the
        prompt's tokenization (the labels would be misplaced): warm_start.encode_example's check, made on the
        text alone (the image placeholders are special tokens; the images cannot move the boundary)."""
        tokenize = self.processor.tokenizer
        prompt = self.prompt(example.task)
        prompt_ids = tokenize(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenize(prompt + example.answer + self.eos, add_special_tokens=False)["input_ids"]
        if full_ids[:len(prompt_ids)] != prompt_ids:
            raise CriticDataError(f"example {example.id!r}: the answer changes the prompt's tokenization; "
                                  "its labels would be misplaced")
        return full_ids[len(prompt_ids):]

    def encode(self, example: CriticExample, answer_ids: list[int]) -> dict[str, torch.Tensor]:
        images = list(prepare_pair(example.task, example.reference, example.rendering,
                                   layout(example.task, self.serve), self.max_image_side))
        full = self.processor(text=[self.prompt(example.task) + example.answer + self.eos], images=images,
                              return_tensors="pt", return_mm_token_type_ids=True)
        input_ids = full["input_ids"][0]
        n = len(answer_ids)
        if input_ids[-n:].tolist() != answer_ids:  # the text-only boundary check holds with images too
            raise CriticDataError(f"example {example.id!r}: the answer tokens differ once images are expanded")
        labels = input_ids.clone()
        labels[:-n] = -100
        return {"input_ids": input_ids, "labels": labels, "mm_token_type_ids": full["mm_token_type_ids"][0],
                "pixel_values": full["pixel_values"], "image_grid_thw": full["image_grid_thw"]}


# ------------------------------------------------------------------------------------------- deepspeed
def _skip_shm_comm_build() -> None:
    """Keep DeepSpeed from JIT-compiling its `deepspeed_shm_comm` op at `init_distributed`.

    `deepspeed.comm.torch.TorchBackend.__init__` calls `build_shm_op()`, which on the CPU accelerator loads
    `ShareMemCommBuilder` whenever `deepspeed.ops.__compatible_ops__` says it is buildable (g++ and ninja are
    present), i.e. compiles C++ in every fresh process whose TORCH_EXTENSIONS_DIR has no copy (36–105 s on
    these machines). The op only serves `inference_all_reduce` (AutoTP inference); training's collectives go
    through torch.distributed. Marking it incompatible (the probe itself takes 0.1 s) makes it return None."""
    import deepspeed.ops  # heavy: DeepSpeed, only this path needs it

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def deepspeed_config(cfg: CriticTrainConfig) -> dict[str, Any]:

    zero: dict[str, Any] = {"stage": cfg.deepspeed.zero_stage}
    if cfg.deepspeed.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    ds = {
        "train_batch_size": cfg.global_batch_size,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.deepspeed.bf16},
        # torch's AdamW everywhere: DeepSpeed's FusedAdam (GPU) and CPU Adam are C++/CUDA ops built on first
        # use (~1 min on CPU; with nvcc on GPU, which the image does not ship and DS_BUILD_OPS=0 leaves unbuilt).
        # Under ZeRO the optimizer steps on this rank's shard only; `deepspeed.extra` can choose FusedAdam.
        "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr, "weight_decay": cfg.weight_decay,
                                                  "betas": [0.9, 0.999], "eps": 1e-8, "torch_adam": True}},
        "steps_per_print": 10**9,  # we log; DeepSpeed's own step lines would interleave with the bar
        "wall_clock_breakdown": False,
    }
    return deep_merge(ds, cfg.deepspeed.extra)


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to the peak over `warmup_steps`, then linear decay; never 0 (step 0 updates too).
    (DeepSpeed's WarmupDecayLR needs ≥ 2 warm-up steps and gives step 0 a learning rate of 0.)"""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    return max(total_steps - step, 1) / max(total_steps - warmup_steps, 1)


def _all_reduce_sum(values: list[float]) -> list[float]:
    import torch.distributed as dist  # torch is loaded already; kept local for the names

    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


# ------------------------------------------------------------------------------------------- logging
class _Metrics:
    """Rank 0's sink: metrics.jsonl always, wandb unless disabled (offline files under output_dir)."""

    def __init__(self, cfg: CriticTrainConfig):
        cfg.out.mkdir(parents=True, exist_ok=True)
        self.file = (cfg.out / METRICS).open("a", encoding="utf-8")
        self.run = None
        if cfg.wandb.mode == "disabled":
            return
        if cfg.wandb.mode == "online" and not has_wandb_credentials():
            raise RuntimeError("wandb.mode=online needs WANDB_API_KEY (or `wandb login`); or use offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_DATA_DIR", str(cfg.out / "wandb" / "data"))
        import wandb  # heavy: wandb, only this path needs it

        self.run = wandb.init(project=cfg.wandb.project, name=cfg.out.name, dir=str(cfg.out), mode=cfg.wandb.mode,
                              config=cfg.model_dump(mode="json"),
                              settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.file.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        self.file.flush()
        if self.run is not None:
            self.run.log(metrics, step=step)

    def close(self) -> None:
        self.file.close()
        if self.run is not None:
            self.run.finish()


# ---------------------------------------------------------------------------------------- checkpoints
def _checkpoint_steps(ckpt_dir: Path) -> list[int]:
    return sorted(int(p.name[4:]) for p in ckpt_dir.glob("step*") if p.is_dir() and p.name[4:].isdigit())


def _save_checkpoint(engine, cfg: CriticTrainConfig, step: int, rank: int, world_size: int) -> None:
    ckpt_dir = cfg.out / CHECKPOINTS
    # What must match for the run to continue exactly; also written as JSON, readable without loading weights.
    meta = {"step": step, "seed": cfg.seed, "global_batch_size": cfg.global_batch_size, "world_size": world_size}
    if rank == 0:  # before DeepSpeed writes `latest`, so the newest tag always has it
        (ckpt_dir / f"step{step}").mkdir(parents=True, exist_ok=True)
        (ckpt_dir / f"step{step}" / TRAINER_STATE).write_text(json.dumps(meta))
    engine.save_checkpoint(str(ckpt_dir), tag=f"step{step}",  # a collective; rank 0 writes `latest`
                           client_state={**meta, "torch_rng": torch.get_rng_state()})
    if rank == 0:
        for old in _checkpoint_steps(ckpt_dir)[:-cfg.keep_checkpoints]:
            shutil.rmtree(ckpt_dir / f"step{old}", ignore_errors=True)


def _resume(engine, cfg: CriticTrainConfig, world_size: int) -> int:
    """Load the newest checkpoint (if any); returns the step to continue from."""
    ckpt_dir = cfg.out / CHECKPOINTS
    if not (ckpt_dir / "latest").is_file():
        log.info("critic SFT: resume=true but no checkpoint under %s: starting at step 0", ckpt_dir)
        return 0
    tag = (ckpt_dir / "latest").read_text().strip()
    meta = json.loads((ckpt_dir / tag / TRAINER_STATE).read_text())
    for key, now in (("seed", cfg.seed), ("global_batch_size", cfg.global_batch_size),
                     ("world_size", world_size)):
        if meta.get(key) != now:  # the data order (or the optimizer shards) would not continue
            raise RuntimeError(f"cannot resume from {ckpt_dir / tag}: it has {key}={meta.get(key)}, this run "
                               f"{key}={now}")
    _, state = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def _full_state_dict(engine, dtype: torch.dtype, rank: int) -> dict[str, torch.Tensor] | None:
    """The trained weights, whole, in fp32 from the optimizer's master copy where there is one (ZeRO 1–3,
    bf16), cast to `dtype`. A collective under ZeRO (every rank gathers each parameter); rank 0 keeps them."""
    from deepspeed.utils import safe_get_full_fp32_param  # heavy: DeepSpeed, only this path needs it

    module = engine.module
    out: dict[str, torch.Tensor] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        full = safe_get_full_fp32_param(param)  # None: a plain (stage 0, fp32) parameter, already whole
        if rank == 0:
            out[name] = (param.detach() if full is None else full).to("cpu", dtype).clone()
    if rank != 0:
        return None
    for name, buffer in module.state_dict().items():  # persistent buffers (never partitioned)
        out.setdefault(name, buffer.detach().to("cpu").clone())
    return out


def _save_final(state_dict: dict[str, torch.Tensor], base_path: Path, processor, out: Path,
                dtype: torch.dtype) -> Path:
    """Write final/ as a HF checkpoint: built in a scratch dir, renamed into place (never half-written)."""
    # heavy: transformers, only this path needs it
    from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig

    config = AutoConfig.from_pretrained(base_path)
    with torch.device("meta"):  # no second copy of random weights: the state dict is assigned in
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.load_state_dict(state_dict, strict=True, assign=True)  # a missing or extra key is an error
    if (base_path / "generation_config.json").is_file():  # eos ids and defaults the critic is served with
        model.generation_config = GenerationConfig.from_pretrained(base_path)
    final = out / FINAL
    scratch = Path(tempfile.mkdtemp(prefix=".final-", dir=out))
    try:
        os.chmod(scratch, 0o755)  # mkdtemp makes it private; readers (the reward actors) may be other users
        model.save_pretrained(scratch)
        processor.save_pretrained(scratch)
        if final.exists():  # a previous run's: moved aside first (a directory cannot be replaced atomically)
            old = Path(tempfile.mkdtemp(prefix=".final-old-", dir=out))
            os.rename(final, old / FINAL)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(scratch, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


# ------------------------------------------------------------------------------------------------ train
def answer_loss(model: torch.nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of the answer tokens. The language-model head runs on the answer positions only
    (in fp32 there), not on every position: a full (batch × sequence × vocabulary) fp32 logits tensor for two
    1024 px images and a 150k vocabulary is tens of GB. No KV cache is built (`use_cache=False`): training never
    decodes."""
    hidden = model.model(**inputs, use_cache=False).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    logits = model.lm_head(hidden[keep]).float()
    return F.cross_entropy(logits, target[keep], reduction="sum")


def train_rank(cfg: CriticTrainConfig, rank: int, world_size: int, master_addr: str = "127.0.0.1",
               master_port: int = 29500) -> dict[str, Any]:
    """Train one data-parallel rank; every rank of the job calls this with the same config. Returns (on
    rank 0; a short one elsewhere) {"steps", "start_step", "first_loss", "final_loss", "losses", "step_s",
    "final_dir", "seconds", "global_steps", "examples", ...}."""
    started = time.perf_counter()
    if cfg.num_gpus_per_rank <= 0:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before deepspeed is imported: skips the GPU probe
    torch.set_num_threads(max(1, int(cfg.num_cpus_per_rank)))  # oversubscribed BLAS threads crawl

    # Everything that can be wrong with the data or the model fails here, before any process group exists
    # (a rank failing later would leave its peers waiting in a collective).
    examples = load_examples(cfg)
    base_path = model_dir(cfg.model)  # built beforehand if tiny (the CLI, pipeline.tiny)
    processor = load_processor(base_path)
    encoder = Encoder(processor, cfg.max_image_side, cfg.serve)
    answer_ids = [encoder.answer_ids(e) for e in examples]
    model = load_model(base_path, cfg.dtype)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    eos_id = processor.tokenizer.eos_token_id
    stop_ids = model.generation_config.eos_token_id
    stop_ids = stop_ids if isinstance(stop_ids, (list, tuple)) else [stop_ids]
    if eos_id not in stop_ids:
        raise ValueError(f"the tokenizer's eos {processor.tokenizer.eos_token!r} ({eos_id}) is not among the "
                         f"ids generation stops at ({stop_ids}): the trained critic would never stop")
    if cfg.global_batch_size % world_size:
        raise ValueError(f"global batch {cfg.global_batch_size} does not split over {world_size} ranks")

    import deepspeed  # heavy: DeepSpeed, only this path needs it
    import torch.distributed as dist  # torch is loaded already; kept local for the names

    _skip_shm_comm_build()
    set_rank_env(rank, world_size, master_addr, master_port)
    metrics = None
    try:
        deepspeed.init_distributed(dist_backend=cfg.dist_backend, timeout=timedelta(seconds=cfg.timeout_s))
        torch.manual_seed(cfg.seed)
        engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=deepspeed_config(cfg),
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps)))
        engine.train()
        start_step = _resume(engine, cfg, world_size) if cfg.resume else 0
        if rank == 0:
            metrics = _Metrics(cfg)
            log.info("%s", format_estimate(estimate(
                json.loads((base_path / "config.json").read_text()), cfg.deepspeed.zero_stage, world_size,
                cfg.micro_batch_size, cfg.deepspeed.bf16, cfg.gradient_checkpointing,
                SFTShape(image_side=cfg.max_image_side))))
            log.info("critic SFT: %d examples, %d rank(s), global batch %d, ZeRO-%d, steps %d → %d",
                     len(examples), world_size, cfg.global_batch_size, cfg.deepspeed.zero_stage, start_step,
                     cfg.steps)
        device = engine.device
        pad_id = processor.tokenizer.pad_token_id
        losses: list[float] = []
        step_times: list[float] = []
        bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, desc="critic SFT",
                   unit="step", disable=rank != 0)  # refresh: pipeline/console.py
        for step in bar:
            t0 = time.perf_counter()
            lr = engine.get_lr()[0]  # this step's (the schedule moves on at the step's end)
            batch = global_batch(len(examples), step, cfg.global_batch_size, cfg.seed)
            total_answer_tokens = sum(len(answer_ids[i]) for i in batch)  # known on every rank: no collective
            share = rank_share(batch, rank, world_size)
            ce_sum, tokens = 0.0, 0
            for m in range(cfg.gradient_accumulation_steps):
                micro = share[m * cfg.micro_batch_size:(m + 1) * cfg.micro_batch_size]
                inputs = collate([encoder.encode(examples[i], answer_ids[i]) for i in micro], pad_id)
                labels = inputs.pop("labels").to(device)
                inputs = {k: v.to(device) for k, v in inputs.items()}
                ce = answer_loss(engine.module, inputs, labels)
                engine.backward(ce * (world_size / total_answer_tokens), scale_wrt_gas=False)
                engine.step()  # DeepSpeed steps the optimizer (and the schedule) at the accumulation boundary
                ce_sum += ce.item()
                tokens += int(inputs["attention_mask"].sum())
            ce_total, tokens_total = _all_reduce_sum([ce_sum, tokens]) if world_size > 1 else (ce_sum, tokens)
            loss = ce_total / total_answer_tokens
            step_s = time.perf_counter() - t0
            losses.append(loss)
            step_times.append(step_s)
            done = step + 1
            if rank == 0:
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)  # drawn at the next tick: mininterval holds
                if done % cfg.log_every_steps == 0 or done == cfg.steps:
                    grad_norm = engine.get_global_grad_norm()
                    metrics.log(done, {"loss": loss, "lr": lr, "step_s": step_s,
                                       "grad_norm": float(grad_norm) if grad_norm is not None else math.nan,
                                       "tokens_per_s": tokens_total / step_s, "answer_tokens": total_answer_tokens})
            if cfg.save_every_steps and (done % cfg.save_every_steps == 0 or done == cfg.steps):
                _save_checkpoint(engine, cfg, done, rank, world_size)
        bar.close()
        state_dict = _full_state_dict(engine, getattr(torch, cfg.dtype), rank)
        final_dir = None
        if rank == 0:
            final_dir = _save_final(state_dict, base_path, processor, cfg.out, getattr(torch, cfg.dtype))
        dist.barrier()  # no rank reports success before final/ exists
        summary = {"steps": cfg.steps, "start_step": start_step, "global_steps": int(engine.global_steps),
                   "losses": losses, "first_loss": losses[0] if losses else None,
                   "final_loss": losses[-1] if losses else None,
                   "step_s": float(np.median(step_times)) if step_times else None,
                   "final_dir": str(final_dir) if final_dir else None, "examples": len(examples),
                   "world_size": world_size, "rank": rank, "seconds": round(time.perf_counter() - started, 2)}
        if rank == 0:
            log.info("critic SFT: loss %s → %s, final checkpoint %s", summary["first_loss"],
                     summary["final_loss"], final_dir)
        return summary
    finally:
        if metrics is not None:
            metrics.close()
        if dist.is_initialized():
            dist.destroy_process_group()
