"""GRPO scaled out on Ray: a driver, one learner actor and rollout actors (`wgrpo train --rollout-workers R`).

`driver` (the loop), `roles` (what each actor does), `shards` (how a round is cut) and `ray_cluster`, the only
module that imports ray (the `ray` extra). Importing this package imports no ray.
"""
