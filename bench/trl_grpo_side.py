"""TRL's GRPOTrainer side of bench/grpo_bench.py. Runs in the benchmark's own environment
(bench/.venv-trl, which has TRL; the project's environment does not), never imported by taosr.

Same model, prompts, reward (taosr.rewards.outcome_reward, imported from the repo as plain
Python), group size, prompts per step, micro-batch, completion length, sampling, learning rate,
KL weight, clip and token-level loss as the taosr side. Prints one JSON line per optimizer step:
wall seconds, seconds in generation + reward scoring (TRL does both in
``_generate_and_score_completions``), generated tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo: `taosr` is its folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--settings",
        required=True,
        help="JSON from bench/grpo_bench.py: model, prompts, steps, prompts_per_step, group_size, "
        "micro_batch, max_new_tokens, lr, kl, threads, seed, out_dir",
    )
    args = argparse.Namespace(**json.loads(parser.parse_args().settings))

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from taosr.rewards import outcome_reward

    torch.set_num_threads(args.threads)
    rows = [json.loads(line) for line in open(args.prompts)]
    dataset = Dataset.from_list(rows)

    def reward(completions, label, **_):
        return [outcome_reward(text, int(gold)).reward for text, gold in zip(completions, label)]

    sequences = args.prompts_per_step * args.group_size
    config = GRPOConfig(
        output_dir=args.out_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=sequences // args.micro_batch,
        num_generations=args.group_size,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        learning_rate=args.lr,
        beta=args.kl,
        epsilon=0.2,
        loss_type="dapo",
        scale_rewards="group",
        lr_scheduler_type="constant",
        bf16=True,
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    trainer = GRPOTrainer(
        model=model, args=config, train_dataset=dataset, reward_funcs=reward, processing_class=tokenizer
    )

    phase = {"generate_s": 0.0, "generated_tokens": 0}
    generate = trainer._generate_and_score_completions

    def timed_generate(*a, **kw):
        started = time.time()
        out = generate(*a, **kw)
        phase["generate_s"] += time.time() - started
        phase["generated_tokens"] += int(out["completion_mask"].sum())
        return out

    trainer._generate_and_score_completions = timed_generate

    class StepTimes(TrainerCallback):
        """Wall time from one optimizer step's end to the next's: everything the step did."""

        def on_train_begin(self, *_, **__):
            self.last = time.time()

        def on_step_end(self, _args, state, *_, **__):
            now = time.time()
            print(json.dumps({"trl_step": state.global_step, "step_s": now - self.last, **phase}), flush=True)
            self.last = now
            phase.update(generate_s=0.0, generated_tokens=0)

    trainer.add_callback(StepTimes())
    trainer.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
