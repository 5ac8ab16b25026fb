"""The README stays a ten-minute read, its test command is CI's, and no link in it or in docs/ is dead."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]

#: a Markdown link or image: [text](target) or [text](target "title")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, each space a hyphen."""
    text = re.sub(r"<[^>]+>", "", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors a page's headings make (a repeated heading gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def dead_links(page: Path) -> list[str]:
    """Each relative link of a page whose file, or whose anchor in a Markdown file, does not exist."""
    dead = []
    for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not checked offline
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            dead.append(f"{page.relative_to(REPO)}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            dead.append(f"{page.relative_to(REPO)}: {target} (no heading makes #{anchor})")
    return dead


def test_the_readme_is_a_ten_minute_read() -> None:
    """At most 250 lines: everything else belongs in a docs/ page."""
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 250, f"README.md has {lines} lines; move detail into a docs/ page and link it"


def test_every_relative_link_resolves() -> None:
    """Every relative link in README.md and docs/*.md names an existing file, and an existing heading if it names one."""
    assert len(PAGES) > 1, "docs/ holds no Markdown page"
    dead = [entry for page in PAGES for entry in dead_links(page)]
    assert not dead, "dead links:\n" + "\n".join(dead)


def test_every_docs_page_is_reachable_from_the_index() -> None:
    """docs/index.md links every page of docs/, so a new page is never orphaned."""
    index = REPO / "docs" / "index.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in LINK.findall(index.read_text(encoding="utf-8"))}
    orphans = [p.name for p in PAGES[1:] if p != index and p.resolve() not in linked]
    assert not orphans, f"docs/index.md does not link {orphans}"


def test_ci_runs_the_readmes_test_command() -> None:
    """The quick start's test command is the one .ci/run runs, so the README never promises another check."""
    readme = README.read_text(encoding="utf-8")
    match = re.search(r"^pip install -e '\.\[test\]' && (.+)$", readme, re.MULTILINE)
    assert match, "README.md's quick start lost its test command (pip install -e '.[test]' && ...)"
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert match.group(1).strip() in [line.strip() for line in ci], (
        f"README.md's test command `{match.group(1)}` is not a line of .ci/run"
    )
    assert "python -m pip install -e '.[test]'" in ci, ".ci/run no longer installs the test extras as the README does"
