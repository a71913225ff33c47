"""Rewards: offline accuracy rewards (rules, judges) and the in-step distillation reward.

Modules (importing this package imports no torch):

- ``specs``: the built-in reward specs (registered through ``plugin``).
- ``rules`` / ``normalize``: exact match, multiple choice, numeric, regex and their normalisation.
- ``jsd``: chunked fp32 Jensen-Shannon divergence over token logits (loss and reward), torch.
- ``distill``: ``JSDDistillReward`` (group reverse min-max of mean token JSD), torch.
- ``combine``: ``combine_rewards`` (weighted sum, raw and weighted kept for logging).
- ``testing``: ``check_accuracy_reward``, the conformance kit for accuracy-reward plugins.
"""
