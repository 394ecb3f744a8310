"""The README and docs stand alone in a clone (issue 18): every relative link and every path named
in backticks points at a file of this repository, no link leaves it (``../shared``), and every
``#anchor`` names a heading of its target."""

import re
from pathlib import Path

from tests.support import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
PATH = re.compile(r"`((?:docs|config|station|calibration|systemd|scripts|tests|benchmarks)/[\w./-]+)`")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", text, re.M)}


def _problems(doc: Path, text: str | None = None) -> list[str]:
    """What is wrong with the links of ``doc`` (its ``text``, read from the file when None)."""
    text = doc.read_text() if text is None else text
    out = []
    if "../shared" in text or "shared/STANDARD" in text or "shared/ARCHITECTURE" in text:
        out.append(f"{doc.name}: points outside the project (../shared)")
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):      # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc.resolve()
        if REPO.resolve() not in dest.parents:
            out.append(f"{doc.name}: link {target} leaves the repository")
        elif file and not dest.exists():
            out.append(f"{doc.name}: link {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(text if not file else dest.read_text()):
            out.append(f"{doc.name}: link {target}: no heading #{anchor} in {dest.name}")
    for path in PATH.findall(text):
        path = path.rstrip(".")
        if "*" in path or "<" in path:
            continue
        if not (REPO / path).exists():
            out.append(f"{doc.name}: names `{path}`, which does not exist")
    return out


def test_readme_and_docs_links_resolve_inside_the_project():
    assert len(DOCS) >= 6
    assert [p for d in DOCS for p in _problems(d)] == []


def test_the_standard_and_architecture_live_in_docs():
    readme = (REPO / "README.md").read_text()
    assert "(docs/standard.md)" in readme and "(docs/architecture.md)" in readme
    standard = (REPO / "docs" / "standard.md").read_text()
    from station.competences import COMPETENCE_IDS
    assert all(f"| {cid} |" in standard for cid in COMPETENCE_IDS)


def test_the_checker_finds_a_broken_link():
    text = "[std](../../shared/STANDARD.md) [gone](nowhere.md) `docs/missing.md` [a](#nope) [b](#title)\n# Title\n"
    found = _problems(REPO / "docs" / "new.md", text)
    assert any("outside the project" in p for p in found)
    assert any("nowhere.md: no such file" in p for p in found)
    assert any("`docs/missing.md`" in p for p in found)
    assert any("no heading #nope" in p for p in found)
    assert not any("#title" in p for p in found)
