"""The check every rollout test makes: a response's log-probs against a teacher-forced pass of the same model."""

import torch


def teacher_forced_logprobs(model, processor, sample, temperature: float = 1.0, device=None):
    """(the prompt ids the processor gives for `sample`'s messages and images, the log-prob of each response
    token under softmax(logits / temperature) of one forward pass over prompt + response)."""
    text = processor.apply_chat_template(sample.messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=sample.prompt_images, return_tensors="pt", return_mm_token_type_ids=True)
    if device is not None:
        inputs = inputs.to(device)
    response = torch.tensor([sample.response_ids], device=inputs["input_ids"].device)
    input_ids = torch.cat([inputs["input_ids"], response], dim=1)
    # mm_token_type_ids must cover the generated tokens too (they are text: 0).
    mm = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(response)], dim=1)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), mm_token_type_ids=mm,
                       pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"]).logits
    prompt_len = inputs["input_ids"].shape[1]
    step_logits = logits[0, prompt_len - 1 : -1].float() / temperature
    expected = torch.log_softmax(step_logits, -1).gather(-1, response[0].unsqueeze(-1)).squeeze(-1)
    return inputs["input_ids"][0].tolist(), expected.cpu().numpy(), inputs["image_grid_thw"]
