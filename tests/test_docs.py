"""The documentation holds: every relative link and #anchor of README.md, BENCHMARKS.md and docs/ resolves (GitHub's
anchors), every repository path they name exists, every ``python -m helpers ...`` command in their code blocks parses
with the CLI's own parser, and no page points outside the repository."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from helpers.__main__ import build_parser
from helpers.core import paths

ROOT = paths.REPO_ROOT
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
# Inline code and code-block tokens that start like this name a tracked file or folder (data/ and outputs/ are
# written by the pipeline, so only data/README.md is checked there).
TRACKED = ("helpers/", "configs/", "notebooks/", "pipeline/", "tests/", "benchmarks/", "docs/", "data/README.md")
ROOT_FILES = ("README.md", "BENCHMARKS.md", "CHANGELOG.md", "LICENSE", "CITATION.cff", "Makefile", "pyproject.toml")
PLACEHOLDER = re.compile(r"[<>*{}\[\]]|\.\.\.")
FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`]+)`")
SHELL_OPERATORS = {"&&", "||", "|", ";", ">", "2>&1"}


def split_page(text: str) -> tuple[list[str], list[str]]:
    """(the lines outside code blocks, the lines inside them)."""
    prose, code, fenced = [], [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            code.append(line)
        else:
            prose.append(line)
    return prose, code


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]{1,2}(.+?)[`*_]{1,2}", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor in a page, a repeated one numbered as GitHub does (``name-1``)."""
    seen: dict[str, int] = {}
    result = set()
    for line in split_page(text)[0]:
        match = re.match(r"^#{1,6}\s+(.*)", line)
        if match:
            anchor = github_anchor(match.group(1))
            result.add(anchor if anchor not in seen else f"{anchor}-{seen[anchor]}")
            seen[anchor] = seen.get(anchor, 0) + 1
    return result


def _inside_repository(path: Path) -> bool:
    return path.resolve().is_relative_to(ROOT.resolve())


def dead_links(page: Path, text: str) -> list[str]:
    """The relative links of ``text`` (the content of ``page``) whose file or #anchor does not exist."""
    problems = []
    for line in split_page(text)[0]:
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if re.match(r"^[a-z]+:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part) if file_part else page
            if not _inside_repository(linked):
                problems.append(f"{page.name}: {target} points outside the repository")
            elif not linked.exists():
                problems.append(f"{page.name}: {target}: no such file")
            elif anchor and anchor not in anchors(linked.read_text()):
                problems.append(f"{page.name}: {target}: no heading with the anchor #{anchor} in {linked.name}")
    return problems


def named_paths(text: str) -> set[str]:
    """The repository paths a page names: inline code and code-block words that start like a tracked path."""
    prose, code = split_page(text)
    words = [w for line in prose for span in CODE_SPAN.findall(line) for w in span.split()]
    words += [w for line in code for w in line.split()]
    found = set()
    for word in words:
        word = word.strip("`'\",;:()")
        if PLACEHOLDER.search(word) or "=" in word:
            continue
        if word.startswith(TRACKED) or word in ROOT_FILES:
            found.add(word.rstrip("."))
    return found


def outside_references(page: Path, text: str) -> list[str]:
    """Relative paths (``../...``) anywhere in a page that leave the repository."""
    return [
        ref for ref in re.findall(r"(?:\.\./)+[\w./-]*", text) if not _inside_repository(page.parent / ref.rstrip("."))
    ]


def cli_commands(text: str) -> list[list[str]]:
    """The arguments of every ``python -m helpers ...`` / ``pneumothorax ...`` line of a page's code blocks."""
    commands = []
    for line in split_page(text)[1]:
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        for i, word in enumerate(words):
            if word.endswith("python") and words[i + 1 : i + 3] == ["-m", "helpers"]:
                start = i + 3
            elif word == "pneumothorax" and i == 0:
                start = 1
            else:
                continue
            rest = words[start:]
            end = next((k for k, w in enumerate(rest) if w in SHELL_OPERATORS), len(rest))
            commands.append(rest[:end])
    return commands


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_anchors_resolve(page):
    assert dead_links(page, page.read_text()) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_paths_exist_and_nothing_points_outside(page):
    text = page.read_text()
    missing = sorted(p for p in named_paths(text) if not (ROOT / p).exists())
    assert missing == [], f"{page.name} names paths the repository does not have"
    assert outside_references(page, text) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cli_commands_parse(page):
    parser = build_parser()
    for args in cli_commands(page.read_text()):
        try:
            parser.parse_args(args)
        except SystemExit as err:
            pytest.fail(f"{page.name}: `python -m helpers {' '.join(args)}` does not parse (exit {err.code})")


def test_the_pages_have_commands_links_and_paths_to_check():
    """The checks above see what they check: the README links into docs/, docs/ has CLI commands and paths."""
    readme = (ROOT / "README.md").read_text()
    assert len(LINK.findall(readme)) >= 10
    assert len(cli_commands((ROOT / "docs" / "workflow.md").read_text())) >= 5
    assert "helpers/core/parameters.py" in named_paths((ROOT / "docs" / "architecture.md").read_text())
    assert "predict" in anchors((ROOT / "BENCHMARKS.md").read_text())
    assert github_anchor("The SIIM-ACR winners' toolkit (options)") == "the-siim-acr-winners-toolkit-options"
    assert github_anchor("`FolderLocked` and more") == "folderlocked-and-more"


def test_a_broken_link_anchor_path_or_command_on_a_copy_fails():
    page = ROOT / "README.md"
    text = page.read_text()
    assert "(docs/install.md)" in text and "(docs/metrics.md#the-model-card)" in text
    broken_file = text.replace("(docs/install.md)", "(docs/instal.md)", 1)
    assert any("docs/instal.md: no such file" in p for p in dead_links(page, broken_file))
    broken_anchor = text.replace("(docs/metrics.md#the-model-card)", "(docs/metrics.md#the-model-cards)", 1)
    assert any("#the-model-cards" in p for p in dead_links(page, broken_anchor))
    outside = text + "\nSee [the notes](../shared/FACTS.md).\n"
    assert any("outside the repository" in p for p in dead_links(page, outside))
    assert outside_references(page, outside) == ["../shared/FACTS.md"]
    assert "helpers/no_such_module.py" in named_paths(text + "\nSee `helpers/no_such_module.py`.\n")
    command = cli_commands("```bash\npython -m helpers sweep --lrs abc   # a typo\n```\n")
    assert command == [["sweep", "--lrs", "abc"]]
    with pytest.raises(SystemExit):
        build_parser().parse_args(command[0])
