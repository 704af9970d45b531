"""Turning (prompt, response) pairs into training tensors with the prompt masked out.

The prompt and the response are tokenised separately and concatenated, exactly as serving sees
them: the prompt ends at the generation prompt, and the response's first token is the level
digit. Labels are -100 on prompt tokens, so the loss covers the assistant turn only.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    decision_index: int = -1  # position in input_ids of the level token (-1: cut off or absent)

    @property
    def num_response_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def tokenize_example(
    tokenizer, prompt: str, response: str, max_len: int, decision_char: int | None = 0, decision_only: bool = False
) -> TokenizedExample | None:
    """Prompt tokens (masked) + response tokens + end-of-turn token. A response that does not
    fit is cut at its end (post-CoT keeps its label, which comes first); returns None when the
    prompt alone leaves no room for the label.

    ``decision_char`` is the character offset in ``response`` of the level digit (0 for
    post-CoT and label-only, where the answer comes first; see ``decision_offset``). The token
    covering it becomes ``decision_index``, so the loss can weigh the decision on its own."""
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    if decision_char is None or decision_char == 0:
        response_ids = tokenizer.encode(response, add_special_tokens=False)
        decision_token = 0 if decision_char == 0 else -1
    else:
        encoded = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
        response_ids = list(encoded["input_ids"])
        decision_token = next(
            (i for i, (start, end) in enumerate(encoded["offset_mapping"]) if start <= decision_char < end), -1
        )
    if decision_only:
        if decision_token != 0:
            raise ValueError("decision_only needs the level token first (post-CoT or label-only)")
        response_ids = response_ids[:1]
    else:
        response_ids = response_ids + [tokenizer.eos_token_id]
    room = max_len - len(prompt_ids)
    if room < len(response_ids[:2]):
        return None
    response_ids = response_ids[:room]
    if decision_token >= len(response_ids):
        decision_token = -1  # the answer was cut off (a long pre-CoT response)
    return TokenizedExample(
        input_ids=prompt_ids + response_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + response_ids,
        decision_index=len(prompt_ids) + decision_token if decision_token >= 0 else -1,
    )


def pad_batch(examples: list[dict], pad_id: int, left: bool = False) -> dict:
    """Pad ``input_ids``/``labels`` lists into equal-length lists plus an attention mask.

    ``left`` puts the padding before each sequence and adds ``position_ids`` (each sequence's
    positions from 0, as unpadded): every sequence then ends in the last column, so a loss that
    reads only the ends (a level token after prompts of different lengths) projects a few
    columns onto the vocabulary, not the span from the shortest prompt's end to the longest's."""
    width = max(len(e["input_ids"]) for e in examples)
    batch: dict[str, list] = {"input_ids": [], "labels": [], "attention_mask": []}
    if left:
        batch["position_ids"] = []
    for e in examples:
        length = len(e["input_ids"])
        pad = width - length
        if left:
            batch["input_ids"].append([pad_id] * pad + list(e["input_ids"]))
            batch["labels"].append([IGNORE_INDEX] * pad + list(e["labels"]))
            batch["attention_mask"].append([0] * pad + [1] * length)
            batch["position_ids"].append([0] * pad + list(range(length)))
        else:
            batch["input_ids"].append(list(e["input_ids"]) + [pad_id] * pad)
            batch["labels"].append(list(e["labels"]) + [IGNORE_INDEX] * pad)
            batch["attention_mask"].append([1] * length + [0] * pad)
    return batch


def padded_decision_index(examples: list[dict], width: int, left: bool) -> list[int]:
    """Each example's ``decision_index`` as a column of its ``pad_batch`` row (-1 stays -1):
    left padding shifts a row's tokens right by its padding."""
    return [
        e["decision_index"] + (width - len(e["input_ids"]) if left else 0) if e["decision_index"] >= 0 else -1
        for e in examples
    ]
