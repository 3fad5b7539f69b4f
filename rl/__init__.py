"""GRPO over the engine: tasks, rewards, sandbox, rollout, advantages, loss, trainer. Never imports wgpu."""
