"""The training application over GRPO's algorithm: trainers, checkpoints, schedules, evaluation, logs and
the demo pipeline."""
