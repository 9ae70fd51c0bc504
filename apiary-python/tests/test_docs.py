"""Every Python block of the README and docs/ runs as written, each in an empty folder."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list[pytest.param]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text[: match.start()].count("\n") + 1
            found.append(pytest.param(match.group(1), id=f"{page.relative_to(ROOT)}:{line}"))
    return found


def test_the_pages_hold_python() -> None:
    assert len(blocks()) >= 4


@pytest.mark.parametrize("code", blocks())
def test_python_block_runs(code: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("APIARY_STORAGE", raising=False)
    monkeypatch.setenv("APIARY_STATE_DIR", str(tmp_path / "state"))
    exec(compile(code, "<docs>", "exec"), {"__name__": "__docs__"})
