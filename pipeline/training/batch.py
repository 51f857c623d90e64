"""GRPO groups of image→code rollouts → the batch verl's training engine consumes.

The batch is verl's `DataProto` in the layout verl's own PPO trainer hands to its engine workers
(`verl/experimental/agent_loop/agent_loop.py` builds it, `RayPPOTrainer._update_actor` consumes it):

  prompts        (B, P)     prompt token ids, LEFT-padded (image placeholders already expanded by the processor)
  responses      (B, R)     generated token ids, RIGHT-padded
  input_ids      (B, P+R)   prompts ‖ responses
  attention_mask (B, P+R)   1 on real tokens
  response_mask  (B, R)     1 on generated tokens (the tokens the loss is taken over)
  position_ids   (B, 4, P+R) row 0: text positions 0..n-1; rows 1-3: Qwen3-VL M-RoPE (temporal, height, width)
  old_log_probs  (B, R)     log-probs of the responses under the policy that sampled them
  advantages     (B, R)     GRPO advantages from verl's registered "grpo" estimator
                            (a masked sample — an infrastructure failure, `Sample.excluded` — has response_mask 0
                            and takes no part in its group's statistics; a group left with fewer than two
                            trainable answers is masked whole: GRPO has nothing to compare it with)
  ref_log_prob   (B, R)     (added later when the KL loss is on) log-probs under the reference policy
  rollout_is_weights (B, R) (added later with trainer.rollout_is) truncated importance weights, see engine.py
  non-tensor multi_modal_inputs: per sample {"pixel_values", "image_grid_thw"} — verl's engine concatenates them
  non-tensor vision_token: per sample, whether its response holds a vision special token (sampled despite the
                            block; the policy's counted failure): such a row is masked like an excluded one and
                            its response replaced by padding (the forward pass would read it as an image)
  meta temperature: the sampling temperature

About `mm_token_type_ids`: the processor marks image tokens of the prompt; we extend it with zeros over the
generated tokens so it covers prompt AND response, and use it to compute the M-RoPE `position_ids` with
transformers' own `Qwen3VLModel.get_rope_index`. That is its only use in transformers ≥ 5.3, and verl passes
precomputed `position_ids` to the model, so it is not sent to the engine (verl's agent loop drops it too).
"""

from __future__ import annotations

import hashlib
import json
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from tensordict import TensorDict
from verl import DataProto
from verl.trainer.ppo import core_algos

from pipeline.rollout.base import vision_token_ids

QWEN3_VL_MODEL_TYPES = ("qwen3_vl", "qwen3_vl_moe")


@dataclass
class GRPORollout:
    """One sampled answer, as the trainer needs it."""

    messages: list[dict[str, Any]]  # the chat prompt: one {"type": "image"} part per image (a revision turn: 2)
    images: Sequence[Image.Image | np.ndarray]  # the images those parts stand for, in order (HxWx3 uint8 arrays)
    response_ids: Sequence[int]  # generated tokens, without the prompt
    rollout_log_probs: Sequence[float]  # one per response token, at the sampling temperature
    reward: float
    group_id: str  # GRPO group: all answers to one prompt share it
    prompt_ids: Sequence[int] | None = None  # what the rollout fed the model; checked when given
    trainable: bool = True  # False: masked out of the loss (an infrastructure failure, never scored)

    @classmethod
    def from_sample(cls, sample: Any) -> GRPORollout:
        """From a scored `pipeline.sample.Sample`."""
        excluded = getattr(sample, "excluded", None) is not None
        if (sample.reward is None and not excluded) or sample.response_ids is None \
                or sample.response_logprobs is None:
            raise ValueError(
                f"sample {sample.uid} is not ready for training (needs response ids, logprobs, reward)"
            )
        return cls(
            messages=sample.messages,
            images=sample.prompt_images,
            response_ids=sample.response_ids,
            rollout_log_probs=sample.response_logprobs,
            reward=0.0 if excluded else float(sample.reward),
            group_id=sample.prompt_id,
            prompt_ids=sample.prompt_ids,
            trainable=not excluded,
        )


@dataclass
class EncodedPrompt:
    input_ids: torch.Tensor  # (P,)
    mm_token_type_ids: torch.Tensor  # (P,) 1 on image tokens
    pixel_values: torch.Tensor  # (patches, C*T*patch*patch)
    image_grid_thw: torch.Tensor  # (images, 3)


def encode_prompt(
    processor: Any, messages: list[dict[str, Any]], images: Sequence[Image.Image | np.ndarray]
) -> EncodedPrompt:
    """Tokenize a chat prompt exactly as the rollout does (chat template + Qwen3-VL processor)."""
    n_images = sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if part.get("type") == "image"
    )
    if n_images == 0 or n_images != len(images):
        raise ValueError(f"a training prompt needs one image per image part, and at least one: "
                         f"{n_images} part(s), {len(images)} image(s)")
    images = [Image.fromarray(im) if isinstance(im, np.ndarray) else im for im in images]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=images, return_tensors="pt", return_mm_token_type_ids=True)
    return EncodedPrompt(
        input_ids=enc["input_ids"][0],
        mm_token_type_ids=enc["mm_token_type_ids"][0],
        pixel_values=enc["pixel_values"],
        image_grid_thw=enc["image_grid_thw"],
    )


def _prompt_key(messages: list[dict[str, Any]], images: Sequence[Image.Image | np.ndarray]) -> tuple:
    """Equal for equal prompts (messages and image pixels), whichever objects carry them."""
    key: list[Any] = [json.dumps(messages, sort_keys=True, default=repr)]
    for image in images:
        pixels = np.ascontiguousarray(np.asarray(image))
        key += [pixels.shape, pixels.dtype.str, hashlib.blake2b(pixels.data, digest_size=16).digest()]
    return tuple(key)


def _rope_index_fn(hf_config: Any):
    """transformers' `Qwen3VLModel.get_rope_index`, bound to a config instead of a loaded model.

    It only reads `self.config` and `self.get_vision_position_ids`, so the batch builder needs no weights
    (verl binds the same method to its processor for the same reason, `verl/utils/tokenizer`).
    """
    if getattr(hf_config, "model_type", None) not in QWEN3_VL_MODEL_TYPES:
        raise ValueError(f"M-RoPE positions are implemented for Qwen3-VL only, got {hf_config.model_type!r}")
    if hf_config.model_type == "qwen3_vl":
        # heavy: transformers, only this path needs it
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel as Model
    else:
        # heavy: transformers, only this path needs it
        from transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe import Qwen3VLMoeModel as Model
    holder = types.SimpleNamespace(config=hf_config)
    holder.get_vision_position_ids = types.MethodType(Model.get_vision_position_ids, holder)
    return types.MethodType(Model.get_rope_index, holder)


def build_grpo_batch(
    rollouts: Sequence[GRPORollout],
    processor: Any,
    hf_config: Any,
    temperature: float = 1.0,
    norm_adv_by_std_in_grpo: bool = True,
) -> DataProto:
    """Encode the rollouts, pad them, compute M-RoPE positions and GRPO advantages; see the module docstring."""
    if not rollouts:
        raise ValueError("empty GRPO batch")
    pad_id = processor.tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has no pad token")
    get_rope_index = _rope_index_fn(hf_config)
    forbidden = vision_token_ids(hf_config)

    encoded: list[EncodedPrompt] = []
    encoded_prompts: dict[tuple, EncodedPrompt] = {}
    vision_token_rows: list[bool] = []
    for i, r in enumerate(rollouts):
        if len(r.response_ids) == 0:
            raise ValueError(f"rollout {i}: empty response (nothing to train on)")
        if len(r.rollout_log_probs) != len(r.response_ids):
            raise ValueError(
                f"rollout {i}: {len(r.rollout_log_probs)} log-probs for {len(r.response_ids)} response tokens"
            )
        # A generated vision token (despite the sampling block) would be read as an image placeholder by the
        # forward pass. The rollout counted it as the policy's failure (`rollout:vision_token`); here the row
        # is masked out and its response replaced by padding, so it cannot corrupt the batch.
        vision_token_rows.append(not forbidden.isdisjoint(int(t) for t in r.response_ids))
        key = _prompt_key(r.messages, r.images)
        enc = encoded_prompts.get(key)
        if enc is None:  # the n samples of a group share one prompt: encode it (chat template, image) once
            enc = encoded_prompts[key] = encode_prompt(processor, r.messages, r.images)
        if r.prompt_ids is not None and list(r.prompt_ids) != enc.input_ids.tolist():
            raise ValueError(
                f"rollout {i}: the prompt the rollout used differs from the trainer's encoding of the same "
                "messages and image (different processor settings?)"
            )
        encoded.append(enc)

    batch_size = len(rollouts)
    prompt_len = max(e.input_ids.numel() for e in encoded)
    response_len = max(len(r.response_ids) for r in rollouts)
    seq_len = prompt_len + response_len

    prompts = torch.full((batch_size, prompt_len), pad_id, dtype=torch.long)
    responses = torch.full((batch_size, response_len), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, seq_len), dtype=torch.long)
    response_mask = torch.zeros((batch_size, response_len), dtype=torch.long)
    mm_token_type_ids = torch.zeros((batch_size, seq_len), dtype=torch.long)
    position_ids = torch.zeros((batch_size, 4, seq_len), dtype=torch.long)
    old_log_probs = torch.zeros((batch_size, response_len), dtype=torch.float32)
    multi_modal_inputs = []

    for b, (r, enc) in enumerate(zip(rollouts, encoded)):
        n_prompt, n_response = enc.input_ids.numel(), len(r.response_ids)
        start = prompt_len - n_prompt  # left padding
        prompts[b, start:] = enc.input_ids
        if not vision_token_rows[b]:
            responses[b, :n_response] = torch.as_tensor(list(r.response_ids), dtype=torch.long)
        attention_mask[b, start : prompt_len + n_response] = 1
        response_mask[b, :n_response] = 1
        # Prompt image tokens are type 1; generated tokens are text (0): the type ids span the whole sequence.
        mm_token_type_ids[b, start:prompt_len] = enc.mm_token_type_ids
        old_log_probs[b, :n_response] = torch.as_tensor(list(r.rollout_log_probs), dtype=torch.float32)
        multi_modal_inputs.append({"pixel_values": enc.pixel_values, "image_grid_thw": enc.image_grid_thw})

    input_ids = torch.cat([prompts, responses], dim=1)
    for b, enc in enumerate(encoded):
        vision_positions, _ = get_rope_index(
            input_ids=input_ids[b : b + 1],
            mm_token_type_ids=mm_token_type_ids[b : b + 1],
            image_grid_thw=enc.image_grid_thw,
            attention_mask=attention_mask[b : b + 1],
        )  # (3, 1, seq_len)
        valid = attention_mask[b].bool()
        position_ids[b, 0, valid] = torch.arange(int(valid.sum()))  # plain text positions (verl's layout)
        position_ids[b, 1:] = vision_positions[:, 0]

    # Outcome reward on the last generated token; verl's GRPO estimator normalises within each group.
    token_level_rewards = torch.zeros((batch_size, response_len), dtype=torch.float32)
    last_token = response_mask.sum(dim=1) - 1
    token_level_rewards[torch.arange(batch_size), last_token] = torch.tensor(
        [float(r.reward) for r in rollouts]
    )
    group_index = np.array([r.group_id for r in rollouts], dtype=object)
    trainable = trainable_rows(rollouts, masked=vision_token_rows)
    # Masked rows get a group of their own, so they take no part in their group's mean and std.
    estimator_index = np.array(
        [g if keep else f"masked/{b}" for b, (g, keep) in enumerate(zip(group_index, trainable))], dtype=object)
    response_mask[~torch.as_tensor(trainable)] = 0
    grpo = core_algos.get_adv_estimator_fn(core_algos.AdvantageEstimator.GRPO)
    advantages, _returns = grpo(
        token_level_rewards=token_level_rewards,
        response_mask=response_mask,
        index=estimator_index,
        norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo,
    )

    return DataProto.from_dict(
        tensors={
            "prompts": prompts,
            "responses": responses,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "response_mask": response_mask,
            "position_ids": position_ids,
            "old_log_probs": old_log_probs,
            "advantages": advantages,
            "token_level_rewards": token_level_rewards,
        },
        non_tensors={
            "multi_modal_inputs": np.array(multi_modal_inputs, dtype=object),
            "group_id": group_index,
            "vision_token": np.array(vision_token_rows, dtype=bool),
        },
        meta_info={"temperature": float(temperature)},
    )


def trainable_rows(rollouts: Sequence[GRPORollout], masked: Sequence[bool] | None = None) -> np.ndarray:
    """Which rollouts take part in the loss: the trainable ones not `masked`, unless masking left their group
    with a single answer (GRPO would then use its raw reward as the advantage: nothing to compare it with)."""
    masked = masked if masked is not None else [False] * len(rollouts)
    keep = [r.trainable and not m for r, m in zip(rollouts, masked)]
    size: dict[str, int] = {}
    kept: dict[str, int] = {}
    for r, k in zip(rollouts, keep):
        size[r.group_id] = size.get(r.group_id, 0) + 1
        kept[r.group_id] = kept.get(r.group_id, 0) + int(k)
    return np.array([k and (kept[r.group_id] == size[r.group_id] or kept[r.group_id] >= 2)
                     for r, k in zip(rollouts, keep)], dtype=bool)


# Keys the engine's loss needs; the rest of the DataProto stays with the caller.
ENGINE_TENSOR_KEYS = (
    "prompts",
    "responses",
    "input_ids",
    "attention_mask",
    "response_mask",
    "position_ids",
    "old_log_probs",
    "advantages",
    "ref_log_prob",
    "rollout_is_weights",
)
ENGINE_NON_TENSOR_KEYS = ("multi_modal_inputs",)


def to_engine_input(batch: DataProto) -> TensorDict:
    """The padded DataProto → the no-padding TensorDict verl's engine workers take (what RayPPOTrainer does).

    Equivalent to `left_right_2_no_padding(batch.to_tensordict())`. `DataProto.to_tensordict` itself refuses to
    run with tensordict < 0.10, while verl 0.9.1 accepts tensordict 0.8 (this environment has 0.8.3) and the
    engine path works with it; so the same conversion is done here with verl's tensordict utilities.
    """
    from tensordict.tensorclass import NonTensorData, NonTensorStack
    # verl (4 s to import) is loaded already; kept local for the names
    from verl.utils import tensordict_utils as tu

    # verl (4 s to import) is loaded already; kept local for the names
    from verl.workers.utils.padding import left_right_2_no_padding

    tensors = {k: v for k, v in batch.batch.items() if k in ENGINE_TENSOR_KEYS}
    for key in ENGINE_NON_TENSOR_KEYS:
        tensors[key] = NonTensorStack.from_list([NonTensorData(item) for item in batch.non_tensor_batch[key]])
    td = tu.get_tensordict(tensor_dict=tensors, non_tensor_dict=dict(batch.meta_info))
    td = left_right_2_no_padding(td)
    td["position_ids"] = _jagged_position_ids(batch.batch["position_ids"], batch.batch["attention_mask"])
    return td


def _jagged_position_ids(position_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, 4, L) padded M-RoPE positions → a nested (B, 4, j) tensor, ragged along the sequence (dim 2).

    Works around verl 0.9.1 `left_right_2_no_padding`, which builds this with
    `torch.nested.as_nested_tensor([(4, len_i) ...], layout=torch.jagged)`: torch infers the ragged dimension
    from the lengths that differ, so when every sample has the same prompt+response length (one prompt, all
    answers cut at max_new_tokens; or a batch of one) the "4" dimension becomes the ragged one. The engine
    then pads garbage positions (log-probs off by ~0.05 on the tiny model, no error) and the mini-batch
    iterator crashes in `unbind` ("split_with_sizes expects split_sizes to sum exactly to ..."). Building the
    nested tensor with `jagged_dim=2` is what verl means in every case (its `maybe_fix_3d_position_ids` sets
    `_ragged_idx = 2` for the same reason after pickling).
    """
    valid = attention_mask.bool()
    per_sample = [position_ids[b][:, valid[b]] for b in range(position_ids.shape[0])]
    lengths = torch.tensor([p.shape[1] for p in per_sample])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    return torch.nested.nested_tensor_from_jagged(torch.cat(per_sample, dim=1), offsets, jagged_dim=2)


def shard_for_rank(batch: DataProto, rank: int, world_size: int) -> DataProto:
    """This rank's contiguous share of the batch (what verl's worker-group dispatch gives each DP rank)."""
    if len(batch) % world_size:
        raise ValueError(f"batch of {len(batch)} does not split evenly over {world_size} ranks")
    return batch.chunk(world_size)[rank]


__all__ = [
    "EncodedPrompt",
    "GRPORollout",
    "build_grpo_batch",
    "encode_prompt",
    "shard_for_rank",
    "to_engine_input",
]
