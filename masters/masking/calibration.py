"""Input-feature norms for activation-aware masking (Wanda): ``||X_j||_2`` over a calibration batch."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from masters.errors import MastersError


def collect_input_norms(
    model: torch.nn.Module, tensors: Mapping[str, Any], run: Callable[[], Any]
) -> dict[str, torch.Tensor]:
    """Run ``run()`` (forwards on calibration data) and return, per weight name, the L2 norm of each
    input feature seen by the linear layer that owns it (float32, shape ``[in_features]``).

    ``tensors`` maps names to weights (or ``(part, weight)`` pairs), as the masking scope gives them.
    """
    from masters.masking.scope import unwrap_model

    model = unwrap_model(model)
    wanted = {id(t[1] if isinstance(t, tuple) else t): name for name, t in tensors.items()}
    sums: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name: str) -> Any:
        def hook(module: torch.nn.Module, args: Any) -> None:
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            total = (x * x).sum(dim=0)
            sums[name] = sums[name] + total if name in sums else total
        return hook

    for module in model.modules():
        weight = module._parameters.get("weight")
        if weight is not None and id(weight) in wanted:
            if not isinstance(module, torch.nn.Linear):
                raise MastersError(
                    f"{wanted[id(weight)]} belongs to a {type(module).__name__}, not a Linear layer",
                    where="collect_input_norms", fix="exclude it from the scope of an activation-aware masker",
                )
            handles.append(module.register_forward_pre_hook(hook_for(wanted[id(weight)])))
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in wanted.values() if name not in sums]
    if missing:
        raise MastersError(f"{len(missing)} weights saw no calibration input (first: {missing[0]})",
                           where="collect_input_norms", fix="run a calibration batch that reaches every part (images too)")
    return {name: total.sqrt() for name, total in sums.items()}
