"""Lint and type findings are fixed, not hidden: every `noqa` names its codes and says why, and so does every
`type: ignore` (ruff and mypy themselves run in `make lint`, before the tests)."""

from __future__ import annotations

import io
import re
import subprocess
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOQA = re.compile(r"#\s*noqa\b(?P<rest>.*)$", re.I)
NOQA_OK = re.compile(r"^:\s*[A-Z]+[0-9]+(\s*,\s*[A-Z]+[0-9]+)*\s+-\s+\S")
IGNORE = re.compile(r"type:\s*ignore(?P<rest>.*)$")
IGNORE_OK = re.compile(r"^\[[a-z0-9-]+(\s*,\s*[a-z0-9-]+)*\]\s+#\s*\S")


def _python_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / p for p in out if (ROOT / p).is_file()]


def suppressions_without_reason(source: str) -> list[tuple[int, str]]:
    bad = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        if (m := NOQA.search(tok.string)) and not NOQA_OK.match(m["rest"]):
            bad.append((tok.start[0], tok.string))
        if (m := IGNORE.search(tok.string)) and not IGNORE_OK.match(m["rest"]):
            bad.append((tok.start[0], tok.string))
    return bad


def test_the_rule_itself():
    ok = "x = 1  # noqa: BLE001 - a check that cannot run has failed\ny = f()  # type: ignore[attr-defined]  # stub\n"
    assert suppressions_without_reason(ok) == []
    for bad in (
        "x = 1  # noqa\n",
        "x = 1  # noqa: BLE001\n",
        "x = 1  # noqa: BLE001 -\n",
        "y = f()  # type: ignore\n",
        "y = f()  # type: ignore[attr-defined]\n",
    ):
        assert suppressions_without_reason(bad), bad


def test_every_suppression_names_its_codes_and_its_reason():
    files = _python_files()
    assert len(files) > 100
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {text}"
        for path in files
        for line, text in suppressions_without_reason(path.read_text())
    ]
    assert not bad, "a noqa or type: ignore without codes and a reason:\n" + "\n".join(bad)
