"""Every relative link in README.md and docs/ names a file or folder inside the repository."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_EXTERNAL = ("http://", "https://", "mailto:")
# A Markdown file named in code (`docs/API.md`): from the repository root or from the naming file's folder.
_MENTION = re.compile(r"`([^`\s]+\.md)`")


def broken_links(markdown: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in _LINK.findall(markdown.read_text(encoding="utf-8")):
        if target.startswith(_EXTERNAL) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        resolved = (markdown.parent / path).resolve()
        if not resolved.is_relative_to(root):
            problems.append(f"{markdown.relative_to(root)}: {target} points outside the repository")
        elif not resolved.exists():
            problems.append(f"{markdown.relative_to(root)}: {target} does not exist")
    for target in _MENTION.findall(markdown.read_text(encoding="utf-8")):
        candidates = [(markdown.parent / target).resolve(), (root / target).resolve()]
        inside = [c for c in candidates if c.is_relative_to(root)]
        if not any(c.exists() for c in inside):
            problems.append(f"{markdown.relative_to(root)}: `{target}` is not a file in the repository")
    return problems


def test_readme_and_docs_link_only_to_files_in_the_repository() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    problems = [problem for document in documents for problem in broken_links(document)]
    assert problems == []


def test_a_link_outside_the_repository_or_to_nothing_is_caught(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("x")
    page = tmp_path / "README.md"
    page.write_text("[a](docs/there.md) [b](../shared/API.md) [c](docs/gone.md) [d](https://x.org) [e](#top)\n"
                    "fixed by `shared/API.md`; see `docs/there.md`")
    assert broken_links(page, tmp_path) == [
        "README.md: ../shared/API.md points outside the repository",
        "README.md: docs/gone.md does not exist",
        "README.md: `shared/API.md` is not a file in the repository",
    ]
