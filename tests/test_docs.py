"""README.md and docs/*.md: every code block runs, or is checked, or says why it cannot be.

A marker on the line before a fenced block says how (docs/testing-docs.md has the table):
`<!-- docs-test: run -->` (the default: python blocks run in a fresh interpreter, bash blocks in
bash -e, cwd a temporary folder), `slow` (run with Fashion-MNIST, under -m slow), `flags` (each
command parsed by its own command line and stopped before it works; scripts get bash -n and
their commands' flags; pip lines their extras), `skip KIND: reason` (KIND in SKIP_KINDS), and
`pending=N[,M]` after a mode for a feature of issue N not landed yet (strict xfail). ```text
blocks are not code. Python blocks take about 5 s each (importing Keras): keep them few.
"""

import ast
import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(
    os.path.join("docs", f) for f in os.listdir(os.path.join(REPO, "docs")) if f.endswith(".md"))
SKIP_KINDS = ("gpu", "network", "long", "android")
RUNNABLE = ("python", "bash")
NOT_CODE = ("text",)
MARKER = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\S*)\s*$")
TIMEOUT_S = 180  # a block that needs longer belongs under `skip long:`


class Block:
    """One fenced code block: page, 1-based line of its fence, language, marker, source."""

    def __init__(self, page, line, lang, marker, source):
        self.page, self.line, self.lang, self.source = page, line, lang, source
        words = (marker or "run").split(None, 1)
        self.mode = words[0]
        self.reason = words[1] if len(words) > 1 else ""
        pending = re.search(r"\bpending=([\d,]+)", self.reason)  # issue numbers
        self.pending = pending.group(1) if pending else None

    @property
    def id(self):
        return f"{self.page}:{self.line}"


def read_blocks(page):
    """The fenced blocks of `page` with the marker just before each (blank lines allowed)."""
    with open(os.path.join(REPO, page)) as f:
        lines = f.read().splitlines()
    blocks, marker, i = [], None, 0
    while i < len(lines):
        found = MARKER.search(lines[i])
        fence = FENCE.match(lines[i])
        if found:
            marker = found.group(1)
        elif fence:
            start, body = i, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            assert i < len(lines), f"{page}:{start + 1}: the fence is never closed"
            blocks.append(Block(page, start + 1, fence.group(1), marker, "\n".join(body) + "\n"))
            marker = None
        elif lines[i].strip():
            marker = None  # a marker belongs to the next block only
        i += 1
    return blocks


LINKED = PAGES + ["CHANGELOG.md"]  # pages whose relative links are checked
BLOCKS = [b for page in PAGES for b in read_blocks(page)]


def _env(tmp_path, data_dir=None):
    """Environment of a block: the repository importable, this interpreter as `python`."""
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    if not (shim / "python").exists():  # a script, not a link: a venv is found from its path
        (shim / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
        (shim / "python").chmod(0o755)
    return {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p),
            "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "MPLBACKEND": "Agg",
            "KERAS_HOME": str(tmp_path / "keras"),  # caches (folder manifests) stay in the test
            **({"KERAS_RESNET_DATA": data_dir} if data_dir else {})}


def _run(argv, tmp_path, what, data_dir=None):
    done = subprocess.run(argv, cwd=tmp_path, env=_env(tmp_path, data_dir), capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, (f"{what} failed (exit {done.returncode}):\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


# ------------------------------------------------------------------ flags: parse, then stop

# Runs a command line until its flags are parsed (absl's app.run or argparse's parse_args),
# checks what the CLI builds from them where it has a function for it, and stops there. One
# process per command line program: its first command runs the module, the others re-parse with
# the same flag definitions (or parser). Prints one JSON list: None or the error, per command.
CLI_CHECK = textwrap.dedent("""
    import argparse, contextlib, io, json, runpy, sys, traceback
    from absl import app, flags

    class Parsed(Exception):
        pass

    seen = {}

    def check_absl(argv):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(argv)  # unknown flags, bad values and missing required flags raise here
        found = seen["main"].__globals__
        if "apply_flags" in found and "recipes" in found:  # python -m train
            recipes, name = found["recipes"], flags.FLAGS.recipe or "paper_cifar"
            found["apply_flags"](recipes.resolve(name))
        for builder in ("spec_from_flags", "config_from_flags"):  # export, train.experiments
            if builder in found:
                found[builder]()

    def parsed_absl(main, argv=None, **kwargs):
        seen["main"] = main
        raise Parsed

    parse_args = argparse.ArgumentParser.parse_args

    def parsed_argparse(self, *args, **kwargs):
        seen["parser"] = self
        raise Parsed

    app.run = parsed_absl
    argparse.ArgumentParser.parse_args = parsed_argparse
    target, argvs = sys.argv[1], json.loads(sys.argv[2])
    results = []
    for argv in argvs:
        sys.argv = [target] + argv
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                if not seen:
                    try:
                        if target.endswith(".py"):
                            runpy.run_path(target, run_name="__main__")
                        else:
                            runpy.run_module(target, run_name="__main__", alter_sys=True)
                    except Parsed:
                        pass
                    if not seen:
                        raise RuntimeError(f"{target} ran without parsing a command line")
                if "main" in seen:
                    check_absl(sys.argv)
                else:
                    parse_args(seen["parser"], argv)
            results.append(None)
        except BaseException as e:  # argparse exits; an import or a recipe raises
            lines = traceback.format_exception_only(type(e), e)
            results.append((err.getvalue()[-1500:] + "".join(lines)[-1500:]).strip())
    print(json.dumps(results))
""")


def commands(source):
    """Shell command lines of a block: continuations joined, comments and blank lines gone."""
    joined = re.sub(r"\\\n\s*", " ", source)
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            out.append(words)
    return out


def setup_extras():
    """The extras_require names of setup.py (read from its syntax tree: nothing runs)."""
    with open(os.path.join(REPO, "setup.py")) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "extras_require":
            return {k.value for k in node.value.keys}
    raise AssertionError("setup.py has no extras_require")


def is_python(word):
    return os.path.basename(word) in ("python", "python3")


def script_commands(script):
    """The python commands of this repository's modules inside scripts/`script` (shell variables
    become X: any value parses as a string flag)."""
    with open(os.path.join(REPO, script)) as f:
        text = re.sub(r"\$\{[^}]*\}|\$[A-Za-z_]\w*", "X", f.read())
    return [w for w in commands(text) if is_python(w[0]) and w[1] == "-m"
            and os.path.isdir(os.path.join(REPO, w[2].split(".")[0]))]  # not pytest


def cli(words):
    """(target, args) of a python command: a module name or a script's absolute path."""
    if words[1] == "-m":
        return words[2], words[3:]
    return os.path.join(REPO, words[1]), words[2:]


def all_cli_commands():
    """Every python command that a `flags` block names, directly or through a script."""
    found = []
    for block in BLOCKS:
        if block.mode == "flags":
            for words in commands(block.source):
                if words[0] == "bash":
                    found += script_commands(words[1]) if os.path.isfile(
                        os.path.join(REPO, words[1])) else []
                elif is_python(words[0]):
                    found.append(words)
    return found


_CLI_RESULTS = {}


def _check_program(target, argvs, tmp_path):
    """{(target, argv): None or the error} for commands of one program, in one process."""
    work = tmp_path / f"cli{abs(hash(target))}"
    work.mkdir(exist_ok=True)
    (work / "cli_check.py").write_text(CLI_CHECK)
    out = _run([sys.executable, "cli_check.py", target, json.dumps(argvs)], work, target)
    return dict(zip(((target, tuple(a)) for a in argvs), json.loads(out.splitlines()[-1])))


def cli_error(words, tmp_path):
    """None when the command's flags parse (see CLI_CHECK), else the error. The first call
    checks every command of every `flags` block, one process per program, two at a time (most
    of the time goes into importing TensorFlow, on one core)."""
    key = (cli(words)[0], tuple(cli(words)[1]))
    if key not in _CLI_RESULTS:
        programs = {}
        for target, args in [cli(w) for w in all_cli_commands()] + [key]:
            programs.setdefault(target, set()).add(tuple(args))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for found in pool.map(lambda t: _check_program(t, sorted(programs[t]), tmp_path),
                                  sorted(programs)):
                _CLI_RESULTS.update(found)
    return _CLI_RESULTS[key]


def check_command(words, tmp_path, where):
    """Checks one command the way `flags` promises (see the module docstring)."""
    if is_python(words[0]):
        if words[1] != "-m":
            assert os.path.isfile(os.path.join(REPO, words[1])), f"{where}: no {words[1]}"
        error = cli_error(words, tmp_path)
        assert error is None, f"{where}: {shlex.join(words)}\n{error}"
    elif words[0] == "bash" and words[1].startswith("scripts/"):
        path = os.path.join(REPO, words[1])
        assert os.path.isfile(path), f"{where}: {words[1]} does not exist"
        _run(["bash", "-n", path], tmp_path, f"{where}: bash -n {words[1]}")
        for command in script_commands(words[1]):
            check_command(command, tmp_path, f"{where} -> {words[1]}")
    elif words[:2] == ["pip", "install"]:
        extras = set()
        for word in words[2:]:
            match = re.fullmatch(r"\.\[([\w,-]+)\]", word)
            if match:
                extras.update(match.group(1).split(","))
            else:
                assert word in ("-e", "-q", "."), f"{where}: no check for pip argument {word!r}"
        unknown = extras - setup_extras()
        assert not unknown, f"{where}: setup.py has no extras {sorted(unknown)}"
    else:
        raise AssertionError(f"{where}: `flags` has no check for {shlex.join(words)!r}; "
                             "mark the block `skip KIND: reason` or run it")


# ---------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("block", [
    pytest.param(b, marks=pytest.mark.slow) if b.mode == "slow" else b for b in BLOCKS],
    ids=[b.id for b in BLOCKS])
def test_code_block(block, tmp_path, request):
    if block.mode == "skip":
        kind = block.reason.split(":", 1)[0]
        assert kind in SKIP_KINDS and ":" in block.reason, (
            f"{block.id}: write `skip KIND: reason`, KIND in {SKIP_KINDS}; got {block.reason!r}")
        pytest.skip(f"{block.id}: {block.reason}")
    if block.lang in NOT_CODE:
        assert block.mode == "run", f"{block.id}: a ```text block is not code: drop its marker"
        return
    assert block.lang in RUNNABLE, (
        f"{block.id}: a ```{block.lang} block cannot run here: mark it `skip KIND: reason`")
    if block.pending:
        request.applymarker(pytest.mark.xfail(
            strict=True, reason=f"issues {block.pending} have not landed; when this passes, "
                                f"remove `pending={block.pending}` from the marker of {block.id}"))
    if block.mode == "flags":
        assert block.lang == "bash", f"{block.id}: `flags` checks command lines (```bash)"
        for words in commands(block.source):
            check_command(words, tmp_path, block.id)
    elif block.mode in ("run", "slow"):
        data_dir = request.getfixturevalue("fashion_dir") if block.mode == "slow" else None
        if block.lang == "python":
            (tmp_path / "block.py").write_text(block.source)
            _run([sys.executable, "block.py"], tmp_path, block.id, data_dir)
        else:
            _run(["bash", "-e", "-c", block.source], tmp_path, block.id, data_dir)
    else:
        raise AssertionError(f"{block.id}: unknown docs-test mode {block.mode!r}")


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")


def _anchors(page):
    """GitHub's anchors of a page's headings."""
    with open(os.path.join(REPO, page)) as f:
        heads = [l.lstrip("#").strip() for l in f.read().splitlines() if l.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("page", LINKED)
def test_relative_links_resolve(page):
    with open(os.path.join(REPO, page)) as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)  # links in code are not links
    broken = []
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(REPO, os.path.dirname(page), path)) if path \
            else os.path.join(REPO, page)
        if not os.path.exists(resolved):
            broken.append(target)
        elif anchor and resolved.endswith(".md") and anchor not in _anchors(
                os.path.relpath(resolved, REPO)):
            broken.append(target)
    assert not broken, f"{page}: links to nothing: {broken}"


def test_readme_is_a_guide():
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    assert len(text.splitlines()) < 200, "README.md is for a new user: move reference to docs/"
    for page in PAGES[1:]:
        assert f"({page})" in text, f"README.md does not link {page}"


def test_quickstart_is_the_ci_contract():
    """The Quickstart's block is exactly the two commands, and CI runs the second."""
    quick = [b for b in read_blocks("README.md") if "scripts/quickstart.sh" in b.source]
    assert len(quick) == 1, "README.md: one Quickstart block"
    assert commands(quick[0].source) == [["bash", "scripts/quickstart.sh"],
                                         ["bash", "scripts/test.sh"]]
    with open(os.path.join(REPO, ".ci", "run")) as f:
        assert "bash scripts/test.sh" in f.read()


@pytest.mark.slow
def test_readme_export_commands_run(fashion_dir, tmp_path):
    """The README's export block as written, on a quickstart run cut to 70 steps (the block's
    flags are checked in the default suite; this runs them: a few minutes on 2 cores)."""
    from PIL import Image

    from train import data

    (block,) = [b for b in read_blocks("README.md") if "python -m export.predict" in b.source
                and b.pending is None]
    run = ["python", "-m", "train", "--recipe=quickstart", "--scale=0.05",  # 70 steps
           "--run_dir=runs/quickstart"]
    _run(["bash", "-e", "-c", shlex.join(run)], tmp_path, shlex.join(run), fashion_dir)
    test, info = data.load("fashion_mnist", "test[:100]", data_dir=fashion_dir)
    for image, label in test.as_numpy_iterator():  # shirt.png, boot.png: images of those classes
        name = {"Shirt": "shirt.png", "Ankle boot": "boot.png"}.get(info.class_names[label])
        if name:
            Image.fromarray(image[..., 0]).save(tmp_path / name)
    assert (tmp_path / "shirt.png").exists() and (tmp_path / "boot.png").exists()
    out = _run(["bash", "-e", "-c", block.source], tmp_path, block.id, fashion_dir)
    assert os.path.isfile(tmp_path / "runs/quickstart/export/model_int8.tflite")
    assert "shirt.png: " in out and "boot.png: " in out, out[-2000:]
