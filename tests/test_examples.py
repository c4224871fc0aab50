"""examples/*.py run and print sensible results; ```python blocks in the docs run as written;
the `npas` commands the docs show parse with the real command line.

Doc blocks of one file run in order in one namespace (a later block may use an earlier one's
variables), in a fresh subprocess whose working directory is a temporary folder. A block fenced
as ```python no-run is shown to readers but not executed.
"""
import argparse
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import delegate_built

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", NPAS_PROGRESS="0",
           PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
# Every markdown file of the project: README.md and docs/*.md (paths relative to ROOT).
DOC_FILES = ["README.md"] + sorted(os.path.relpath(p, ROOT)
                                   for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
FENCE = re.compile(r"^```python([^\n`]*)\n(.*?)^```", re.S | re.M)


def python_blocks(text):
    """-> [(tags, code)] of the ```python blocks in markdown text."""
    return [(m.group(1).split(), m.group(2)) for m in FENCE.finditer(text)]


def test_block_extraction():
    text = ("intro\n```python\na = 1\n```\n\n```python no-run\nb = 2\n```\n"
            "```bash\nls\n```\n```python\nprint(a)\n```\n")
    blocks = python_blocks(text)
    assert [tags for tags, _ in blocks] == [[], ["no-run"], []]
    assert [code for _, code in blocks] == ["a = 1\n", "b = 2\n", "print(a)\n"]


def test_every_doc_is_checked():
    names = set(DOC_FILES)
    assert {"README.md", "docs/index.md", "docs/schemes.md", "docs/search.md"} <= names


@pytest.mark.parametrize("doc", DOC_FILES)
def test_no_run_blocks_are_valid_python(doc):
    """Blocks shown but not executed (fragments, Android, long training) still parse."""
    path = os.path.join(ROOT, doc)
    for i, (tags, code) in enumerate(python_blocks(open(path, encoding="utf-8").read())):
        if "no-run" in tags:
            compile(code, f"{doc}:block{i + 1}", "exec")


def _needs_delegate(path):
    """Docs whose runnable blocks load the npas delegate (skipped when it is not built)."""
    code = "".join(c for tags, c in python_blocks(open(os.path.join(ROOT, path),
                                                       encoding="utf-8").read())
                   if "no-run" not in tags)
    return any(k in code for k in ("Interpreter", "load_delegate", "delegate_stats"))


@pytest.mark.parametrize("doc", DOC_FILES)
def test_doc_python_blocks_run(doc, tmp_path):
    path = os.path.join(ROOT, doc)
    if not os.path.isfile(path):
        pytest.skip(f"{doc} not written")
    blocks = [code for tags, code in python_blocks(open(path, encoding="utf-8").read())
              if "no-run" not in tags]
    if not blocks:
        pytest.skip(f"{doc} has no runnable python block")
    if _needs_delegate(doc) and not delegate_built():
        pytest.skip("delegate library not built")
    # one script: each block announced, so a failure names its block
    script = ["import os", "os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')"]
    for i, code in enumerate(blocks):
        script.append(f"print('--- block {i + 1}', flush=True)")
        script.append(code)
    (tmp_path / "doc_blocks.py").write_text("\n".join(script))
    r = subprocess.run([sys.executable, "doc_blocks.py"], cwd=tmp_path, env=ENV,
                       capture_output=True, text=True, timeout=300)
    last = re.findall(r"--- block (\d+)", r.stdout)
    assert r.returncode == 0, (f"{doc}: block {last[-1] if last else '?'} of {len(blocks)} "
                               f"failed:\n{r.stderr[-3000:]}")
    assert last and int(last[-1]) == len(blocks)


@pytest.mark.skipif(not delegate_built(), reason="delegate library not built")
def test_quickstart_example(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "quickstart.py"),
                        str(tmp_path)], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout

    def number(label):
        m = re.search(rf"^{re.escape(label)}: ([\d.eE+-]+)", out, re.M)
        assert m, f"no '{label}' line in:\n{out}"
        return float(m.group(1))

    dense, pruned = number("dense keras accuracy"), number("pruned keras accuracy")
    stock, deleg = number("stock tflite accuracy"), number("delegate tflite accuracy")
    assert dense > 0.8 and pruned > 0.5
    assert stock == deleg
    assert abs(stock - pruned) < 0.02  # conversion keeps the model
    assert "identical predictions (stock vs delegate): True" in out
    assert number("max abs logit difference") < 1e-3
    m = re.search(r"delegate claimed (\d+) node", out)
    assert m and int(m.group(1)) >= 1
    m = re.search(r"file sizes: standard (\d+) bytes, npas format (\d+) bytes", out)
    assert m and int(m.group(2)) < int(m.group(1))  # the compact format is smaller
    for f in ("digits_bcr.tflite", "digits_bcr_npas.tflite"):
        assert (tmp_path / f).is_file()


# ---------------------------------------------------------------------------- shell commands
# README's command list: "    npas NAME   <the help line `npas --help` prints for NAME>".
COMMAND_LIST_LINE = re.compile(r"^ {4}npas (\w+) {2,}(\S.*)$", re.M)
# Whole commands a reader can type: 4-space indented lines and lines of ```bash blocks.
BASH_FENCE = re.compile(r"^```(?:bash|sh)\n(.*?)^```", re.S | re.M)
INDENTED_COMMAND = re.compile(r"^ {4}((?:npas|bash scripts/demo\.sh) .*)$", re.M)
# Synopses in running text and tables: `npas demo [--rate 0.875] ...`.
INLINE_COMMAND = re.compile(r"`((?:npas|bash scripts/demo\.sh) [^`]+)`")


def _doc_text(doc):
    return open(os.path.join(ROOT, doc), encoding="utf-8").read()


def _shown_commands(text):
    """-> (whole commands, synopses) shown in markdown text, as strings starting with `npas`."""
    def as_npas(cmd):
        cmd = cmd.split("  #")[0].strip()
        return re.sub(r"^bash scripts/demo\.sh\b", "npas demo", cmd)

    listed = {m.start() for m in COMMAND_LIST_LINE.finditer(text)}
    whole = [as_npas(m.group(1)) for m in INDENTED_COMMAND.finditer(text)
             if m.start() not in listed]
    for block in BASH_FENCE.findall(text):
        whole += [as_npas(line) for line in block.splitlines()
                  if line.startswith(("npas ", "bash scripts/demo.sh "))]
    return whole, [as_npas(m.group(1)) for m in INLINE_COMMAND.finditer(text)]


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option_strings(parser):
    """Every option of `parser` and of its nested sub-commands (npas latency ACTION)."""
    out = {o for action in parser._actions for o in action.option_strings}
    for sub in _subparsers(parser).values():
        out |= _option_strings(sub)
    return out


def test_shown_commands_extraction():
    text = ("    npas demo      train it\n    npas bench m.tflite --runs 5  # time it\n"
            "```bash\nnpas report a.json -o r\nls\n```\n"
            "see `npas inspect FILE [--json PATH\\|-]` and `bash scripts/demo.sh --quick`\n")
    whole, synopses = _shown_commands(text)
    assert whole == ["npas bench m.tflite --runs 5", "npas report a.json -o r"]
    assert synopses == ["npas inspect FILE [--json PATH\\|-]", "npas demo --quick"]


def test_readme_command_list_is_npas_help():
    from npas_keras import cli

    listed = COMMAND_LIST_LINE.findall(_doc_text("README.md"))
    assert listed, "README.md lost its command list"
    assert listed == [(c.name, c.help) for c in cli.available_commands()]


def command_problems(text):
    """What is wrong with the `npas` commands shown in markdown `text` (run in a scratch folder):
    each must name a real subcommand and real options, and whole commands must parse (files
    they name are created empty, as a reader's would exist)."""
    from npas_keras import cli

    parser = cli.build_parser()
    subs = _subparsers(parser)
    whole, synopses = _shown_commands(text)
    problems = []
    for cmd in whole + synopses:
        words = cmd.replace("\\|", "|").split()
        if words[1] not in subs:
            problems.append(f"`{cmd}`: no subcommand {words[1]!r}")
            continue
        known = _option_strings(subs[words[1]])
        problems += [f"`{cmd}`: npas {words[1]} has no {option}"
                     for option in (w.strip("[]").split("=")[0] for w in words[2:])
                     if option.startswith("-") and option != "-" and option not in known]
    for cmd in whole:
        argv = shlex.split(cmd)[1:]
        for arg in argv:
            if re.search(r"\.(tflite|json|keras|h5)$", arg):
                os.makedirs(os.path.dirname(arg) or ".", exist_ok=True)
                open(arg, "a").close()
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            problems.append(f"`{cmd}` does not parse (exit {exc.code})")
    return problems


def test_command_problems_are_found(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = ("    npas bench m.tflite --runs 5\n    npas bench m.tflite --runs five\n"
            "`npas inspect F [--jsn P]`, `npas frobnicate`, `bash scripts/demo.sh --quick`\n")
    assert command_problems(text) == ["`npas inspect F [--jsn P]`: npas inspect has no --jsn",
                                      "`npas frobnicate`: no subcommand 'frobnicate'",
                                      "`npas bench m.tflite --runs five` does not parse (exit 2)"]


@pytest.mark.parametrize("doc", DOC_FILES)
def test_doc_commands_match_the_cli(doc, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert command_problems(_doc_text(doc)) == [], doc
