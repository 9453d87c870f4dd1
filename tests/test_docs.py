"""The documentation: README.md and docs/*.md stay short, linked and runnable.

* README.md is a front page (at most 8 KiB) that starts with the two set-up commands;
* every relative link and picture points to a file that exists (and a heading, for ``#anchor``);
* every ``sparse-lc`` command in a ```bash block parses with the real parser (also the
  ``python tools/train.py`` / ``tools/test.py`` / ``torchrun`` forms);
* every ```python block compiles, and its ``from sparse_lc... import`` names exist;
* every ``sparse_lc.x.y`` name and repository path quoted in backticks exists.

Fast and offline: nothing here runs a model.
"""
from __future__ import annotations

import ast
import importlib
import os
import re
import shlex
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from sparse_lc.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
PAGES = [README] + sorted(os.path.join(DOCS, f) for f in os.listdir(DOCS) if f.endswith(".md"))
# Blocks of this page are run by tests/test_extending.py; here they are only compiled.
RUN_ELSEWHERE = {os.path.join(DOCS, "extending.md")}

SETUP_DEMO = ("python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -e . "
              "&& .venv/bin/sparse-lc demo")
SETUP_TESTS = ('python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -e ".[dev]" '
               "&& .venv/bin/python -m pytest -q")

# tools/ script -> the subcommand it runs
TOOLS = {"train.py": "train", "test.py": "eval", "segment.py": "segment", "profile_macs.py": "profile",
         "demo.py": "demo"}
# Commands in bash blocks that cannot be parsed as written, each with the reason. Keep it short.
PLACEHOLDER_SKIPS: Dict[str, str] = {}


def rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def fenced_blocks(text: str) -> Iterator[Tuple[str, str, int]]:
    """(language, body, line number of the opening fence) of every fenced block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+)\s*([\w+-]*)", lines[i])
        if m:
            fence, lang, start = m.group(2), m.group(3), i + 1
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i][len(m.group(1)):] if lines[i].startswith(m.group(1)) else lines[i])
                i += 1
            yield lang, "\n".join(body), start
        i += 1


def prose(text: str) -> str:
    """The text outside fenced blocks."""
    return re.sub(r"^\s*```.*?^\s*```[^\n]*$", "", text, flags=re.S | re.M)


def blocks(lang: str) -> List[Tuple[str, str, int]]:
    """(page, body, line) of every block in language ``lang`` over README.md and docs/*.md."""
    return [(page, body, line) for page in PAGES for kind, body, line in fenced_blocks(read(page)) if kind == lang]


# ---------------------------------------------------------------------------------------------
# 1. README.md: a short front page that starts with the two set-up commands


def test_readme_is_a_front_page_of_at_most_8_kib():
    size = os.path.getsize(README)
    assert size <= 8192, f"README.md is {size} bytes; move detail into docs/"


def test_readme_starts_with_the_two_setup_commands():
    text = read(README)
    assert text.startswith("# sparse_lc\n\nRun the demo ("), "README.md must open with the demo set-up line"
    bash = [body for lang, body, _ in fenced_blocks(text) if lang == "bash"]
    assert bash[:2] == [SETUP_DEMO, SETUP_TESTS], "the first two bash blocks must be the set-up commands, verbatim"
    first_fence = text.index("```")
    assert "Run the demo" in text[:first_fence]
    assert "Run the tests" in text[text.index("```", first_fence + 3) + 3:text.index(SETUP_TESTS)]


# ---------------------------------------------------------------------------------------------
# 2. Links and pictures

LINK = re.compile(r"!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: str) -> set:
    found, seen = set(), {}
    for line in prose(read(path)).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            found.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return found


def relative_links() -> List[Tuple[str, str]]:
    out = []
    for page in PAGES:
        for target in LINK.findall(prose(read(page))):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            out.append((page, target))
    return out


@pytest.mark.parametrize("page,target", relative_links(), ids=lambda v: rel(v) if os.path.isabs(v) else v)
def test_relative_links_point_to_files_and_headings(page, target):
    path, _, anchor = target.partition("#")
    file = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
    assert os.path.exists(file), f"{rel(page)}: link to {target}: {rel(file)} does not exist"
    if anchor and file.endswith(".md"):
        assert anchor in anchors(file), f"{rel(page)}: link to {target}: no heading with that anchor in {rel(file)}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {os.path.normpath(os.path.join(ROOT, t.partition("#")[0])) for p, t in relative_links() if p == README}
    orphans = [rel(p) for p in PAGES[1:] if p not in linked]
    assert not orphans, f"docs pages the README does not link: {orphans}"


# ---------------------------------------------------------------------------------------------
# 3. Every sparse-lc command in a bash block parses


def shell_lines(body: str) -> List[str]:
    """Lines of a bash block with backslash continuations joined and trailing comments removed."""
    joined, current = [], ""
    for line in body.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    if current:
        joined.append(current)
    return [strip_comment(line).strip() for line in joined]


def strip_comment(line: str) -> str:
    """``cmd --x 1   # note`` -> ``cmd --x 1``: the first ``#`` after whitespace, outside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def commands(line: str) -> List[List[str]]:
    """The simple commands of a shell line (split at ``&&``, ``||``, ``;`` and ``|``), as words."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = ""
    out, current = [], []
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            out.append(current)
            current = []
        else:
            current.append(token)
    out.append(current)
    return [c for c in out if c]


def sparse_lc_argv(words: List[str]) -> Optional[List[str]]:
    """The sparse-lc arguments a command runs, or None if it is not a sparse-lc command:
    ``sparse-lc ARGS``, ``.venv/bin/sparse-lc ARGS``, ``python -m sparse_lc ARGS``,
    ``python tools/train.py ARGS`` (-> ``train ARGS``), ``torchrun ... tools/test.py ARGS``
    (-> ``eval ARGS``)."""
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value before the command
        words = words[1:]
    if not words:
        return None
    program = os.path.basename(words[0])
    if program == "sparse-lc":
        return words[1:]
    if re.match(r"^python[\d.]*$", program) and words[1:3] in (["-m", "sparse_lc"], ["-m", "sparse_lc.cli"]):
        return words[3:]
    if re.match(r"^python[\d.]*$", program) or program == "torchrun":
        for i, word in enumerate(words[1:], 1):
            if word.startswith("tools/") and os.path.basename(word) in TOOLS:
                return [TOOLS[os.path.basename(word)], *words[i + 1:]]
    return None


def cli_commands() -> List[Tuple[str, int, str, List[str]]]:
    found = []
    for page, body, line in blocks("bash"):
        for text in shell_lines(body):
            for words in commands(text):
                argv = sparse_lc_argv(words)
                if argv is not None and text not in PLACEHOLDER_SKIPS:
                    found.append((page, line, text, argv))
    return found


CLI_COMMANDS = cli_commands()


def test_the_docs_show_commands():
    assert len(CLI_COMMANDS) > 40, "the bash-block scan found too few sparse-lc commands"
    shown = {argv[0] for _, _, _, argv in CLI_COMMANDS if argv and not argv[0].startswith("-")}
    assert shown >= {"demo", "segment", "profile", "bench", "train", "eval", "calibrate", "check-data", "list",
                     "doctor"}


@pytest.mark.parametrize("page,line,text,argv", CLI_COMMANDS,
                         ids=[f"{rel(p)}:{n}:{' '.join(a[:2])}" for p, n, _, a in CLI_COMMANDS])
def test_every_command_in_the_docs_parses(page, line, text, argv, capsys):
    parser = build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as e:
        # --help and --version exit 0 after printing; anything else is a parse error
        assert e.code == 0 and {"--help", "-h", "--version"} & set(argv), \
            f"{rel(page)} (block at line {line}): `{text}` does not parse:\n{capsys.readouterr().err}"


# ---------------------------------------------------------------------------------------------
# 4. Python blocks compile and import what exists

PYTHON_BLOCKS = blocks("python")


@pytest.mark.parametrize("page,body,line", PYTHON_BLOCKS, ids=[f"{rel(p)}:{n}" for p, _, n in PYTHON_BLOCKS])
def test_python_blocks_compile(page, body, line):
    compile(body, f"{rel(page)}:{line}", "exec")


def sparse_lc_imports() -> List[Tuple[str, int, str, List[str]]]:
    """(page, line, module, names) of every ``from sparse_lc... import`` and ``import sparse_lc...``."""
    out = []
    for page, body, line in PYTHON_BLOCKS:
        if page in RUN_ELSEWHERE:
            continue
        try:
            tree = ast.parse(body)
        except SyntaxError:
            continue  # test_python_blocks_compile reports it
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sparse_lc":
                out.append((page, line + node.lineno, node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                out += [(page, line + node.lineno, a.name, []) for a in node.names
                        if a.name.split(".")[0] == "sparse_lc"]
    return out


IMPORTS = sparse_lc_imports()


def test_the_python_blocks_import_sparse_lc():
    assert len(IMPORTS) >= 5


@pytest.mark.parametrize("page,line,module,names", IMPORTS,
                         ids=[f"{rel(p)}:{n}:{m}" for p, n, m, _ in IMPORTS])
def test_python_imports_resolve(page, line, module, names):
    imported = importlib.import_module(module)
    missing = [n for n in names if n != "*" and not hasattr(imported, n)]
    assert not missing, f"{rel(page)}:{line}: `from {module} import` names what {module} lacks: {missing}"


# ---------------------------------------------------------------------------------------------
# 5. Names and paths quoted in the prose exist

CODE_SPAN = re.compile(r"`([^`\n]+)`")
DOTTED = re.compile(r"^sparse_lc(?:\.\w+)+$")
PATH = re.compile(r"^(?:sparse_lc|tests|configs|tools|kernels_bench|docs)/[\w./-]*$")
# Paths the docs ask the reader to create.
READERS_FILES = {"configs/my_data.yaml"}  # docs/datasets.md: "Save this as configs/my_data.yaml"


def quoted(pattern: re.Pattern) -> List[Tuple[str, str]]:
    out = []
    for page in PAGES:
        for span in CODE_SPAN.findall(prose(read(page))):
            for word in re.split(r"[\s,;:()]+", span):
                word = word.rstrip(".")
                if pattern.match(word):
                    out.append((page, word))
    return sorted(set(out))


def resolve(dotted: str):
    """Import the longest module prefix of ``dotted``, then getattr the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("page,name", quoted(DOTTED), ids=lambda v: rel(v) if os.path.isabs(v) else v)
def test_quoted_python_names_exist(page, name):
    try:
        resolve(name)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"{rel(page)}: `{name}` does not exist ({e})")


@pytest.mark.parametrize("page,path", quoted(PATH), ids=lambda v: rel(v) if os.path.isabs(v) else v)
def test_quoted_repository_paths_exist(page, path):
    assert path in READERS_FILES or os.path.exists(os.path.join(ROOT, path)), f"{rel(page)}: `{path}` does not exist"
