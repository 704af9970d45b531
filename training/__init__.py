"""taosr.training: the Ray Train + DeepSpeed side every training stage shares: the supervised fit
loop (``trainer``), resumable checkpoints, the RL loop (``rl``), its policy update, and what a
GRPO-family stage does around that loop (``rl_stage``). Imports the core, datasets and actors;
never ``taosr.ray_jobs``."""
