"""Every kit over every built-in component: parametrised by the masters pytest plugin over what
masters-distill registers, so a new built-in is checked the moment it registers.

Adapters are left to ``tests/adapters/test_conformance.py``, which runs the same kit over every
registered adapter (10 checks on 7 families, about 12 s): running it twice would double that.
"""

import pytest

KINDS = ["masker", "schedule", "reward", "objective", "task", "backend"]


@pytest.mark.masters_conformance(distribution="masters-distill", kinds=KINDS)
def test_builtin_conformance(masters_case):
    masters_case.run()


def test_every_builtin_of_every_kind_is_collected():
    from masters.plugins import get_components
    from masters.testing.conformance import conformance_cases

    cases = conformance_cases("masters-distill")
    components = get_components()
    for kind in components.registries:
        assert {c.name for c in cases if c.kind == kind} == set(components.registry(kind).names()), kind
