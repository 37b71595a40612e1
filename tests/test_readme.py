"""Run the README's ```python blocks, in order, in one namespace (like a doctest session), and check
that they print what the README shows.

They run in a temp directory: ``weights/`` is linked from the checkout, every image file a block
names (``"face.jpg"``) is copied from the checkout when it exists there and made up otherwise, and
``HfApi`` is replaced by a recorder so ``push_to_hub`` touches no network. A block preceded by the
line ``<!-- readme-test: skip -->`` is not run.

Where the README shows output, it must be what the code prints:

* ``print(...)  # OUTPUT`` or ``print(...)  # OUTPUT: explanation``: the trailing comment of a
  ``print`` call is its expected output. The whole comment, or the part before one of its ": ",
  must match what that call printed.
* A ```text block right after a ```python block (only blank lines between) is the block's whole
  expected stdout.

* ``name = ...  # CLAIM`` on an assignment, where CLAIM starts with one of ``LongTensor (32, 32, 3)``,
  ``uint8 (2, 256, 256, 3)``, ``(2, 32, 32, 3)`` (a shape), ``PIL.Image 256×256`` (width × height)
  or ``list of 2 PIL images``: the value assigned must be that (checked right after the statement).
  Other comments on assignments are prose and are not checked.

Matching is exact, with two stated exceptions: a decimal number (``21.52``) matches within one unit
of its last shown digit (float results may differ in the last digit across CPUs), and ``...``
matches any text (for values that legitimately vary, such as timings). Integers, shapes, ids and
words must match exactly. A ``print`` whose output the README shows nowhere is an error too.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import re
import shutil
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from PIL import Image

from vqct_tokenizer.defaults import DEFAULT_MODEL, find_shipped

from conftest import REPO_ROOT, random_rgb

README = REPO_ROOT / "README.md"
SKIP_MARK = "<!-- readme-test: skip -->"
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
TEXT_BLOCK = re.compile(r"\A(?:[ \t]*\n)*```text[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
IMAGE_NAME = re.compile(r"""["']([\w./-]+\.(?:jpe?g|png|webp|bmp))["']""", re.I)
DECIMAL = re.compile(r"-?\d+\.\d+")


@dataclass
class Block:
    line: int               # the line of the ```python fence
    code: str
    output: str | None      # the ```text block right after it, if any


def readme_blocks(text: str) -> list[Block]:
    """Every ```python block not preceded by the skip mark, with the ```text block that follows it."""
    blocks = []
    for match in BLOCK.finditer(text):
        before = text[:match.start()].rstrip().splitlines()
        if before and before[-1].strip() == SKIP_MARK:
            continue
        after = TEXT_BLOCK.match(text[match.end() + 1:])
        blocks.append(Block(text.count("\n", 0, match.start()) + 1, match.group(1), after.group(1) if after else None))
    return blocks


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```python block not preceded by the skip mark."""
    return [(b.line, b.code) for b in readme_blocks(text)]


# ------------------------------------------------------------------------------ shown outputs
@dataclass
class PrintCall:
    first: int              # lines of the call within its block, 1-based
    last: int
    shown: str | None       # its trailing comment, without "#"


def print_calls(code: str) -> list[PrintCall]:
    """Every ``print(...)`` call of a block, with the comment at the end of its last line."""
    comments = {tok.start[0]: tok.string[1:].strip()
                for tok in tokenize.generate_tokens(io.StringIO(code).readline) if tok.type == tokenize.COMMENT}
    calls = [node for node in ast.walk(ast.parse(code))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
    return [PrintCall(c.lineno, c.end_lineno, comments.get(c.end_lineno)) for c in sorted(calls, key=lambda c: c.lineno)]


def text_matches(expected: str, actual: str) -> bool:
    """``actual`` is ``expected``, where "..." matches any text and a decimal number matches within
    one unit of its last digit."""
    pattern, decimals = "", []
    for part in re.split(r"(\.\.\.|-?\d+\.\d+)", expected.strip()):
        if part == "...":
            pattern += ".*?"
        elif DECIMAL.fullmatch(part):  # as many decimals as shown
            pattern += r"(-?\d+\.\d{%d})" % len(part.split(".")[1])
            decimals.append(part)
        else:
            pattern += re.escape(part)
    found = re.fullmatch(pattern, actual.strip(), re.S)
    if found is None:
        return False
    for want, got in zip(decimals, found.groups()):
        unit = 10.0 ** -len(want.split(".")[1])
        if abs(float(got) - float(want)) > unit * (1 + 1e-9):
            return False
    return True


def shown_output_matches(shown: str, printed: str) -> bool:
    """The comment is the output, or the output followed by ": explanation"."""
    candidates = [shown] + [shown[:m.start()] for m in re.finditer(": ", shown)]
    return any(text_matches(c, printed) for c in candidates if c.strip())


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.replace(" ", "").split(",") if d)


def _shape_of(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    return tuple(int(d) for d in shape) if shape is not None else None


def _is_pil(value: Any) -> bool:
    return isinstance(value, Image.Image)


def _check_long_tensor(m: re.Match, value: Any) -> str | None:
    import torch

    want = _dims(m.group(1))
    if not (isinstance(value, torch.Tensor) and value.dtype == torch.long and tuple(value.shape) == want):
        return f"is {_describe(value)}, not a LongTensor {want}"
    return None


def _check_uint8(m: re.Match, value: Any) -> str | None:
    want = _dims(m.group(1))
    if str(getattr(value, "dtype", "")).removeprefix("torch.") != "uint8" or _shape_of(value) != want:
        return f"is {_describe(value)}, not uint8 {want}"
    return None


def _check_shape(m: re.Match, value: Any) -> str | None:
    want = _dims(m.group(1))
    return None if _shape_of(value) == want else f"is {_describe(value)}, not of shape {want}"


def _check_pil(m: re.Match, value: Any) -> str | None:
    want = (int(m.group(1)), int(m.group(2)))
    return None if _is_pil(value) and value.size == want else f"is {_describe(value)}, not a PIL image {want[0]}×{want[1]}"


def _check_pil_list(m: re.Match, value: Any) -> str | None:
    n = int(m.group(1))
    ok = isinstance(value, list) and len(value) == n and all(_is_pil(v) for v in value)
    return None if ok else f"is {_describe(value)}, not a list of {n} PIL images"


def _describe(value: Any) -> str:
    if _is_pil(value):
        return f"a PIL image {value.size[0]}×{value.size[1]}"
    if isinstance(value, list):
        return f"a list of {len(value)} {type(value[0]).__name__ if value else 'items'}"
    shape = _shape_of(value)
    if shape is not None:
        return f"{type(value).__name__} {getattr(value, 'dtype', '')} {shape}"
    return type(value).__name__


# what an assignment's trailing comment may claim about the value, at the start of the comment
VALUE_CLAIMS: list[tuple[re.Pattern, Callable[[re.Match, Any], str | None]]] = [
    (re.compile(r"LongTensor \(([\d, ]+)\)"), _check_long_tensor),
    (re.compile(r"uint8 \(([\d, ]+)\)"), _check_uint8),
    (re.compile(r"PIL\.Image (\d+)[×x](\d+)\b"), _check_pil),
    (re.compile(r"list of (\d+) PIL images?\b"), _check_pil_list),
    (re.compile(r"\(([\d, ]+)\)(?=$|[:;,\s])"), _check_shape),
]


def value_claim(comment: str | None) -> tuple[re.Match, Callable[[re.Match, Any], str | None]] | None:
    """The claim a comment makes about an assigned value, or None for prose."""
    for pattern, check in VALUE_CLAIMS:
        m = pattern.match(comment or "")
        if m:
            return m, check
    return None


@dataclass
class Statement:
    node: ast.stmt
    target: str | None      # the single name it assigns, if any
    comment: str | None     # the comment at the end of its last line


def statements(code: str) -> list[Statement]:
    """The block's top-level statements, to run one by one, with their trailing comments."""
    comments = {tok.start[0]: tok.string[1:].strip()
                for tok in tokenize.generate_tokens(io.StringIO(code).readline) if tok.type == tokenize.COMMENT}
    out = []
    for node in ast.parse(code).body:
        target = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target = node.targets[0].id
        out.append(Statement(node, target, comments.get(node.end_lineno)))
    return out


class PrintRecorder:
    """Stands in for ``print`` in the README's namespace: prints as usual, and records what each
    call site printed, by line of the block."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.by_line: dict[int, list[str]] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("file") is not None:  # printing to a file is not output
            builtins.print(*args, **kwargs)
            return
        buf = io.StringIO()
        builtins.print(*args, **{**kwargs, "file": buf})
        sys.stdout.write(buf.getvalue())
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename != self.filename:
            frame = frame.f_back  # printed from a function the block defined
        if frame is not None:
            self.by_line.setdefault(frame.f_lineno, []).append(buf.getvalue().removesuffix("\n"))


def output_problems(block: Block, recorder: PrintRecorder, stdout: str, namespace: dict[str, Any]) -> list[str]:
    """What the README shows for ``block`` and what it printed, disagreeing."""
    problems = []
    if block.output is not None and not text_matches(block.output, stdout):
        problems.append(f"the ```text block after it shows\n{block.output.rstrip()}\nbut the block printed\n{stdout.rstrip()}")
    for call in print_calls(block.code):
        where = f"README.md:{block.line + call.first}"
        printed = [text for line in range(call.first, call.last + 1) for text in recorder.by_line.get(line, [])]
        if call.shown is None:
            if block.output is None:
                problems.append(f"{where} prints but the README does not show the output "
                                f"(a trailing `# OUTPUT` comment or a ```text block after the snippet)")
            continue
        if not printed:
            problems.append(f"{where} shows {call.shown!r} but never printed")
            continue
        text = "\n".join(printed)
        if not shown_output_matches(call.shown, text):
            problems.append(f"{where} shows  {call.shown}\n    but printed  {text}")
    return problems


# ------------------------------------------------------------------------------------- running
def provide_images(code: str, workdir: Path) -> None:
    for name in IMAGE_NAME.findall(code):
        target = workdir / name
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        source = REPO_ROOT / name
        if source.is_file():
            shutil.copy(source, target)
        else:
            Image.fromarray(random_rgb(80, 64)).save(target)


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi: records calls, uploads nothing."""

    calls: list[tuple[str, dict]] = []

    def __init__(self, *args, **kwargs) -> None:
        pass

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", dict(kwargs, repo_id=repo_id)))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return f"https://huggingface.co/{kwargs['repo_id']}/commit/0"


def test_readme_has_python_examples():
    assert README.is_file(), "README.md is missing"
    assert python_blocks(README.read_text(encoding="utf-8")), "README.md has no ```python blocks"


def test_readme_python_blocks_run_and_print_what_the_readme_shows(tmp_path, monkeypatch):
    if find_shipped(DEFAULT_MODEL) is None:
        pytest.skip(f"the README uses the shipped default model {DEFAULT_MODEL!r}, whose weights are not "
                    f"in weights/{DEFAULT_MODEL}/ yet")
    import huggingface_hub

    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    (tmp_path / "weights").symlink_to(REPO_ROOT / "weights", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
    namespace: dict = {"__name__": "__readme__"}
    problems, compared = [], 0
    for block in blocks:
        provide_images(block.code, tmp_path)
        filename = f"README.md:{block.line}"
        namespace["print"] = recorder = PrintRecorder(filename)
        stdout = io.StringIO()
        for stmt in statements(block.code):
            try:
                with contextlib.redirect_stdout(stdout):
                    exec(compile(ast.Module([stmt.node], []), filename, "exec"), namespace)
            except Exception as e:
                raise AssertionError(f"the README.md python block at line {block.line} failed at line "
                                     f"{block.line + stmt.node.lineno}: {type(e).__name__}: {e}") from e
            claim = value_claim(stmt.comment) if stmt.target else None
            if claim is not None:
                compared += 1
                why = claim[1](claim[0], namespace[stmt.target])
                if why:
                    problems.append(f"README.md:{block.line + stmt.node.lineno}: {stmt.target} {why} "
                                    f"(the comment says {stmt.comment!r})")
        problems += output_problems(block, recorder, stdout.getvalue(), namespace)
        compared += len(print_calls(block.code)) + (block.output is not None)
    assert not problems, "the README's shown output is not what its code prints:\n" + "\n".join(problems)
    assert compared > 0, "no README block prints anything: nothing was compared"


# ------------------------------------------------------------------ the rules, without the model
def test_block_extraction_honours_the_skip_mark():
    text = ("# T\n```python\nx = 1\n```\n\n" + SKIP_MARK + "\n```python\nraise SystemExit\n```\n"
            "```bash\nvqct --help\n```\n```python title\ny = 2\n```\n")
    assert python_blocks(text) == [(2, "x = 1\n"), (13, "y = 2\n")]


def test_text_block_right_after_a_python_block_is_its_output():
    text = ("```python\nprint(1)\n```\n\n```text\n1\n```\n"
            "```python\nprint(2)\n```\nSome prose.\n```text\nnot output\n```\n")
    blocks = readme_blocks(text)
    assert [(b.code, b.output) for b in blocks] == [("print(1)\n", "1\n"), ("print(2)\n", None)]


def test_print_comments_are_the_shown_outputs():
    code = ("x = 3  # not a print\nprint(x, [1, 2])   # 3 [1, 2]: explanation\nprint(\n    x,\n)  # 3\n"
            "print(x)\n# print(x)  # 9\n")
    assert print_calls(code) == [PrintCall(2, 2, "3 [1, 2]: explanation"), PrintCall(3, 5, "3"), PrintCall(6, 6, None)]


@pytest.mark.parametrize("shown, printed, ok", [
    ("torch.Size([38, 57, 3]) (300, 451): (height, width)", "torch.Size([38, 57, 3]) (300, 451)", True),
    ("torch.Size([38, 57, 3]) (300, 451): (height, width)", "torch.Size([38, 56, 3]) (300, 451)", False),
    ("['white', 'black', 'yellow'] 2424: adjectives, then nouns", "['white', 'black', 'yellow'] 2424", True),
    ("['white', 'black', 'yellow'] 2424: adjectives, then nouns", "['white', 'black', 'yellow'] 2425", False),
    ("['white', 'black', 'yellow'] 2424", "['white', 'black', 'red'] 2424", False),
    ("676 1502 torch.Size([17299, 2])", "676 1502 torch.Size([17299, 2])", True),
    ("676 1502 torch.Size([17299, 2])", "676 1502", False),            # a prefix of the output is not enough
    ("676", "676 1502", False),
    ("{'a': 1}", "{'a': 1}", True),                                     # ": " inside the output itself
    ("PSNR 21.52 dB", "PSNR 21.53 dB", True),                           # one unit of the last digit
    ("PSNR 21.52 dB", "PSNR 21.54 dB", False),
    ("PSNR 21.5 dB", "PSNR 21.58 dB", False),                           # the digits shown are the digits printed
    ("encoded in ... s", "encoded in 0.173 s", True),                   # a timing
    ("encoded in ... s", "encoded in 0.173 ms", False),
])
def test_shown_output_rules(shown, printed, ok):
    assert shown_output_matches(shown, printed) is ok


def test_mismatches_and_unshown_prints_are_reported():
    code = "print(1 + 1)  # 3\nprint('a')\nif False:\n    print(0)  # 0\n"
    block = Block(10, code, None)
    recorder = PrintRecorder("README.md:10")
    namespace = {"print": recorder}
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(code, recorder.filename, "exec"), namespace)
    assert stdout.getvalue() == "2\na\n"
    problems = output_problems(block, recorder, stdout.getvalue(), namespace)
    assert len(problems) == 3
    assert "README.md:11 shows  3" in problems[0] and "printed  2" in problems[0]
    assert "README.md:12 prints but the README does not show the output" in problems[1]
    assert "README.md:14 shows '0' but never printed" in problems[2]
    # with a ```text block the unshown print is covered, and the block's whole stdout is compared
    assert output_problems(Block(10, code, "2\na\n"), recorder, stdout.getvalue(), namespace)[:1] == [problems[0]]
    wrong = output_problems(Block(10, code, "2\nb\n"), recorder, stdout.getvalue(), namespace)
    assert "the ```text block after it shows" in wrong[0]


def test_assignment_comments_that_claim_a_value_are_recognised_and_checked():
    import numpy as np
    import torch

    code = ("t = f()  # LongTensor (32, 32, 3): (h, w, k+1)\nimg = g()  # PIL.Image 256×256\n"
            "b = h()  # (2, 32, 32, 3)\nlst = k()  # list of 2 PIL images\narr = m()  # uint8 (2, 4, 4, 3); more\n"
            "same = n()  # decode(encode(image))\nx, y = p()  # (2, 3)\nq()  # (2, 3)\n")
    found = [(s.target, s.comment) for s in statements(code)]
    assert [t for t, _ in found] == ["t", "img", "b", "lst", "arr", "same", None, None]
    claims = {t: value_claim(c) for t, c in found if t}
    assert claims["same"] is None  # prose

    def verdict(name, value):
        m, check = claims[name]
        return check(m, value)

    assert verdict("t", torch.zeros(32, 32, 3, dtype=torch.long)) is None
    assert "not a LongTensor" in verdict("t", torch.zeros(32, 32, 3))               # float
    assert "not a LongTensor" in verdict("t", torch.zeros(32, 31, 3, dtype=torch.long))
    assert verdict("img", Image.new("RGB", (256, 256))) is None
    assert "not a PIL image 256×256" in verdict("img", Image.new("RGB", (256, 255)))
    assert verdict("b", torch.zeros(2, 32, 32, 3)) is None and verdict("b", torch.zeros(1, 32, 32, 3))
    assert verdict("lst", [Image.new("RGB", (2, 2))] * 2) is None and verdict("lst", [Image.new("RGB", (2, 2))])
    assert verdict("arr", np.zeros((2, 4, 4, 3), np.uint8)) is None
    assert "not uint8" in verdict("arr", np.zeros((2, 4, 4, 3), np.float32))
