"""The documentation: README.md and docs/*.md stay short, linked, and runnable as pasted.

* README.md is a front page (at most 8 KiB) that starts with the two set-up commands;
* every docs page says once, before its first command, to activate the environment;
* every relative link and picture points to a file that exists (and a heading, for ``#anchor``);
* every ``sparse-lc`` command in a ```bash block parses with the real parser (also the
  ``python tools/train.py`` / ``tools/test.py`` / ``torchrun`` forms);
* every ```python block compiles, and its ``from sparse_lc... import`` names exist;
* every ``sparse_lc.x.y`` name and repository path quoted in backticks exists;
* each page, executed (section 6, marked slow): its Python blocks and its shell commands, in
  order, in a folder that holds the files the page names, every command that does not run
  listed in NOT_RUN with its reason.
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import io
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import pytest
import yaml

from sparse_lc.apis import BUNDLED_CHECKPOINT, SAMPLES_DIR
from sparse_lc.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
PAGES = [README] + sorted(os.path.join(DOCS, f) for f in os.listdir(DOCS) if f.endswith(".md"))
# Blocks of this page are run by tests/test_extending.py, in a folder of its own; here they are only compiled.
RUN_ELSEWHERE = {os.path.join(DOCS, "extending.md")}
ACTIVATE = "source .venv/bin/activate"

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


@pytest.mark.parametrize("page", PAGES[1:], ids=rel)
def test_every_docs_page_says_to_activate_the_environment_before_its_first_command(page):
    text = read(page)
    first_block = text.find("```")
    assert text.count(ACTIVATE) >= 1 and -1 < text.find(ACTIVATE) < (first_block if first_block >= 0 else len(text)), \
        f"{rel(page)}: say `{ACTIVATE}` once, before the first command (the commands assume it)"


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


# ---------------------------------------------------------------------------------------------
# 6. Each page, executed: its Python blocks and shell commands in order, as a reader pastes them

# Commands the pages show that do not run here (minutes, installs, data or GPUs this machine
# lacks), each with the reason; they still parse (section 3). Every other command runs.
TRAINING = "a full training (minutes): the tests train tiny runs instead (tests/test_train.py, tests/test_tools.py)"
NOT_RUN: Dict[str, str] = {
    SETUP_DEMO: "the README's set-up: .ci/run runs it on a clean checkout",
    SETUP_TESTS: "the README's set-up and the whole suite: .ci/run runs it",
    "pip install torch==2.13.0 -e .": "an install (.ci/run installs)",
    "pip install torch --index-url https://download.pytorch.org/whl/cpu && pip install -e .": "an install from the "
    "PyTorch index, which this machine cannot reach",
    "pip install torch && pip install -e .": "an install of a multi-GB CUDA build",
    "pip install -e . && pip uninstall -y spconv-cu120 cumm-cu120 && pip install spconv-cu118": "changes the "
    "installed spconv",
    "pip install timm && python -c \"import timm, torch; torch.save(timm.create_model('inception_resnet_v2', "
    "pretrained=True).state_dict(), 'inception_resnet_v2.pth')\"": "downloads ImageNet weights",
    "python -m pytest -q": "the test suite itself (.ci/run)",
    "python -m pytest -q -m \"not slow\"": "the test suite itself",
    "python -m pytest -q tests/test_equivalence.py": "the test suite itself",
    "python -m kernels_bench --out kernels_bench_results": "about 90 s (tests/test_bench.py runs --quick)",
    "python tools/bench_gpu.py --device cuda --out bench_gpu_results": "needs a GPU (tests/test_tools.py runs "
    "--device cpu --quick)",
    "python tools/bench_gpu.py --device cpu --quick --out /tmp/bench": "about a minute here (tests/test_tools.py "
    "runs it)",
    "STEP_S=280 bash .gpu/run-on-gpu.sh 'python3 -m pytest -q -x tests/test_cuda.py' 'python3 -m sparse_lc doctor' "
    "'python3 tools/bench_gpu.py --out $OUT/bench'": "runs on the GPU machine, with spconv carried in .gpu/",
    "sparse-lc train configs/lc_synthetic_small.yaml": TRAINING,
    "sparse-lc train configs/dense_synthetic_small.yaml": TRAINING,
    "sparse-lc train configs/mc_synthetic_small.yaml": TRAINING,
    "sparse-lc train configs/lc_synthetic_small.yaml --set model.halo=2 --work-dir work_dirs/halo2": TRAINING,
    "sparse-lc train configs/lc_synthetic_small.yaml --set model.halo=2 --work-dir "
    "work_dirs/lc_synthetic_small_halo2": TRAINING,
    "sparse-lc train configs/lc_synthetic_small.yaml --resume": TRAINING,
    "sparse-lc train configs/lc_synthetic_small.yaml --set train.load_from=work_dirs/dense_synthetic_small/final.pth "
    "--work-dir work_dirs/lc_from_dense": TRAINING,
    "sparse-lc train configs/lc_synthetic_small.yaml && cp work_dirs/lc_synthetic_small/final.pth "
    "sparse_lc/assets/lc_synthetic_small.pth": TRAINING + ", then replaces the bundled model",
    "SPARSE_LC_DEBUG=1 sparse-lc train configs/lc_synthetic_small.yaml": TRAINING,
    "sparse-lc train configs/my_data.yaml": TRAINING,
    "sparse-lc segment photos/ --checkpoint work_dirs/my_data/final.pth": "needs the training above",
    "torchrun --nproc_per_node 4 tools/train.py configs/lc_resnet18_os8_voc.yaml": "4 processes on PASCAL VOC "
    "(tests/test_tools.py runs tools/train.py under torchrun with 1 process)",
    "torchrun --nproc_per_node 4 tools/test.py configs/lc_resnet18_os8_voc.yaml "
    "work_dirs/lc_resnet18_os8_voc/final.pth": "4 processes on PASCAL VOC, after its training",
    "sparse-lc bench --sweep 0.05 0.1 0.2 0.3 0.5 --threads 2 --json": "5 settings x 9 passes of ResNet-18 at "
    "512 x 512: 75-107 s here (tests/test_bench.py runs bench small)",
    "sparse-lc bench --hard-share 0.2 0.1 --threads 2": "9 passes of ResNet-18 at 512 x 512 each way: 16-41 s here",
    "sparse-lc bench --config configs/lc_resnet50_os8.yaml --hard-share 0.2 0.1 --reps 3": "ResNet-50 at 512 x 512: "
    "26 s here",
    "sparse-lc bench --config configs/lc_irnv2_voc12.yaml --set model.pretrained=null --hard-share 0.4 0.2 --size 512 "
    "512 --warmup 0 --reps 1 --threads 1": "Inception-ResNet-v2 at 512 x 512 on one thread: 41 s here",
    "sparse-lc bench --config configs/lc_convnext_t_os8.yaml --hard-share 0.2 0.1 --threads 1 --reps 5 --warmup 1":
    "ConvNeXt-T at 512 x 512 on one thread, 6 passes each way: 90 s here (tests/test_bench.py benches the config "
    "small)",
    "sparse-lc bench --config configs/lc_mobilenetv2_os8.yaml --hard-share 0.2 0.1 --threads 1": "MobileNetV2 at "
    "512 x 512 on one thread, 9 passes each way: 20 s here (tests/test_bench.py benches the config small)",
    "sparse-lc check-data configs/lc_resnet18_os8_voc.yaml": "needs PASCAL VOC on disk",
    "sparse-lc check-data configs/lc_resnet18_os8_voc.yaml --split train": "needs PASCAL VOC on disk",
}
# What a command's line is documented to exit with, where that is not 0.
EXPECTED_EXIT = {"sparse-lc eval configs/lc_synthetic_small.yaml missing.pth; echo \"exit code $?\"": 2}
# Commands whose output the page shows in the plain block that follows: it must be what they print.
SHOWN_OUTPUT = {"sparse-lc profile --input sparse_lc/assets/samples/shapes_0.png sparse_lc/assets/samples/shapes_1.png "
                "--rho 0.9 0.985", "sparse-lc list"}
# YAML blocks a page asks the reader to save, by page.
SAVED_YAML = {os.path.join(DOCS, "datasets.md"): "configs/my_data.yaml"}
# The sandbox's synthetic splits: the configs' own generate 4400 scenes; commands run in seconds on these.
SANDBOX_SPLITS = {"num_train": 16, "num_val": 4, "num_calib": 2}


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def make_sandbox(folder: Path, dense_checkpoint: str) -> None:
    """What the pages refer to, in ``folder`` (the reader's clone after the documented runs):
    configs/ (the repository's, their synthetic splits cut to SANDBOX_SPLITS), tools/, the
    bundled samples and model, work_dirs/lc_synthetic_small/final.pth (the bundled model is
    that run's final.pth, docs/results.md), work_dirs/dense_synthetic_small/final.pth (a tiny
    training of that config), photos and folders of the samples, and data/my_data."""
    shutil.copytree(os.path.join(ROOT, "configs"), folder / "configs")
    base = folder / "configs" / "base" / "synthetic_small.yaml"
    cfg = yaml.safe_load(base.read_text())
    cfg["data"]["synthetic"].update(SANDBOX_SPLITS)
    base.write_text(yaml.safe_dump(cfg))
    os.symlink(os.path.join(ROOT, "tools"), folder / "tools")
    assets = folder / "sparse_lc" / "assets"
    assets.mkdir(parents=True)
    os.symlink(SAMPLES_DIR, assets / "samples")
    for path in ("sparse_lc/assets/lc_synthetic_small.pth", "work_dirs/lc_synthetic_small/final.pth", "lc.pth"):
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BUNDLED_CHECKPOINT, folder / path)
    for path in ("work_dirs/dense_synthetic_small/final.pth", "dense.pth"):
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(dense_checkpoint, folder / path)
    samples = [cv2.imread(os.path.join(SAMPLES_DIR, f"shapes_{i}.png")) for i in range(4)]
    for name, picture in (("photos/a.png", samples[0]), ("photos/b.jpg", samples[1]), ("photo.jpg", samples[2]),
                          ("more.jpg", samples[3]), ("other.png", samples[1])):
        (folder / name).parent.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / name), picture)
    big = cv2.resize(np.vstack([np.hstack(samples[:2]), np.hstack(samples[2:])]), (1024, 768))
    cv2.imwrite(str(folder / "big.png"), big)
    (folder / "folder200").mkdir()
    for i, (y, x) in enumerate([(0, 0), (0, 512), (256, 0), (256, 512)]):
        cv2.imwrite(str(folder / "folder200" / f"crop_{i}.png"), big[y:y + 512, x:x + 512])
    for split in ("train", "val"):  # data/my_data of docs/datasets.md: 3 classes, valid
        for kind in ("img_dir", "ann_dir"):
            (folder / "data" / "my_data" / kind / split).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(folder / "data" / "my_data" / "img_dir" / split / f"img{i}.jpg"), samples[i])
            cv2.imwrite(str(folder / "data" / "my_data" / "ann_dir" / split / f"img{i}.png"),
                        np.full(samples[i].shape[:2], i + 1, np.uint8))


@pytest.fixture(scope="session")
def dense_checkpoint(tmp_path_factory) -> str:
    """configs/dense_synthetic_small.yaml really trained, for 4 iterations."""
    from sparse_lc import load_config
    from sparse_lc.training import train

    folder = tmp_path_factory.mktemp("dense_synthetic_small")
    overrides = [f"work_dir={folder}", "train.iters=4", "train.log_interval=2", "train.checkpoint_interval=4",
                 *(f"data.synthetic.{k}={v}" for k, v in SANDBOX_SPLITS.items())]
    return train(load_config(os.path.join(ROOT, "configs", "dense_synthetic_small.yaml"), overrides), device="cpu",
                 progress=False).final_checkpoint


def run_python(body: str, where: str) -> Outcome:
    """A Python block in a fresh namespace, in this process (the current folder is the sandbox)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        exec(compile(body, where, "exec"), {"__name__": "__main__"})  # noqa: S102  (the docs' own code)
    return Outcome(0, out.getvalue(), err.getvalue())


def run_command(words: List[str]) -> Optional[Outcome]:
    """One simple shell command of a page: ``sparse-lc ...`` or ``python -m sparse_lc ...`` runs
    through :func:`sparse_lc.cli.main` in this process (with its ``VAR=value`` prefixes in the
    environment, torch's thread count restored after), ``echo`` is skipped (None); anything
    else is an error: list it in NOT_RUN or teach this function to run it."""
    import torch

    from sparse_lc.cli import main

    env = {}
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        key, _, value = words[0].partition("=")
        env[key], words = value, words[1:]
    if words[0] == "echo":
        return None
    argv = sparse_lc_argv(words)
    assert argv is not None and not words[0].startswith("tools/"), \
        f"`{' '.join(words)}`: no way to run it here: list its line in NOT_RUN with the reason, or run it here"
    out, err, threads, saved = io.StringIO(), io.StringIO(), torch.get_num_threads(), dict(os.environ)
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:  # --help, --version, argument errors
                code = e.code or 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
        torch.set_num_threads(threads)
    return Outcome(code, out.getvalue(), err.getvalue())


def runnable_pages() -> List[str]:
    return [page for page in PAGES if page not in RUN_ELSEWHERE
            and any(lang in ("bash", "python") for lang, _, _ in fenced_blocks(read(page)))]


def test_not_run_lists_only_commands_the_pages_show():
    shown = {" ".join(text.split()) for _, body, _ in blocks("bash") for text in shell_lines(body)}
    assert not set(NOT_RUN) - shown, f"NOT_RUN names commands no page shows: {sorted(set(NOT_RUN) - shown)}"
    assert not set(EXPECTED_EXIT) - shown and not SHOWN_OUTPUT - shown


@pytest.mark.slow
@pytest.mark.parametrize("page", runnable_pages(), ids=rel)
def test_the_page_runs_as_written(page, tmp_path, dense_checkpoint, monkeypatch):
    make_sandbox(tmp_path, dense_checkpoint)
    monkeypatch.chdir(tmp_path)
    problems, outputs = [], {}
    for lang, body, line in fenced_blocks(read(page)):
        where = f"{rel(page)}:{line}"
        if lang == "yaml" and page in SAVED_YAML:
            (tmp_path / SAVED_YAML[page]).write_text(body + "\n")
        elif lang == "python":
            problems += check_python(body, where)
        elif lang == "bash":
            outputs = {}
            for text in (" ".join(line.split()) for line in shell_lines(body)):  # continuations joined
                if text and text not in NOT_RUN:
                    problems += check_line(text, where, outputs)
        elif lang == "" and outputs:
            shown = [command for command in outputs if command in SHOWN_OUTPUT]
            if shown and outputs[shown[0]].strip() != body.strip():
                problems.append(f"{where}: `{shown[0]}` prints something else:\n{outputs[shown[0]]}")
            outputs = {}
    assert not problems, "\n\n".join(problems)


def check_python(body: str, where: str) -> List[str]:
    """Problems of one Python block: an exception, or a ``print(...)  # TEXT`` whose TEXT is not printed."""
    try:
        outcome = run_python(body, where)
    except Exception as e:  # noqa: BLE001  (each block's failure is reported)
        return [f"{where}: {type(e).__name__}: {e}"]
    promised = re.findall(r"^\s*print\(.*\)\s+#\s*(.+?)\s*$", body, flags=re.M)
    return [f"{where}: prints\n{outcome.out}\nnot {text!r}" for text in promised if text not in outcome.out]


def check_line(text: str, where: str, outputs: Dict[str, str]) -> List[str]:
    """Problems of one shell line: a command that fails (or exits otherwise than EXPECTED_EXIT
    says), or a traceback; each command's output goes to ``outputs``."""
    problems = []
    for words in commands(text):
        outcome = run_command(words)
        if outcome is None:
            continue
        outputs[shlex.join(words)] = outcome.out
        expected = EXPECTED_EXIT.get(text, 0)
        if outcome.code != expected or "Traceback" in outcome.err:
            problems.append(f"{where}: `{shlex.join(words)}` exited with {outcome.code}, not {expected}:\n"
                            f"{outcome.err[-2000:]}")
    return problems
