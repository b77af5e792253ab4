"""README.md and docs/*.md: every relative link and #anchor resolves, every documented command of an entry
script is accepted by that script's own argument parser (parsed only, nothing is run), every docs page is
reachable from the README, and the README stays a short first read that opens with the two commands CI runs."""
from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250
# The README's first lines: the set-up-and-run commands users copy and .ci/run mirrors; they must stay first.
README_OPENING = [
    "```bash",
    "pip install -e . && python evaluate.py --dset demo --dev cpu",
    "pip install -e '.[test]' && python -m pytest -q",
    "```",
]
SCRIPTS = ("train.py", "evaluate.py", "demo.py", "benchmark.py", "tools/gpu_check.py")
SHELL_SEPARATORS = {"&&", "||", ";", "|"}

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+).*?\1")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
MENTIONS_SCRIPT = re.compile(r"(?<![\w/])(?:\./)?(?:train|evaluate|demo|benchmark|tools/gpu_check)\.py\b")


@dataclass(frozen=True)
class Page:
    """A markdown file split the way GitHub renders it: prose paragraphs, code blocks, headings."""

    path: Path
    paragraphs: list[tuple[int, str]]  # (first line number, the paragraph's lines joined by spaces)
    code_blocks: list[tuple[int, list[str]]]  # (first line number, the block's lines)
    anchors: set[str]


def github_anchor(heading: str) -> str:
    """GitHub's heading id: the rendered text lowercased, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading renders as its text
    text = "".join(ch for ch in text.lower() if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def read_page(path: Path) -> Page:
    lines = path.read_text(encoding="utf-8").splitlines()
    paragraphs: list[tuple[int, str]] = []
    code_blocks: list[tuple[int, list[str]]] = []
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    prose: list[str] = []
    prose_start = 0
    fence: str | None = None
    block: list[str] = []
    block_start = 0
    previous_blank = True

    def end_prose() -> None:
        if prose:
            paragraphs.append((prose_start, " ".join(prose)))
            prose.clear()

    for number, line in enumerate(lines, start=1):
        opening = FENCE.match(line)
        if fence is not None:  # inside a fenced block: until the same fence closes it
            if opening and opening.group(1) == fence and not line.strip().strip(fence):
                code_blocks.append((block_start, block))
                fence, block = None, []
            else:
                block.append(line)
            continue
        if opening:
            end_prose()
            fence, block, block_start = opening.group(1), [], number + 1
            continue
        indented_code = line.startswith("    ") and line.strip() and (previous_blank or _in_indented(code_blocks, number))
        if indented_code:  # an indented code block (it cannot interrupt a paragraph)
            end_prose()
            if _in_indented(code_blocks, number):
                code_blocks[-1][1].append(line)
            else:
                code_blocks.append((number, [line]))
            previous_blank = False
            continue
        if not line.strip():
            end_prose()
            previous_blank = True
            continue
        previous_blank = False
        heading = HEADING.match(line)
        if heading:
            end_prose()
            anchor = github_anchor(heading.group(2))
            count = seen.get(anchor, 0)
            anchors.add(anchor if count == 0 else f"{anchor}-{count}")
            seen[anchor] = count + 1
            continue
        anchors.update(HTML_ANCHOR.findall(line))
        if not prose:
            prose_start = number
        prose.append(line.strip())
    end_prose()
    return Page(path, paragraphs, code_blocks, anchors)


def _in_indented(code_blocks: list[tuple[int, list[str]]], number: int) -> bool:
    """Whether line `number` directly continues the last indented code block."""
    if not code_blocks:
        return False
    start, block = code_blocks[-1]
    return start + len(block) == number and block[0].startswith("    ")


PARSED = {path: read_page(path) for path in PAGES}


def relative_links(pages: list[Page]) -> list[tuple[Path, int, str]]:
    """(page, line, target) for every link outside code that names no scheme (http:, mailto:, ...)."""
    found = []
    for page in pages:
        for number, text in page.paragraphs:
            for target in LINK.findall(INLINE_CODE.sub("", text)):
                if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: point elsewhere
                    found.append((page.path, number, target))
    return found


def documented_commands(pages: list[Page]) -> list[tuple[Path, int, str, list[str]]]:
    """(page, line, script, argv) for every command of an entry script in a code block."""
    found = []
    for page in pages:
        for start, block in page.code_blocks:
            logical: list[tuple[int, str]] = []
            pending = ""
            for offset, line in enumerate(block):
                if not pending:
                    first = start + offset
                pending += line.rstrip()
                if pending.endswith("\\"):
                    pending = pending[:-1] + " "
                    continue
                logical.append((first, pending))
                pending = ""
            if pending:
                logical.append((first, pending))
            for number, line in logical:
                if MENTIONS_SCRIPT.search(line):
                    found.extend((page.path, number, script, argv) for script, argv in _commands_in(line))
    return found


def _commands_in(line: str) -> list[tuple[str, list[str]]]:
    """The entry-script invocations of one shell line: `python SCRIPT ...` and `torchrun ... SCRIPT ...`."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:  # unbalanced quotes: as written the shell would not run it either
        return [("unparseable", [line])]
    segments: list[list[str]] = [[]]
    for token in tokens:
        if token in SHELL_SEPARATORS:
            segments.append([])
        else:
            segments[-1].append(token)
    commands = []
    for segment in segments:
        while segment and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", segment[0]):  # VAR=value prefixes
            segment = segment[1:]
        if not segment:
            continue
        names = [token.removeprefix("./") for token in segment]
        if names[0] in ("python", "python3") and len(names) > 1 and names[1] in SCRIPTS:
            commands.append((names[1], segment[2:]))
        elif names[0] == "torchrun":
            script = next((i for i, name in enumerate(names) if name in SCRIPTS), None)
            if script is not None:
                commands.append((names[script], segment[script + 1:]))
    return commands


def _load_tool(name: str):
    """tools/NAME.py as a module (tools/ is no package); registered first, as its dataclasses need."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def parse_with_script(script: str, argv: list[str]) -> None:
    """Run `script`'s own command-line parsing on argv (argparse exits with SystemExit on a refusal)."""
    if script == "evaluate.py":
        import evaluate

        evaluate.parse_args(argv)
    elif script == "demo.py":
        import demo

        demo.parse_args(argv)
    elif script == "train.py":
        import train
        from trainer.options import build_parser

        build_parser(train.paths).parse_args(argv)
    elif script == "benchmark.py":
        import benchmark

        args = benchmark.parse_args(argv)
        # the mode's option set, which refuses options of the other mode; it builds nothing
        benchmark.long_video_options(args) if args.long_video is not None else benchmark.benchmark_options(args)
    elif script == "tools/gpu_check.py":
        _load_tool("gpu_check").parse_args(argv)
    else:
        pytest.fail(f"a command line the shell could not split: {argv[0]!r}")


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


LINKS = relative_links(list(PARSED.values()))
COMMANDS = documented_commands(list(PARSED.values()))


@pytest.mark.parametrize("page, line, target", LINKS, ids=[f"{_where(p, n)}->{t}" for p, n, t in LINKS])
def test_relative_link_resolves(page, line, target):
    """A link to a file names one inside the repository; an #anchor names a heading of that page."""
    path_part, _, anchor = target.partition("#")
    resolved = (page.parent / path_part).resolve() if path_part else page
    assert resolved.is_relative_to(ROOT), f"{_where(page, line)}: {target} leaves the repository"
    assert resolved.exists(), f"{_where(page, line)}: {target}: no such file ({resolved.relative_to(ROOT)})"
    if anchor:
        assert resolved.suffix == ".md", f"{_where(page, line)}: {target}: an anchor into a file that is not markdown"
        anchors = PARSED[resolved].anchors if resolved in PARSED else read_page(resolved).anchors
        assert anchor in anchors, (f"{_where(page, line)}: {target}: no heading with that anchor in "
                                   f"{resolved.relative_to(ROOT)} (it has: {', '.join(sorted(anchors))})")


@pytest.mark.parametrize("page, line, script, argv", COMMANDS,
                         ids=[f"{_where(p, n)}:{s}" for p, n, s, _ in COMMANDS])
def test_documented_command_is_accepted_by_its_parser(page, line, script, argv, capsys):
    """Parsing only: the paths need not exist and nothing runs, but every flag and value must be taken."""
    try:
        parse_with_script(script, argv)
    except SystemExit as refusal:
        message = capsys.readouterr().err.strip().splitlines()
        pytest.fail(f"{_where(page, line)}: {script} {shlex.join(argv)}\n  refused: "
                    f"{message[-1] if message else refusal}")
    except Exception as err:  # noqa: BLE001 - the option builders' refusals (e.g. BenchmarkError)
        if type(err).__name__.endswith("Error") and type(err).__module__.startswith(("evaluator", "trainer")):
            pytest.fail(f"{_where(page, line)}: {script} {shlex.join(argv)}\n  refused: {err}")
        raise


def test_every_entry_script_has_a_documented_command():
    """The extraction itself works: each entry script is found at least once in a code block."""
    scripts = {script for _, _, script, _ in COMMANDS}
    assert {"train.py", "evaluate.py", "demo.py", "benchmark.py"} <= scripts, scripts


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / target.partition("#")[0]).resolve() for page, _, target in LINKS if page == README}
    unlinked = [p.relative_to(ROOT).as_posix() for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {', '.join(unlinked)}"


def test_readme_is_short_and_opens_with_the_two_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}"
    assert lines[:len(README_OPENING)] == README_OPENING


def test_link_and_command_extraction_on_a_sample(tmp_path):
    """The helpers see what GitHub and the shell see: anchors by GitHub's rule (duplicates numbered), links
    outside code only, continued lines joined, comments and VAR= prefixes dropped, torchrun's script found."""
    sample = tmp_path / "sample.md"
    sample.write_text(
        "# Speed: `--amp` & bfloat16 (CPU)\n\n## Tests\n\n## Tests\n\n"
        "See [a](other.md#x) and `[not a link](nowhere.md)`.\n\n"
        "```bash\n"
        "OMP_NUM_THREADS=1 python evaluate.py --dset demo \\\n    --TH 1.0 0.7   # a comment\n"
        "pip install -e . && torchrun --nproc_per_node=2 train.py --dset all\n"
        "interrupted: ...; to continue: python demo.py --video v.mp4 --mask m.png\n"
        "```\n\n"
        "    python benchmark.py --frames 8\n", encoding="utf-8")
    page = read_page(sample)
    assert page.anchors == {"speed---amp--bfloat16-cpu", "tests", "tests-1"}
    assert [target for _, _, target in relative_links([page])] == ["other.md#x"]
    assert [(n, s, a) for _, n, s, a in documented_commands([page])] == [
        (10, "evaluate.py", ["--dset", "demo", "--TH", "1.0", "0.7"]),
        (12, "train.py", ["--dset", "all"]),
        (16, "benchmark.py", ["--frames", "8"]),
    ]


def test_the_readmes_python_example_runs_as_written(tmp_path):
    """The README's first ```python block, run as written from a folder that has what the repository root has
    (the demo model and the sample clip) with the project importable, as from the root: it segments every
    frame of the shipped clip and writes one label map per frame."""
    import subprocess

    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block, "README.md has no ```python block"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 15
    for name in ("weights", "sample"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"\d+\.\d fps, reuse rate \d\.\d\d\n", done.stdout), done.stdout
    frames = sorted(p.stem for p in (ROOT / "sample" / "clip" / "frames").glob("*.jpg"))
    written = sorted(p.stem for p in (tmp_path / "sample_output").glob("*.png"))
    assert written == frames and len(frames) == 16
    from PIL import Image
    import numpy as np

    with Image.open(tmp_path / "sample_output" / f"{frames[0]}.png") as first, \
            Image.open(ROOT / "sample" / "clip" / "first_mask.png") as given:
        np.testing.assert_array_equal(np.array(first), np.array(given))  # frame 0's result: its given mask
    with Image.open(tmp_path / "sample_output" / f"{frames[-1]}.png") as last:
        assert set(np.unique(np.array(last)).tolist()) == {0, 1, 2}  # both objects still tracked at the end
