"""What a stage's driver hands its Ray Train workers, typed: the stage's own config section plus the
run's facts (seed, start model, where to log). ``fit`` fills in the storage fields and passes the
object to every worker as ``train_loop_config["inputs"]``. Only dataclasses and plain values live
here (Ray refs and actor handles in the RL inputs), so the object pickles to the workers as is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the GPU smoke script imports the trainer without omegaconf
    from taosr.config import GrpoConfig, LearnerConfig, TrainerConfig


@dataclass(kw_only=True)
class LoopInputs:
    seed: int
    model_path: str  # the model the stage starts from (made absolute by fit)
    model_info: dict  # the model record written next to the final weights (taosr.models.MODEL_INFO)
    log_dir: str | None = None  # the stage's output folder, local or s3:// (set by fit)
    s3_endpoint: str = ""
    echo_metrics: bool = False  # every metrics line on stdout too (--verbose)

    @property
    def section(self) -> LearnerConfig:
        """The stage's config section (its learner settings)."""
        raise NotImplementedError


@dataclass(kw_only=True)
class SupervisedInputs(LoopInputs):
    """SFT, DPO and the GenRM: a loss over a streamed dataset shard (``run_training``)."""

    trainer: TrainerConfig  # the stage's section (SftConfig, DpoConfig, GenrmConfig)
    num_examples: int  # rows in the training dataset, which sizes the step budget
    level_weights: dict[str, float] | None = None  # SFT's class weights of the decision token
    validation: dict | None = None  # the validation set scored while training (taosr.training.validation)

    @property
    def section(self) -> TrainerConfig:
        return self.trainer


@dataclass(kw_only=True)
class RlInputs(LoopInputs):
    """GRPO and SRPO: rollouts from the engines, rewards, policy updates (``rl_train_loop``)."""

    rl: GrpoConfig  # the stage's section (GrpoConfig, or SrpoConfig for one curriculum stage)
    stage: str = "grpo"
    validation: dict | None = None
    prompts_ref: Any = None  # ray ObjectRef of the training prompts
    annotations_ref: Any = None  # ray ObjectRef of the offline verifier's step annotations
    probe: dict = field(default_factory=dict)  # the prompt whose logprobs check each weight sync
    genrm: Any = None  # the GenRM actor handle, or None
    engines: list = field(default_factory=list)  # the rollout engines' actor handles
    engine_dtype: str = "bfloat16"

    @property
    def section(self) -> GrpoConfig:
        return self.rl
