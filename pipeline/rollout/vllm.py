"""Rollout with vLLM — the GPU backend. Same interface and the same Samples as `HFRollout`.

- Engine: `vllm.LLM` (offline batches; the rollout worker calls it synchronously), tensor parallelism, memory
  share, context length, sleep mode and seed from `rollout.vllm`; `distributed_executor_backend="mp"` so TP > 1
  runs as subprocesses on the GPUs Ray gave the rollout actor (as verl's vLLM server does).
- Prompts: the processor's chat template text with the image placeholder plus the image as
  `multi_modal_data` (vLLM expands the placeholder, like the HF processor); n samples per prompt through
  `SamplingParams(n=...)`.
- Log-probs: `logprobs=0` returns the sampled token's log-prob, and `logprobs_mode="processed_logprobs"`
  (verl's default, `verl/workers/config/rollout.py`) takes it after temperature scaling, i.e. under
  softmax(logits / T) as the HF backend and the trainer compute it ("Processed means the values after
  applying all processors, including temperature and top_k/top_p", vLLM's ModelConfig.logprobs_mode, from
  0.10.2 on). Two documented differences: vLLM's processed log-probs also reflect top-p/top-k truncation when
  those are on, and the hard block of the never-sampled tokens (their mass is renormalised away; a real
  checkpoint puts ~0 on them); with top_p=1, top_k=0 both backends report the same numbers up to kernel
  precision. Whatever differs is corrected by the trainer's truncated importance weights.
- Never-sampled tokens (vision special tokens, `suppress_tokens`): hard-blocked with `bad_words` (each one
  token; checked at start-up), not `logit_bias` (a finite penalty that also shifts the processed log-probs).
- Weights: `load_weights` (a CPU state dict from the object store, already in the engine's dtype) goes to the
  engine's workers through `collective_rpc` into the model's own `load_weights`, inside vLLM's layerwise
  reload (pipeline/rollout/vllm_worker.py); `init_weight_group` / `receive_weights` join and consume the
  trainer's NCCL broadcast through vLLM's native weight transfer (pipeline/rollout/weight_sync.py). Every
  engine RPC has a timeout (rollout.timeout_s). The prefix cache and the vision-encoder cache are reset after
  every update: cached KV blocks and image embeddings were computed by the old weights.
- Sleep mode (colocated with the trainer): `sleep()` frees the KV cache and offloads the weights; `generate`
  and weight loads wake the engine first.

vLLM is a GPU-only optional extra: where it (or CUDA) is missing, construction raises `RolloutUnavailable`
with what to install.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from pipeline.models import load_processor, model_dir
from pipeline.models.config import ModelsConfig
from pipeline.rollout.base import (
    VLLM_MISSING,
    RolloutUnavailable,
    expand_groups,
    fill_response,
    is_sampling,
    never_sampled_token_ids,
    prompt_images,
    prompt_text,
    stop_token_ids,
)
from pipeline.rollout.config import SamplingConfig, VLLMRolloutConfig
from pipeline.rollout.vllm_worker import WORKER_EXTENSION
from pipeline.rollout.weight_sync import Handshake
from pipeline.sample import Sample

log = logging.getLogger(__name__)

# Object-store weight loads cross into the engine's worker processes in pieces of about this size.
STATE_DICT_CHUNK_BYTES = 256 * 1024 * 1024
# Processor classes of ours that vLLM cannot resolve by name; it gets the stock Qwen3-VL processor instead.
OUR_PROCESSOR_CLASSES = {"Qwen3VLImageOnlyProcessor": "Qwen3VLProcessor"}


def vllm_import_error() -> str | None:
    """None when vLLM imports here, else why not."""
    try:
        import vllm  # noqa: F401
    except Exception as e:  # noqa: BLE001 - ImportError, or a vLLM build that does not match this CUDA / torch
        return f"{type(e).__name__}: {e}"
    return None


# Where the processor views of checkpoints live: a writable cache, never beside the checkpoint (a project-trained
# critic is often mounted read-only, e.g. /models on the cluster).
VIEWS_DIR = Path(os.environ.get("VISUAL_ERM_VIEWS_DIR", "~/.cache/visual-erm-rl/vllm-views")).expanduser()


def vllm_model_dir(path: Path, views_dir: Path | None = None) -> Path:
    """The checkpoint directory to hand vLLM. Checkpoints this project wrote (tiny models, critics it trained)
    name the image-only processor class (so CPU machines need no torchvision); vLLM resolves processors by class
    name, so it gets a view of the directory (symlinks) whose processor_config names the stock class, built
    under `views_dir` (default VIEWS_DIR) and keyed by the checkpoint's real path. Real checkpoints are used as
    they are."""
    config_file = path / "processor_config.json"
    if not config_file.is_file():
        return path
    processor_config = json.loads(config_file.read_text())
    stock = OUR_PROCESSOR_CLASSES.get(processor_config.get("processor_class"))
    if stock is None:
        return path
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    view = Path(views_dir or VIEWS_DIR) / f"{path.name}-{key}"
    view.mkdir(parents=True, exist_ok=True)
    for item in path.iterdir():
        link = view / item.name
        if item.name != config_file.name and not os.path.lexists(link):
            try:
                link.symlink_to(item.resolve())
            except FileExistsError:  # another worker made it first
                pass
    processor_config["processor_class"] = stock
    staging = view / f".{config_file.name}.{os.getpid()}"
    staging.write_text(json.dumps(processor_config, indent=2))
    staging.replace(view / config_file.name)  # atomic: several workers may prepare the view at once
    return view


def bad_words_for(tokenizer: Any, token_ids: list[int]) -> list[str]:
    """vLLM `bad_words` that block exactly these tokens: each token's text, which must encode back to that one
    token (vLLM tokenizes bad words with the model's tokenizer, special tokens included), else a start-up
    error rather than a block that silently misses."""
    words = []
    for token_id in token_ids:
        word = tokenizer.convert_ids_to_tokens(int(token_id))
        if word is None or tokenizer.encode(word, add_special_tokens=False) != [int(token_id)]:
            raise ValueError(
                f"token {token_id} ({word!r}) does not tokenize back to itself: it cannot be blocked as a vLLM "
                "bad word")
        words.append(word)
    return words


def _chunks(items: list[tuple[str, torch.Tensor]], max_bytes: int) -> list[list[tuple[str, torch.Tensor]]]:
    chunks, current, size = [], [], 0
    for name, tensor in items:
        current.append((name, tensor))
        size += tensor.numel() * tensor.element_size()
        if size >= max_bytes:
            chunks.append(current)
            current, size = [], 0
    if current:
        chunks.append(current)
    return chunks


class VLLMRollout:
    def __init__(self, models: ModelsConfig, sampling: SamplingConfig, engine: VLLMRolloutConfig, seed: int = 0,
                 timeout_s: float = 600.0):
        why = vllm_import_error()
        if why is not None:
            raise RolloutUnavailable(f"{VLLM_MISSING} (import vllm failed here: {why})")
        if not torch.cuda.is_available():
            raise RolloutUnavailable(
                "rollout.backend=vllm needs a CUDA GPU and none is visible to this process (rollout.num_gpus must "
                "give each rollout worker its GPUs); use rollout.backend=hf on CPU machines"
            )
        import vllm  # heavy: vLLM: the GPU extra, only this path needs it

        self.sampling = sampling
        self.engine_cfg = engine
        self.tensor_parallel_size = engine.tensor_parallel_size
        self.timeout_s = timeout_s  # one engine RPC, one weight-sync handshake wait (rollout.timeout_s)
        self.handshake = None  # the NCCL round handshake, once init_weight_group has run
        path = model_dir(models.policy)
        # The HF processor renders the chat template (the same prompt text the HF backend and the trainer use);
        # the tokenizer decodes responses exactly as the HF backend does.
        self.processor = load_processor(path)
        generation_config = self._generation_config(path)
        from transformers import AutoConfig  # heavy: transformers, only this path needs it

        self.stop_ids = stop_token_ids(generation_config, self.processor.tokenizer)
        self.never_sampled = never_sampled_token_ids(generation_config, AutoConfig.from_pretrained(path))
        self.bad_words = bad_words_for(self.processor.tokenizer, self.never_sampled)
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=str(vllm_model_dir(path)),
            dtype=models.policy.dtype,
            tensor_parallel_size=engine.tensor_parallel_size,
            distributed_executor_backend="mp",
            gpu_memory_utilization=engine.gpu_memory_utilization,
            max_model_len=engine.max_model_len,
            max_num_seqs=engine.max_num_seqs,
            enforce_eager=engine.enforce_eager,
            enable_sleep_mode=engine.enable_sleep_mode,
            seed=engine.seed + seed,
            # A first answer shows one image; a revision turn the reference and the previous rendering
            # (pipeline/revision.py). No video memory profiled.
            limit_mm_per_prompt={"image": 2, "video": 0},
            logprobs_mode="processed_logprobs",
            worker_extension_cls=WORKER_EXTENSION,
            # vLLM's native NCCL weight transfer (rollout.weight_sync=nccl); idle until a group is joined.
            weight_transfer_config={"backend": "nccl"},
        )
        self.version = 0
        self.asleep = False

    @staticmethod
    def _generation_config(path: Path) -> Any:
        from transformers import GenerationConfig  # heavy: transformers, only this path needs it

        try:
            return GenerationConfig.from_pretrained(path)
        except OSError:  # no generation_config.json: the tokenizer's eos ends responses
            return None

    # -----------------------------------------------------------------------------------------------------
    def _sampling_params(self, n: int, greedy: bool) -> Any:
        s = self.sampling
        sampled = is_sampling(s, greedy)
        return self._vllm.SamplingParams(
            n=n,
            temperature=s.temperature if sampled else 0.0,
            top_p=s.top_p if sampled else 1.0,
            top_k=s.top_k if (sampled and s.top_k > 0) else 0,  # 0: off
            max_tokens=s.max_new_tokens,
            logprobs=0,  # the sampled token's log-prob only
            stop_token_ids=self.stop_ids,
            bad_words=self.bad_words or None,
        )

    def generate(self, prompts: list[Sample], n: int | None = None, greedy: bool = False) -> list[Sample]:
        """Return n new Samples per prompt (same prompt_id = one GRPO group), responses filled in."""
        n = n or self.sampling.n
        if not prompts:
            return []
        self.wake_up()
        requests = [
            {"prompt": prompt_text(self.processor, p), "multi_modal_data": {"image": prompt_images(p)}}
            for p in prompts
        ]
        # Greedy decoding gives n identical answers: ask the engine for one (vLLM refuses n > 1 without
        # sampling in some versions) and repeat it.
        engine_n = n if is_sampling(self.sampling, greedy) else 1
        outputs = self.llm.generate(requests, self._sampling_params(engine_n, greedy), use_tqdm=False)
        expanded = expand_groups(prompts, n)
        tokenizer = self.processor.tokenizer
        results = []
        for i, output in enumerate(outputs):
            completions = sorted(output.outputs, key=lambda c: c.index)
            if len(completions) != engine_n:
                raise RuntimeError(
                    f"vLLM returned {len(completions)} completions for a prompt, asked for {engine_n}")
            completions = completions * (n // engine_n)
            for j, completion in enumerate(completions):
                results.append(fill_response(
                    expanded[i * n + j],
                    prompt_ids=output.prompt_token_ids,
                    response_ids=list(completion.token_ids),
                    response_logprobs=sampled_token_logprobs(completion),
                    tokenizer=tokenizer,
                    stop_ids=self.stop_ids,
                    version=self.version,
                    never_sampled=self.never_sampled,
                ))
        return results

    # -----------------------------------------------------------------------------------------------------
    # Weights
    # -----------------------------------------------------------------------------------------------------
    def load_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> None:
        """Replace the engine's weights with a full HF-named state dict (object-store path) and adopt its version.
        The trainer already cast it to the engine's dtype (bf16 on the wire); chunks bound each RPC's size."""
        self.wake_up()
        items = [(name, tensor.detach().cpu().contiguous()) for name, tensor in state_dict.items()]
        self._rpc("begin_weight_load")
        for chunk in _chunks(items, STATE_DICT_CHUNK_BYTES):
            self._rpc("load_state_dict_items", args=(chunk,))
        self._rpc("finish_weight_load")
        self._weights_changed(version)

    def init_weight_group(self, master_address: str, master_port: int, rank_offset: int, world_size: int) -> list:
        """Join the trainer's NCCL weight group through vLLM's weight transfer engine (its workers take ranks
        `rank_offset` + their rank in the engine) and the round handshake (pipeline/rollout/weight_sync.py).
        Returns the ranks taken."""

        init_info = {"master_address": master_address, "master_port": master_port, "rank_offset": rank_offset,
                     "world_size": world_size, "packed": False}
        self._rpc("init_weight_transfer_engine", kwargs={"init_info": init_info})
        self.handshake = Handshake.connect(master_address, master_port, self.timeout_s)
        return [rank_offset + t for t in range(self.tensor_parallel_size)]

    def receive_weights(self, version: int) -> int:
        """One round from trainer rank 0: announce this engine inside the receive (no generate runs meanwhile:
        the rollout actor runs one call at a time), take the round's update info, receive and load it through
        vLLM's native transfer; adopt the version. Returns the number of tensors."""
        if self.handshake is None:
            raise RuntimeError("receive_weights before init_weight_group")
        self.wake_up()
        meta = self.handshake.enter_round(self.tensor_parallel_size)
        self._rpc("start_weight_update")
        self._rpc("update_weights", kwargs={"update_info": meta.update_info()})
        self._rpc("finish_weight_update")
        self._weights_changed(version)
        return len(meta.names)

    def _rpc(self, method: str, args: tuple = (), kwargs: dict | None = None) -> list:
        # Every call into the engine's workers is bounded: a worker stuck in a collective fails the call.
        return self.llm.collective_rpc(method, timeout=self.timeout_s, args=args, kwargs=kwargs)

    def _weights_changed(self, version: int) -> None:
        # Cached prefix KV blocks and cached vision-encoder outputs were computed with the old weights.
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()
        self.version = version

    # -----------------------------------------------------------------------------------------------------
    # Sleep mode (colocated with the trainer)
    # -----------------------------------------------------------------------------------------------------
    def sleep(self, level: int = 1) -> None:
        """Free the KV cache and offload (level 1) or drop (level 2) the weights until the next use.
        Level 2 is only safe when a weight load follows before generation. No-op without sleep mode."""
        if self.engine_cfg.enable_sleep_mode and not self.asleep:
            self.llm.sleep(level=level)
            self.asleep = True

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False


def sampled_token_logprobs(completion: Any) -> list[float]:
    """Per-token log-prob of each sampled token from a vLLM CompletionOutput requested with logprobs=0."""
    if completion.logprobs is None:
        raise RuntimeError("vLLM returned no log-probs although logprobs=0 was requested")
    values = []
    for position, token in enumerate(completion.token_ids):
        entry = completion.logprobs[position]
        if token not in entry:
            raise RuntimeError(f"vLLM log-probs at position {position} lack the sampled token {token}")
        values.append(float(entry[token].logprob))
    return values
