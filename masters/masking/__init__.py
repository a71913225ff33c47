"""Teacher masking: maskers (which weights), and the runtime that moves between levels exactly.

Importing this package stays light; the runtime (torch) is imported on first use::

    from masters.masking import MaskedTeacher
    teacher = MaskedTeacher.from_model(model, run_spec.masker, levels=schedule.levels())
    teacher.set_level(level)
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "MaskedTeacher": "masters.masking.runtime",
    "mask_teacher": "masters.masking.runtime",
    "SparsityReport": "masters.masking.report",
    "collect_input_norms": "masters.masking.calibration",
    "find_maskable": "masters.masking.scope",
    "select_scope": "masters.masking.scope",
    "unwrap_model": "masters.masking.scope",
    "export_masked_checkpoint": "masters.masking.export",
    "UnitLayout": "masters.masking.layout",
    "LayoutError": "masters.masking.layout",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
