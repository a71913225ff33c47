"""The conformance kit, run over every registered adapter (one test per adapter and check)."""

from masters.testing import test_adapter_conformance  # noqa: F401  (collected by pytest)
