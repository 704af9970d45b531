"""The generative stepwise reward model's text side (docs/method.md section 6): the question it is
asked about one step of a response, and its training examples built from annotated steps.

The GenRM reads the query, the item and a response's steps 1..k, and answers "Yes" or "No" to
"is step k correct?". Its step reward is P("Yes") at the answer position, normalised over the
first tokens of the two answers (``taosr.actors.step_judge``). Steps 1..k-1 are part of the
question so that the engine's prefix cache shares them across a response's five questions.

Training and held-out examples come from rows whose steps are annotated (by people, or by the
knowledge-base trace for generated data). The annotated reasoning's step k is a "Yes"; the same
reasoning with step k corrupted is a "No":
- steps 1 and 2: the query restatement or item description of a row about another query or item;
- steps 3 and 4: another verdict word (the reason text is kept, so the step contradicts itself);
- step 5: another label.
Steps 3-5 are judged only where the annotation names their verdict; steps 1-2 use the annotated
(or, for partial annotations, the CoT teacher's) text.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from taosr.formats import ATTRIBUTE_VERDICTS, CATEGORY_VERDICTS, Reasoning
from taosr.labels import LEVELS
from taosr.steps import NUM_STEPS

ANSWERS = ("Yes", "No")
JUDGE_SYSTEM = (
    "You check one step of a relevance judgement written for an e-commerce search: does the step "
    "state the query, the item, the category match, the attribute match or the decision correctly? "
    "Answer Yes or No."
)
# The annotation field that decides whether a step can be judged (steps 1-2 are always judged).
ANNOTATED_FIELD = {3: "category_verdict", 4: "attribute_verdict", 5: "decision"}


@dataclass(frozen=True)
class JudgeExample:
    query: str
    item_text: str
    step_lines: tuple[str, ...]  # steps 1..k; the question is about the last
    answer: str  # "Yes" or "No"

    @property
    def step(self) -> int:
        return len(self.step_lines)


def judge_messages(query: str, item_text: str, step_lines: Sequence[str]) -> list[dict]:
    """Chat messages asking whether the last of ``step_lines`` is correct."""
    if not 1 <= len(step_lines) <= NUM_STEPS:
        raise ValueError(f"a judge question needs 1 to {NUM_STEPS} step lines, got {len(step_lines)}")
    steps = "\n".join(step_lines)
    user = f"Query: {query}\n\nItem:\n{item_text}\n\nReasoning so far:\n{steps}\n\nIs step {len(step_lines)} correct?"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def judge_prompt(tokenizer, query: str, item_text: str, step_lines: Sequence[str]) -> str:
    return tokenizer.apply_chat_template(
        judge_messages(query, item_text, step_lines), tokenize=False, add_generation_prompt=True
    )


def answer_token_ids(tokenizer) -> list[int]:
    """First token of "Yes" and of "No" at the answer position; they must differ."""
    ids = [tokenizer.encode(answer, add_special_tokens=False)[0] for answer in ANSWERS]
    if ids[0] == ids[1]:
        raise ValueError(
            f"the tokenizer starts {ANSWERS} with the same token {ids[0]}; the GenRM cannot tell them apart"
        )
    return ids


def annotated_reasoning(
    annotation: Mapping | str | None, fallback: Reasoning | None
) -> tuple[Reasoning, tuple[int, ...]] | None:
    """The reasoning the annotation vouches for, and the steps that can be judged against it.

    A complete annotation (every Reasoning field, as the knowledge-base trace gives) stands alone;
    a partial one (say, only ``decision``) overrides the fields it names in ``fallback`` (the CoT
    teacher's reasoning for the row). None when neither gives a full reasoning."""
    given: Mapping | None = json.loads(annotation) if isinstance(annotation, str) else annotation
    if not given:
        return None
    fields: dict[str, Any] = {k: given[k] for k in Reasoning.__dataclass_fields__ if given.get(k) is not None}
    try:
        reasoning = (
            Reasoning(**fields)
            if len(fields) == len(Reasoning.__dataclass_fields__)
            else replace(fallback, **fields)
            if fallback is not None
            else None
        )
    except (TypeError, ValueError):
        return None  # an annotation with a verdict word or level we do not know is not usable
    if reasoning is None:
        return None
    judged = (1, 2) + tuple(step for step, field in ANNOTATED_FIELD.items() if field in fields)
    return reasoning, judged


def corrupt(reasoning: Reasoning, step: int, rng: random.Random, other: Reasoning | None = None) -> Reasoning | None:
    """``reasoning`` with step ``step`` made wrong; None when that is not possible (steps 1-2 need
    an ``other`` reasoning whose text differs)."""
    if step == 1:
        return replace(reasoning, query=other.query) if other and other.query != reasoning.query else None
    if step == 2:
        return replace(reasoning, item=other.item) if other and other.item != reasoning.item else None
    if step == 3:
        return replace(
            reasoning, category_verdict=rng.choice([v for v in CATEGORY_VERDICTS if v != reasoning.category_verdict])
        )
    if step == 4:
        return replace(
            reasoning, attribute_verdict=rng.choice([v for v in ATTRIBUTE_VERDICTS if v != reasoning.attribute_verdict])
        )
    if step == 5:
        return replace(reasoning, decision=rng.choice([level for level in LEVELS if level != reasoning.decision]))
    raise ValueError(f"steps are numbered 1 to {NUM_STEPS}, got {step}")


@dataclass(frozen=True)
class AnnotatedRow:
    query: str
    item_text: str
    reasoning: Reasoning
    judged_steps: tuple[int, ...]


def judge_examples(rows: Sequence[AnnotatedRow], rng: random.Random, every_step: bool = False) -> list[JudgeExample]:
    """Yes/No examples from annotated rows. Training (``every_step`` False): per row, one correct
    step and one corrupted step, drawn independently, so answers are balanced. Held-out
    evaluation (``every_step`` True): every judged step of every row, correct and corrupted."""
    examples = []
    for index, row in enumerate(rows):
        other = _other_row(rows, index, rng)
        candidates = [s for s in row.judged_steps if s > 2 or other is not None]
        if not candidates:
            continue
        clean = candidates if every_step else [rng.choice(candidates)]
        broken = candidates if every_step else [rng.choice(candidates)]
        lines = row.reasoning.step_lines()
        for step in clean:
            examples.append(JudgeExample(row.query, row.item_text, tuple(lines[:step]), "Yes"))
        for step in broken:
            wrong = corrupt(row.reasoning, step, rng, other)
            if wrong is not None:
                examples.append(JudgeExample(row.query, row.item_text, tuple(wrong.step_lines()[:step]), "No"))
    return examples


def _other_row(rows: Sequence[AnnotatedRow], index: int, rng: random.Random) -> Reasoning | None:
    """The reasoning of a row about another query and item (the source of step 1-2 corruptions)."""
    me = rows[index]
    for _ in range(8):
        pick = rows[rng.randrange(len(rows))]
        if pick.query != me.query and pick.reasoning.item != me.reasoning.item:
            return pick.reasoning
    return None


def answered_right(probs, examples) -> np.ndarray:
    """Whether P("Yes") > 0.5 agrees with each example's answer."""
    return np.asarray([(p > 0.5) == (e.answer == "Yes") for p, e in zip(probs, examples)], dtype=bool)


def step_accuracy(probs, examples) -> dict:
    """Accuracy of P("Yes") > 0.5 against the examples' answers: overall, per step, and on the
    correct and the corrupted steps apart (a judge that always says Yes gets 1.0 and 0.0)."""
    right = answered_right(probs, examples).astype(float)
    steps = np.asarray([e.step for e in examples])
    clean = np.asarray([e.answer == "Yes" for e in examples])
    return {
        "n": len(examples),
        "accuracy": float(right.mean()),
        "correct_steps": float(right[clean].mean()),
        "corrupted_steps": float(right[~clean].mean()),
        "yes_rate": float(np.mean(np.asarray(probs) > 0.5)),
        "per_step": {str(step): float(right[steps == step].mean()) for step in sorted(set(steps.tolist()))},
    }


def gain_over_base(base_probs, trained_probs, examples, seed: int) -> dict:
    """The trained GenRM's step accuracy minus its base's on the same held-out questions, with a
    bootstrap interval over (query, item) pairs (a pair's questions share one response), and
    whether SRPO may use it: only a judge that beats its base beyond noise carries information
    the base does not."""
    from taosr.metrics import paired_accuracy_gain

    gain = paired_accuracy_gain(
        answered_right(base_probs, examples),
        answered_right(trained_probs, examples),
        clusters=[f"{e.query}\n{e.item_text}" for e in examples],
        seed=seed,
    )
    gain["beats_base"] = bool(gain["beyond_noise"] and gain["delta"] > 0)
    return gain
