"""Every `graviti ...` line in the docs' bash blocks parses with today's command line.

The README's first session runs for real (tests/integration/test_readme_tour.py); the other
documented commands need a cluster, a GPU or a 10M-edge crawl, so here each one is at least
checked against the parser: a renamed or removed flag fails this test, not a reader.
"""

import re
import shlex
from pathlib import Path

import pytest

from benchmarks import suite
from graviti_dist.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "launch/README.md", "benchmarks/README.md", "partitions/README.md", "ARCHITECTURE.md"]


def command_words(line: str) -> list[str]:
    """The words of the line's first command (up to `&`, `;`, `|`, ...), as bash would split them."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    words = []
    for word in lexer:
        if set(word) <= set("&;|<>()"):
            break
        words.append(word)
    return words


def documented_commands() -> list[tuple[str, str]]:
    """(doc, command line) for every line of a bash block that runs `graviti`, continuations joined."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", (REPO / doc).read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                words = command_words(line)
                if words and words[0] in ("graviti", ".venv/bin/graviti"):
                    found.append((doc, line.strip()))
    return found


def test_the_docs_document_commands():
    assert len(documented_commands()) >= 15  # the README alone shows every subcommand


@pytest.mark.parametrize(("doc", "line"), documented_commands())
def test_documented_command_parses(doc, line):
    words = command_words(line)[1:]
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(words)
        if args.command == "bench":
            suite.parser().parse_args(extra)
        else:
            assert not extra, f"{doc}: `{line}`: unrecognized arguments {extra}"
    except SystemExit:
        pytest.fail(f"{doc}: `{line}` does not parse with today's `graviti` (argparse's message is above)")
