"""scikit-learn's own MLP tests, run against ``mlp.MLPClassifier`` and ``mlp.MLPRegressor``.

The test file is the one shipped inside the installed scikit-learn
(``sklearn/neural_network/tests/test_mlp.py``), never a copy kept here: one
line of it, the import of scikit-learn's estimators, is replaced by the import
of mlp's, and nothing else changes.  The rewritten file runs in a separate
pytest process in a temporary folder, next to a ``conftest.py`` that gives it
what scikit-learn's own conftest would (the ``global_random_seed`` fixture)
and a time limit per test.  The outcomes come back as JUnit XML.

A test that crashes the process or runs past its limit is recorded as failed
with the end of the process's output, and the run restarts without it, so one
bad test never hides the outcomes of the others.

Every scikit-learn test that does not pass must be listed, with its reason, in
:data:`EXPECTED_FAILURES`; a listed test that passes (or no longer exists)
fails this module too, so the list stays honest.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

#: The line of scikit-learn's test file that is replaced, and what replaces it.
SKLEARN_IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor"
MLP_IMPORT = "from mlp import MLPClassifier, MLPRegressor"

#: Of the tests the file holds (59 in scikit-learn 1.9.1), at least this many must pass.
MIN_PASSING = 55
#: A test running longer than this is stopped (its process exits) and recorded as failed.
TEST_TIMEOUT_S = 180
#: One pytest process may run this long at most (scikit-learn's own estimators take about 10 s for all).
RUN_TIMEOUT_S = 1200
#: Restarts after a crashed or stopped test before giving up.
MAX_RESTARTS = 5

#: scikit-learn tests that do not pass against mlp's estimators, with the reason.  Only tests that
#: reach into scikit-learn's private methods or attributes belong here; a missing feature does not.
EXPECTED_FAILURES: dict[str, str] = {}

# Written next to the copy of the test file.  scikit-learn's conftest parametrizes
# ``global_random_seed`` from SKLEARN_TESTS_GLOBAL_RANDOM_SEED and uses 42 when it is unset; the copy
# always runs with 42, so the test ids are scikit-learn's default ones.  The time limit uses
# faulthandler (part of the standard library): it prints every thread's stack and ends the process.
_CONFTEST = '''\
"""What scikit-learn's conftest gives its MLP tests, a time limit per test, and a progress log."""
import faulthandler

PROGRESS = {progress!r}
TEST_TIMEOUT_S = {timeout!r}


def pytest_generate_tests(metafunc):
    if "global_random_seed" in metafunc.fixturenames:
        metafunc.parametrize("global_random_seed", [42])


def _log(event, nodeid):
    # One open per event: a process that dies mid-test must leave the line that names the test.
    with open(PROGRESS, "a") as f:
        f.write(event + " " + nodeid + "\\n")


def pytest_runtest_logstart(nodeid, location):
    _log("start", nodeid)
    faulthandler.dump_traceback_later(TEST_TIMEOUT_S, exit=True)


def pytest_runtest_logfinish(nodeid, location):
    faulthandler.cancel_dump_traceback_later()
    _log("end", nodeid)
'''


@dataclass(frozen=True)
class Outcome:
    """How one test ended: ``passed``, or not with ``message`` (the error's first line, or why it was skipped)."""

    passed: bool
    message: str = ""


def installed_test_file() -> Path:
    """``sklearn/neural_network/tests/test_mlp.py`` of the installed scikit-learn (skips when it is not shipped)."""
    sklearn = pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install -e '.[test]')")
    path = Path(sklearn.__file__).resolve().parent / "neural_network" / "tests" / "test_mlp.py"
    if not path.is_file():
        pytest.skip(f"this scikit-learn {sklearn.__version__} installation ships without its tests ({path})")
    return path


def redirected_source(source: str, replacement: str = MLP_IMPORT) -> str:
    """``source`` with the line :data:`SKLEARN_IMPORT` replaced by ``replacement``; nothing else changes.

    Raises ``ValueError`` unless the line occurs exactly once (as a whole line).
    """
    lines = source.splitlines(keepends=True)
    at = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == SKLEARN_IMPORT]
    if len(at) != 1:
        raise ValueError(f"scikit-learn's test file: expected the line {SKLEARN_IMPORT!r} exactly once, "
                         f"found it {len(at)} times; the redirection to mlp's estimators needs updating")
    ending = lines[at[0]][len(SKLEARN_IMPORT):]
    lines[at[0]] = replacement + ending
    return "".join(lines)


def _first_line(text: str | None, limit: int = 300) -> str:
    lines = (text or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[:limit] + "…"


def parse_junit(path: Path) -> dict[str, Outcome]:
    """Outcomes by test id (``name[params]``, as pytest shows it) from a pytest JUnit XML file.

    A collection error appears as a test named after the module, with the error as its message.
    """
    outcomes: dict[str, Outcome] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        problems = [child for child in case if child.tag in ("failure", "error", "skipped")]
        if not problems:
            outcomes.setdefault(name, Outcome(True))
            continue
        first = problems[0]
        text = _first_line(first.get("message")) or _first_line(first.text)
        if first.tag == "error":  # "collection failure", "failed on setup with ...": add the exception itself
            raised = [line[1:].strip() for line in (first.text or "").splitlines() if line.startswith("E ")]
            text += f" ({_first_line(raised[-1])})" if raised and raised[-1] not in text else ""
        kind = {"skipped": "skipped", "error": "error"}.get(first.tag, "failed")
        outcomes[name] = Outcome(False, f"{kind}: {text}")
    return outcomes


def _tail(output: str, lines: int = 15) -> str:
    return "\n".join(output.strip().splitlines()[-lines:])


def _unfinished_test(progress: Path) -> str | None:
    """The node id of the test that was running when the process ended, if one was."""
    running: str | None = None
    if progress.is_file():
        for line in progress.read_text().splitlines():
            event, _, nodeid = line.partition(" ")
            running = nodeid if event == "start" else None
    return running


def run_test_file(source: str, folder: Path, *, test_timeout_s: float = TEST_TIMEOUT_S,
                  run_timeout_s: float = RUN_TIMEOUT_S, max_restarts: int = MAX_RESTARTS) -> dict[str, Outcome]:
    """Run the pytest module ``source`` in a fresh pytest process in ``folder``; outcomes by test id.

    A test that crashes the process or exceeds ``test_timeout_s`` is recorded
    as failed with the end of the process's output, and the module runs again
    without it (at most ``max_restarts`` times).  ``AssertionError`` when the
    process ends without results and no test was running (a crash while
    collecting, say).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pytest.ini").write_text("[pytest]\n")  # this folder is the root: no project settings apply
    (folder / "test_mlp.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))  # this checkout's mlp
    lost: dict[str, Outcome] = {}
    for attempt in range(max_restarts + 1):
        progress, xml = folder / f"progress-{attempt}.log", folder / f"junit-{attempt}.xml"
        (folder / "conftest.py").write_text(_CONFTEST.format(progress=str(progress), timeout=test_timeout_s))
        argv = [sys.executable, "-m", "pytest", "test_mlp.py", "-p", "no:cacheprovider", "-q", "--no-header",
                f"--junitxml={xml}", *(f"--deselect={nodeid}" for nodeid in lost)]
        try:
            run = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=run_timeout_s)
            output, ended = run.stdout + run.stderr, f"exit code {run.returncode}"
        except subprocess.TimeoutExpired as exc:
            # On POSIX the output gathered so far comes back as bytes, whatever ``text`` says.
            parts = (exc.stdout, exc.stderr)
            output = "".join(p.decode(errors="replace") if isinstance(p, bytes) else (p or "") for p in parts)
            ended = f"stopped after {run_timeout_s} s"
        if xml.is_file():
            return {**parse_junit(xml), **{nodeid.partition("::")[2]: o for nodeid, o in lost.items()}}
        running = _unfinished_test(progress)
        if running is None:
            raise AssertionError(f"the pytest process ended without results ({ended}) while no test was running:\n"
                                 f"{_tail(output)}")
        lost[running] = Outcome(False, f"crashed or ran past {test_timeout_s} s ({ended}): {_tail(output, 8)}")
    raise AssertionError(f"gave up after {max_restarts} restarts; tests that crashed or ran too long: {sorted(lost)}")


def judge(outcomes: dict[str, Outcome], expected: dict[str, str], min_passing: int) -> tuple[str, list[str]]:
    """The one-line summary, and every problem: too few passing, unexpected failures, stale expected ones."""
    passed = sum(o.passed for o in outcomes.values())
    summary = f"{passed} of {len(outcomes)} scikit-learn MLP tests pass"
    problems = [f"{name}: {o.message}" for name, o in sorted(outcomes.items())
                if not o.passed and name not in expected]
    problems += [f"{name}: passes now; remove it from EXPECTED_FAILURES" for name in sorted(expected)
                 if name in outcomes and outcomes[name].passed]
    problems += [f"{name}: listed in EXPECTED_FAILURES but not collected (renamed or removed upstream?)"
                 for name in sorted(expected) if name not in outcomes]
    if passed < min_passing:
        problems.insert(0, f"only {passed} pass; at least {min_passing} must")
    return summary, problems


def test_sklearn_mlp_tests_pass_against_mlp(tmp_path):
    source = redirected_source(installed_test_file().read_text())
    summary, problems = judge(run_test_file(source, tmp_path), EXPECTED_FAILURES, MIN_PASSING)
    print(summary)
    assert not problems, summary + "; not as expected:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_the_judged_estimators_are_mlp_own(name):
    """The suite above must judge mlp's code: neither the class nor its ``fit`` may come from scikit-learn."""
    installed_test_file()  # skips without scikit-learn, as the suite does
    import mlp

    cls = getattr(mlp, name)
    where = {"class": cls.__module__, "fit": inspect.getmodule(cls.fit).__name__}
    assert all(module.split(".")[0] == "mlp" for module in where.values()), f"mlp.{name}: defined in {where}"


# ------------------------------------------------------------- the harness itself
def test_redirection_changes_exactly_the_import_line():
    source = f"import numpy as np\n{SKLEARN_IMPORT}\r\nfrom sklearn.neural_network import MLPClassifier\n"
    assert redirected_source(source) == (f"import numpy as np\n{MLP_IMPORT}\r\n"
                                         "from sklearn.neural_network import MLPClassifier\n")
    for broken in ("import numpy\n", f"{SKLEARN_IMPORT}\n{SKLEARN_IMPORT}\n", f"    {SKLEARN_IMPORT}\n"):
        with pytest.raises(ValueError, match="exactly once"):
            redirected_source(broken)


def test_a_crash_or_a_hang_fails_one_test_and_the_others_still_report(tmp_path):
    source = textwrap.dedent("""
        import os, time
        import pytest

        def test_passes(global_random_seed):
            assert global_random_seed == 42

        def test_crashes():
            os._exit(3)

        def test_hangs():
            time.sleep(60)

        def test_fails():
            assert 1 == 2, "one is not two"

        @pytest.mark.parametrize("n", [1, 2])
        def test_after(n):
            assert n
    """)
    outcomes = run_test_file(source, tmp_path, test_timeout_s=3)
    assert sorted(name for name, o in outcomes.items() if o.passed) == [
        "test_after[1]", "test_after[2]", "test_passes[42]"]
    assert "exit code 3" in outcomes["test_crashes"].message
    assert "ran past 3 s" in outcomes["test_hangs"].message
    assert outcomes["test_fails"].message.startswith("failed: AssertionError: one is not two")


def test_judge_names_unexpected_and_stale_entries():
    outcomes = {"a": Outcome(True), "b": Outcome(False, "failed: boom"), "c": Outcome(False, "failed: private"),
                "d": Outcome(True)}
    summary, problems = judge(outcomes, {"c": "private", "d": "private", "gone": "private"}, min_passing=3)
    assert summary == "2 of 4 scikit-learn MLP tests pass"
    assert problems == ["only 2 pass; at least 3 must", "b: failed: boom",
                        "d: passes now; remove it from EXPECTED_FAILURES",
                        "gone: listed in EXPECTED_FAILURES but not collected (renamed or removed upstream?)"]
