"""The repository stands alone: a clone with nothing beside it has everything its code, tests and docs name.

Two checks, each on every text file of src/, tests/, bench/, fuzz/, scripts/, .ci/ and docs/, and on the README:

- nothing reads or cites a path beside the checkout: the reference directory that sits beside some checkouts
  (reached as ``..`` from the root, or as a path part built from a ``parent``), or the reference notes by their
  names there (``DESIGN.md``, ``wolkvox-agentbox.md``, ``PEERS.md``, ``sip-torture/``). The project's own copies
  are ``docs/design.md``, ``docs/agentbox-contract.md``, ``docs/peers.md`` and ``tests/sip/torture/``;
- every ``docs/<name>.md`` that is cited exists, and a citation of a section (``docs/design.md, "Storage"``) names
  a heading of that document.

Both checkers are plain functions over text, so that the last tests can show them failing on a bad sample.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("src", "tests", "bench", "fuzz", "scripts", ".ci")
DOC_FILES = ("README.md",)
DOC_DIRS = ("docs",)
SKIP_DIRS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "work", "rfc4475",
             "corpus"}

# What a path beside the checkout looks like, in code or in prose. The directory's name is kept in one constant so
# that this file does not itself read as a path beside the checkout.
BESIDE_DIR = "shared"
BESIDE = (
    ("a path into the reference directory beside the checkout", re.compile(rf"\.\./{BESIDE_DIR}\b")),
    ("the reference directory beside the checkout, built from a parent",
     re.compile(rf"""\.parents?\b(\[\d+\])?[^\n#]*?/\s*["']{BESIDE_DIR}["']""")),
    ("the reference design notes (use docs/design.md)", re.compile(r"(?<![\w/])DESIGN\.md\b")),
    ("the reference contract (use docs/agentbox-contract.md)", re.compile(r"\bwolkvox-agentbox\.md\b")),
    ("the reference notes on peers (use docs/peers.md)", re.compile(r"(?<![\w/])PEERS\.md\b")),
    ("the reference torture corpus (use tests/sip/torture/)", re.compile(r"\bsip-torture\b")),
)
DOC_CITATION = re.compile(r"""\bdocs/([\w.-]+\.md)(?:,?\s+"([^"]+)")?""")


def text_files(dirs: tuple[str, ...], files: tuple[str, ...] = ()) -> list[Path]:
    """The UTF-8 text files under ``dirs`` (caches, fuzz work directories and binary corpora left out)."""
    found = [ROOT / name for name in files if (ROOT / name).is_file()]
    for top in dirs:
        for path in sorted((ROOT / top).rglob("*")):
            parts = path.relative_to(ROOT).parts[:-1]
            # build output (an editable install's egg-info copies the README as it was) is not the project's text
            if not path.is_file() or SKIP_DIRS & set(parts) or any(p.endswith(".egg-info") for p in parts):
                continue
            found.append(path)
    return found


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def beside_the_checkout(text: str) -> list[str]:
    """Each reference to a path beside the checkout in ``text``, as "line N: what it is: the text"."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in BESIDE:
            if pattern.search(line):
                found.append(f"line {number}: {what}: {line.strip()}")
    return found


def headings(markdown: str) -> list[str]:
    return [line.lstrip("#").strip() for line in markdown.splitlines() if line.startswith("#")]


def unresolved_citations(text: str, docs: dict[str, str]) -> list[str]:
    """Each ``docs/<name>.md`` citation in ``text`` whose document is not in ``docs`` (name -> its text), or whose
    quoted section is the start of no heading of it. A citation may wrap over lines and comment markers."""
    flat = re.sub(r"\s*\n\s*(?:#\s*|//\s*|\*\s*)?", " ", text)
    problems = []
    for match in DOC_CITATION.finditer(flat):
        name, section = match.group(1), match.group(2)
        if name not in docs:
            problems.append(f"docs/{name} does not exist")
        elif section is not None and not any(h.startswith(section) for h in headings(docs[name])):
            problems.append(f'docs/{name} has no section "{section}"')
    return problems


def repository_docs() -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted((ROOT / "docs").glob("*.md"))}


def test_nothing_reads_or_cites_a_path_beside_the_checkout() -> None:
    problems = []
    for path in text_files(CODE_DIRS + DOC_DIRS, DOC_FILES):
        text = read_text(path)
        if text is not None and path.resolve() != Path(__file__).resolve():
            problems += [f"{path.relative_to(ROOT)} {found}" for found in beside_the_checkout(text)]
    assert not problems, "\n".join(problems)


def test_every_cited_document_exists_with_its_sections() -> None:
    docs = repository_docs()
    assert {"design.md", "agentbox-contract.md", "internals.md"} <= set(docs)
    problems = []
    for path in text_files(CODE_DIRS + DOC_DIRS, DOC_FILES):
        text = read_text(path)
        if text is not None and path.resolve() != Path(__file__).resolve():
            problems += [f"{path.relative_to(ROOT)}: {found}" for found in unresolved_citations(text, docs)]
    assert not problems, "\n".join(problems)


def test_the_torture_messages_are_in_the_repository() -> None:
    corpus = ROOT / "tests" / "sip" / "torture"
    assert len(list((corpus / "rfc4475").glob("*.dat"))) == 50
    assert (corpus / "expected.tsv").is_file() and (corpus / "README.md").is_file()


# --- the checkers can fail ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    f'CORPUS = Path(__file__).resolve().parents[2].parent / "{BESIDE_DIR}" / "x"',
    f'DOC = TESTS.parents[1] / "{BESIDE_DIR}" / "contract.md"',
    f"TORTURE_DIR = REPO.parent / '{BESIDE_DIR}' / 'x'",
    f"see ../{BESIDE_DIR}/notes.md beside the clone",
    '"""The transfer table (DESIGN.md, "Transfer semantics")."""',
    "# the contract's rows, shared/wolkvox-agentbox.md",
    "far below the ceilings in PEERS.md",
])
def test_the_beside_checker_sees_a_bad_sample(line: str) -> None:
    assert beside_the_checkout(f"ok\n{line}\n") != []


@pytest.mark.parametrize("line", [
    '"""The transfer table (docs/design.md, "Transfer semantics")."""',
    'CORPUS = Path(__file__).resolve().parent / "torture"',
    'api="../hang"',
    "state shared between calls",
    "see docs/peers.md",
])
def test_the_beside_checker_lets_good_lines_pass(line: str) -> None:
    assert beside_the_checkout(line) == []


def test_the_citation_checker_sees_missing_documents_and_sections() -> None:
    docs = {"design.md": "# Notes\n\n## Transfer semantics\n\n## What the server sends, and where\n"}
    good = ('(docs/design.md, "Transfer semantics") and (docs/design.md, "What the server\n'
            '# sends, and where") and docs/design.md')
    assert unresolved_citations(good, docs) == []
    assert unresolved_citations('see docs/design.md, "Storage"', docs) == ['docs/design.md has no section "Storage"']
    assert unresolved_citations("see docs/nowhere.md", docs) == ["docs/nowhere.md does not exist"]
