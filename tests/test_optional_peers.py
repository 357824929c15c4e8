"""Optional peers (PyTorch, CuPy) reach the tests only through ``conftest.py``'s fixtures.

So a missing peer skips each test that needs it, with a reason, and never a
whole module; and every such test carries the peer's marker, which is how CI
runs the PyTorch tests on their own after running the suite without PyTorch
(``pytest -m needs_torch``).
"""

from __future__ import annotations

import re
from pathlib import Path

from conftest import PEER_MARKERS, pytest_collection_modifyitems

TESTS = Path(__file__).resolve().parent
#: an import of a peer, or a skip on one, written into a test file instead of taking its fixture
_DIRECT = re.compile(r"^\s*(import|from)\s+(torch|cupy)\b|importorskip\(\s*[\"'](torch|cupy)\b")


def test_test_files_take_peers_from_fixtures_only():
    found = [f"{path.name}:{n}: {line.strip()}"
             for path in sorted(TESTS.glob("*.py")) if path.name != "conftest.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if _DIRECT.search(line)]
    assert found == [], "take the conftest fixture instead (it skips per test, with a reason, and marks the test)"


def test_a_test_taking_a_peer_fixture_is_marked_for_it():
    class Item:
        def __init__(self, *fixturenames):
            self.fixturenames, self.markers = fixturenames, []

        def add_marker(self, marker):
            self.markers.append(marker)

    uses, ignores = Item("rng", "torch"), Item("rng", "tmp_path")
    pytest_collection_modifyitems(None, [uses, ignores])
    assert uses.markers == ["needs_torch"] and ignores.markers == []
    assert PEER_MARKERS == {"torch": "needs_torch"}
