"""The ONNX backend node-test suite through ember.backend, against a list that only shrinks.

A case listed in expected_failures.txt must still fail (when it starts passing, delete its
line); a case not listed must pass. `make conformance` prints the count.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import conformance  # noqa: E402

CASES = conformance.load_cases()
EXPECTED = conformance.read_expected()


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node(case):
    name, reason = conformance.run_case(case)
    if name in EXPECTED:
        assert reason is not None, (f"{name} passes now: remove it from "
                                    "tests/conformance/expected_failures.txt")
    else:
        assert reason is None, reason


def test_expected_list_names_real_cases():
    names = {c.name for c in CASES}
    stale = sorted(set(EXPECTED) - names)
    assert not stale, f"expected_failures.txt names unknown cases: {stale[:5]}"
