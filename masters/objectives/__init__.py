"""Training objectives: what the training step optimises (a component kind).

- ``specs``: the built-in objective specs (``masters``, ``progressive_kd``, ``naive_kd``, ``sft``),
  each declaring what it needs from the step (``requirements()``); torch-free.
- ``builtin``: their implementations (``loss(StepInputs) -> ObjectiveLoss``), torch.
- ``losses``: the Masters objective as pure tensor functions (advantages, policy, KL, JSD).
- ``plugin``: registers the built-ins through ``masters_register_objectives``.
"""
