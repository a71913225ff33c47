"""The conformance kit plugin authors run in their own CI.

One call::

    from masters.testing import check_adapter
    check_adapter("my_family", model_dir="tests/tiny-my-family")

or one test per (adapter, check), parametrised over every registered adapter, by importing the
test into a test module (pytest collects it)::

    from masters.testing import test_adapter_conformance  # noqa: F401
"""

from __future__ import annotations

from masters.testing.adapters import (
    CHECKS,
    ConformanceError,
    allow_plugins,
    check_adapter,
    registered_adapters,
    run_check,
    tiny_checkpoint,
)

__all__ = ["CHECKS", "ConformanceError", "allow_plugins", "check_adapter", "registered_adapters", "run_check",
           "tiny_checkpoint", "test_adapter_conformance"]


try:  # the parametrised test exists where pytest does; check_adapter works without it
    import pytest
except ImportError:  # pragma: no cover
    pass
else:

    @pytest.mark.parametrize("check", CHECKS)
    @pytest.mark.parametrize("adapter_name", registered_adapters())
    def test_adapter_conformance(adapter_name: str, check: str) -> None:
        """Every registered adapter passes every conformance check on its tiny checkpoint(s)."""
        run_check(adapter_name, check)
