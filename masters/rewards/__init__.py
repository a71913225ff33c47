"""Rewards: offline accuracy rewards (rules, judges) and the in-step distillation reward."""
