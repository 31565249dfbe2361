"""Every code block of README.md runs, exactly as written, as a user who ran ``pip install .`` runs it.

The README is split into sections at its ``##`` headings (the text above the first one is a section of
its own). Each section runs in a fresh temporary directory; its blocks run in order, python blocks in
one interpreter (``sys.executable``) that keeps its namespace from block to block, shell blocks
(``bash``, ``sh``, ``shell``, ``console`` or no tag) with ``bash -e -o pipefail``. Blocks tagged
anything else (``text`` for outputs, trees and error samples; ``toml``...) are not run.

The environment is a user's who installed modelfmt into a venv and did not activate it: shell blocks
get PATH = the venv's ``bin`` + the system PATH (``modelfmt`` is found), python blocks the system PATH
alone (as ``.venv/bin/python script.py`` has it), and nothing of the suite's own setup
(``PYSPARK_PYTHON``, ``MODELFMT_*``) leaks in.

An HTML comment right above a block (renderers hide it) says how the block runs, e.g.
``<!-- readme-test: background, ready http://127.0.0.1:5001/ping -->``. Directives, comma-separated:

- ``skip: REASON``: not run. Only for what cannot run inside the suite (``make test``, ``pip install``).
- ``background``: the block's first command runs in the background until the ``ready`` URL answers 200;
  then the rest of the block runs; then the command gets SIGTERM and must exit with status 0. Its port
  must be free (the README uses fixed ports; a busy one fails the test, naming it).
- ``ready URL``: the URL polled for ``background``.
- ``in the checkout``: runs in the repository root instead of the section's directory (``make demo``).
- ``after #ANCHOR``: before this section runs, the files the section ``#ANCHOR`` left behind are
  copied into its directory (a section that serves or converts the Quickstart's ``model/``).
- ``file NAME``: the block is not run but written to ``NAME`` in the section's directory, for the
  blocks after it (a module, a ``pyproject.toml``).
- ``python mlflow``: a python block that runs in MLflow's environment ($MODELFMT_MLFLOW_PYTHON, else
  ``bench/.venv-mlflow``), in a process of its own.
- ``xfail: BUG``: the block fails because of a known bug of modelfmt's, one of ``KNOWN_BUGS`` below;
  strict: once it passes, the test fails until the marker is removed.

A block fails when a command exits non-zero, or when its output holds a scoring error body
(``"error_code"``: curl exits 0 on a 4xx); the failure shows the README line, the block and its output.
Sections that use docker get ``TAG`` (a tag unique to the run, for the README's ``TAG=${TAG:-...}``) and
``MODELFMT_BASE_IMAGE`` (the local base image); their containers and image are removed afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
VENV_BIN = os.path.dirname(sys.executable)
BASE_IMAGE = os.environ.get("MODELFMT_TEST_BASE_IMAGE", "modelfmt-base:bookworm")
BLOCK_TIMEOUT = 300
pytestmark = pytest.mark.timeout(600)

# Bugs of modelfmt (not of the README) that make a block fail today; `xfail: KEY` must name one.
KNOWN_BUGS: dict[str, str] = {}

PYTHON_TAGS = {"python", "py", "python3"}
SHELL_TAGS = {"bash", "sh", "shell", "console", ""}
# Which command lines may be skipped, and why: the suite cannot run itself, and `make test` installs.
SKIPPABLE = re.compile(r"^\s*(make test|pip install)\b")

_FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
_DIRECTIVE = re.compile(r"^<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@dataclass
class Block:
    """One fenced code block: where it is, its tag, its text and the directives above it."""

    line: int  # 1-based line of the opening fence
    tag: str
    code: str
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if "mlflow" in self.directives.get("python", ""):
            return "mlflow"
        if self.tag in PYTHON_TAGS:
            return "python"
        return "shell" if self.tag in SHELL_TAGS else "text"


@dataclass
class Section:
    """The text under one ``##`` heading (with its ``###`` subsections)."""

    title: str
    anchor: str
    line: int
    blocks: list[Block] = field(default_factory=list)

    def runnable(self) -> list[Block]:
        return [b for b in self.blocks if b.kind != "text" or "file" in b.directives]

    def directive(self, name: str) -> str | None:
        """A section-wide directive (``after``) from whichever block carries it."""
        return next((b.directives[name] for b in self.blocks if name in b.directives), None)


def anchor(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", title.replace("`", "").lower())
    return text.replace(" ", "-")


def parse_directives(text: str) -> dict[str, str]:
    """``background, ready URL, skip: why`` -> {"background": "", "ready": "URL", "skip": "why"}."""
    out: dict[str, str] = {}
    while text.strip():
        # skip: and xfail: take the rest of the comment as their reason (commas and all).
        m = re.match(r"\s*(skip|xfail)\s*:\s*(.*)$", text) or re.match(r"\s*(\w+)\s*([^,]*)(?:,|$)(.*)$", text)
        if m is None:
            raise ValueError(f"README directive not understood: {text!r}")
        out[m.group(1)] = m.group(2).strip()
        text = m.group(3) if m.lastindex == 3 else ""
    return out


def parse_readme(path: str = README) -> list[Section]:
    """The README's sections and their fenced blocks, with the directive comment above each."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    sections = [Section("(top)", "top", 1)]
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            opener, tag = fence.group(1), fence.group(2).lower()
            start = i
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith(opener):
                body.append(lines[i])
                i += 1
            prev = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            m = _DIRECTIVE.match(prev.strip())
            directives = parse_directives(m.group(1)) if m else {}
            sections[-1].blocks.append(Block(start + 1, tag, "\n".join(body) + "\n", directives))
        else:
            heading = _HEADING.match(line)
            if heading and len(heading.group(1)) <= 2 and sections[-1].line != i + 1:
                title = heading.group(2)
                sections.append(Section(title, anchor(title) if len(heading.group(1)) == 2 else "top", i + 1))
        i += 1
    return [s for s in sections if s.blocks]


SECTIONS = parse_readme()
SECTION_BY_ANCHOR = {s.anchor: s for s in SECTIONS}


# -- the environment a user has ---------------------------------------------------------------------

def _system_path() -> str:
    venv_bin = os.path.realpath(VENV_BIN)
    keep = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and os.path.realpath(p) != venv_bin]
    return os.pathsep.join(keep)


def user_env(kind: str, extra: dict[str, str]) -> dict[str, str]:
    """A clean environment: no venv activation, none of the suite's own settings."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("MODELFMT_", "PYSPARK_", "PYTEST_", "VIRTUAL_ENV", "PYTHON", "SPARK_"))
        and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")  # `make test` runs this; `make demo` is a user's
    }
    path = _system_path()
    env["PATH"] = path if kind in ("python", "mlflow") else VENV_BIN + os.pathsep + path
    # Faster JVM start for the Spark blocks; changes no result.
    env["JAVA_TOOL_OPTIONS"] = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    env.update(extra)
    return env


def mlflow_python() -> str:
    path = os.environ.get("MODELFMT_MLFLOW_PYTHON") or os.path.join(ROOT, "bench", ".venv-mlflow", "bin", "python")
    if not os.path.exists(path):
        pytest.fail(f"the README's MLflow block needs MLflow's venv: {path} is missing (make mlflow-venv)")
    return path


# -- running blocks -----------------------------------------------------------------------------------

# The interpreter a section's python blocks share: exec's each block in one namespace, as a script.
_DRIVER = r"""
import json, os, sys, traceback
ns = {"__name__": "__main__", "__file__": os.path.abspath("script.py")}
requests_in, answers_out = os.fdopen(int(sys.argv[1]), "r"), os.fdopen(int(sys.argv[2]), "w")
sys.argv = ["script.py"]
for request in requests_in:
    block = json.loads(request)
    ok = True
    try:
        exec(compile("\n" * block["line"] + block["code"], block["file"], "exec"), ns)
    except BaseException:
        ok = False
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    answers_out.write(json.dumps(ok) + "\n")
    answers_out.flush()
"""


class PythonSession:
    """A python process that runs the section's python blocks one after the other."""

    def __init__(self, cwd: str, env: dict[str, str], log) -> None:
        self._req_r, self._req_w = os.pipe()
        self._ans_r, self._ans_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _DRIVER, str(self._req_r), str(self._ans_w)],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            pass_fds=(self._req_r, self._ans_w), start_new_session=True,
        )
        os.close(self._req_r)
        os.close(self._ans_w)
        self._requests = os.fdopen(self._req_w, "w")
        self._answers = os.fdopen(self._ans_r, "r")

    def run(self, block: Block, timeout: float = BLOCK_TIMEOUT) -> bool:
        import select

        self._requests.write(json.dumps({"line": block.line, "code": block.code, "file": README}) + "\n")
        self._requests.flush()
        ready, _, _ = select.select([self._answers], [], [], timeout)
        if not ready:
            self.close(kill=True)
            raise AssertionError(f"README.md:{block.line}: python block still running after {timeout:.0f} s")
        answer = self._answers.readline()
        if not answer:
            raise AssertionError(f"README.md:{block.line}: the interpreter died (exit {self.proc.wait()})")
        return bool(json.loads(answer))

    def close(self, kill: bool = False) -> None:
        """End the interpreter: stdin closed (Spark and servers stop as in a script's exit), else killed."""
        try:
            self._requests.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5 if kill else 120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._answers.close()


_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*\s*(#.*)?$")


def _is_command(line: str) -> bool:
    """A line that runs something: not blank, not a comment, not a bare ``NAME=value``."""
    text = line.strip()
    return bool(text) and not text.startswith("#") and not _ASSIGNMENT.match(text)


def shell_script(block: Block) -> str:
    """The block as a bash script; for ``background``, its first command is started in the background,
    waited for until the ready URL answers 200, and stopped with SIGTERM after the rest, exit 0 expected."""
    if "background" not in block.directives:
        return block.code
    url = block.directives.get("ready")
    assert url, f"README.md:{block.line}: 'background' needs 'ready URL'"
    lines = block.code.splitlines()
    first = next(i for i, ln in enumerate(lines) if _is_command(ln))
    last = first
    while lines[last].rstrip().endswith("\\"):
        last += 1
    head, command, rest = lines[:first], lines[first:last + 1], lines[last + 1:]
    return "\n".join([
        *head,
        # exec: $! is the command itself, so the SIGTERM reaches it (a trailing comment ends at the newline).
        "( exec " + "\n".join(command) + "\n) &",
        "__srv=$!",
        "trap 'kill -TERM $__srv 2>/dev/null || true; wait $__srv 2>/dev/null || true' EXIT",
        "__n=0",
        f"until [ \"$(curl -s -o /dev/null -w '%{{http_code}}' '{url}')\" = 200 ]; do",
        "  kill -0 $__srv 2>/dev/null ||",
        f"    {{ echo 'readme-test: the command exited before {url} answered 200' >&2; exit 1; }}",
        "  __n=$((__n + 1)); [ $__n -lt 900 ] ||",
        f"    {{ echo 'readme-test: {url} did not answer 200 in 180 s' >&2; exit 1; }}",
        "  sleep 0.2",
        "done",
        *rest,
        "trap - EXIT",
        "kill -TERM $__srv",
        "__rc=0; wait $__srv || __rc=$?",
        "[ $__rc -eq 0 ] ||",
        "  { echo \"readme-test: the background command exited $__rc after SIGTERM (expected 0)\" >&2; exit 1; }",
        "",
    ])


def run_shell(block: Block, cwd: str, env: dict[str, str], log) -> bool:
    proc = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", shell_script(block)],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        return proc.wait(timeout=BLOCK_TIMEOUT) == 0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"README.md:{block.line}: shell block still running after {BLOCK_TIMEOUT} s") from None


def check_port_free(block: Block) -> None:
    """The README's servers use fixed ports: a busy one is a clear failure, not a confusing answer."""
    url = block.directives.get("ready")
    if not url:
        return
    port = urlsplit(url).port or 80
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            pytest.fail(f"README.md:{block.line}: port {port} is in use; the README's example listens there (free it)")


# -- docker ----------------------------------------------------------------------------------------

def uses_docker(section: Section) -> bool:
    return any(re.search(r"^\s*(docker |modelfmt build-docker)", b.code, re.M) for b in section.runnable())


def docker_ready() -> None:
    """A daemon and the local base image; the (idempotent) setup script makes what is missing."""
    ok = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True, check=False).returncode == 0
    if not ok:
        subprocess.run(
            ["sh", os.path.join(ROOT, "scripts", "docker-setup.sh")],
            env=dict(os.environ, MODELFMT_BASE_IMAGE=BASE_IMAGE), check=True, timeout=900,
        )


def _docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)


def deps_caches() -> set[str]:
    """The dependency-stage cache images on the daemon (``build-docker`` keeps one per dependency set)."""
    listed = _docker(
        "images", "--filter", "label=org.modelfmt.image=deps-cache", "--format", "{{.Repository}}:{{.Tag}}"
    )
    return set(listed.stdout.split())


def docker_cleanup(tag: str, caches_before: set[str]) -> list[str]:
    """Remove the containers of ``tag``, the image, and a dependency cache image the build made (one
    that was there before may be another run's); returns what could not be removed."""
    docker = _docker
    for cid in docker("ps", "-a", "-q", "--filter", f"ancestor={tag}").stdout.split():
        docker("rm", "-f", cid)
    if docker("image", "inspect", tag).returncode == 0:
        docker("image", "rm", tag)
    for cache in sorted(deps_caches() - caches_before):
        docker("image", "rm", cache)
    left = docker("ps", "-a", "-q", "--filter", f"ancestor={tag}").stdout.split()
    if docker("image", "inspect", tag).returncode == 0:
        left.append(tag)
    return left


# -- one section --------------------------------------------------------------------------------------

_done: dict[str, str] = {}  # anchor -> directory a passing run of that section left


def _report(block: Block, log_path: str, start: int, why: str) -> str:
    with open(log_path, "rb") as f:
        f.seek(start)
        output = f.read().decode("utf-8", "replace")
    if len(output) > 12000:
        output = output[:3000] + "\n[...]\n" + output[-9000:]
    return (
        f"README.md:{block.line}: the {block.tag or 'untagged'} block {why}\n"
        f"--- block ---\n{block.code}--- output ---\n{output}"
    )


def run_section(section: Section, workdir: str) -> None:
    """Run every block of ``section`` in ``workdir``; fails (or xfails) on the first block that fails."""
    after = section.directive("after")
    if after:
        dep = SECTION_BY_ANCHOR.get(after.lstrip("#"))
        assert dep is not None, f"README.md:{section.line}: 'after {after}': no such section"
        if dep.anchor not in _done:
            dep_dir = os.path.join(os.path.dirname(workdir), f"dep-{dep.anchor}")
            os.makedirs(dep_dir)
            run_section(dep, dep_dir)
        shutil.copytree(_done[dep.anchor], workdir, symlinks=True, dirs_exist_ok=True)

    extra: dict[str, str] = {}
    tag = None
    if uses_docker(section):
        docker_ready()
        tag = f"modelfmt-readme-{uuid.uuid4().hex[:10]}:1"
        caches_before = deps_caches()
        extra = {"TAG": tag, "MODELFMT_BASE_IMAGE": BASE_IMAGE}

    log_path = os.path.join(os.path.dirname(workdir), f"{section.anchor}.log")
    log = open(log_path, "ab")
    session: PythonSession | None = None
    try:
        for block in section.runnable():
            d = block.directives
            if "skip" in d:
                continue
            if "file" in d:
                target = os.path.join(workdir, d["file"])
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "w", encoding="utf-8") as f:
                    f.write(block.code)
                continue
            check_port_free(block)
            cwd = ROOT if "in" in d and "checkout" in d["in"] else workdir
            start = log.tell()
            log.write(f"=== README.md:{block.line} ({block.kind}) ===\n".encode())
            log.flush()
            if block.kind == "python":
                if session is None:
                    session = PythonSession(workdir, user_env("python", extra), log)
                ok = session.run(block)
            elif block.kind == "mlflow":
                proc = subprocess.run(
                    [mlflow_python(), "-c", "\n" * (block.line) + block.code], cwd=cwd,
                    env=user_env("mlflow", extra), stdout=log, stderr=subprocess.STDOUT, timeout=BLOCK_TIMEOUT,
                    check=False,
                )
                ok = proc.returncode == 0
            else:
                ok = run_shell(block, cwd, user_env("shell", extra), log)
            log.flush()
            why = "failed"
            if ok and block.kind != "python" and _has_error_body(log_path, start):
                ok, why = False, 'answered an error body ("error_code")'
            if "xfail" in d:
                bug = d["xfail"]
                assert bug in KNOWN_BUGS, f"README.md:{block.line}: xfail {bug!r} is not in KNOWN_BUGS"
                if ok:
                    pytest.fail(f"README.md:{block.line}: passes now; remove its 'xfail: {bug}' marker")
                pytest.xfail(f"README.md:{block.line}: {KNOWN_BUGS[bug]}")
            if not ok:
                pytest.fail(_report(block, log_path, start, why), pytrace=False)
    finally:
        if session is not None:
            session.close()
        log.close()
        if tag is not None:
            left = docker_cleanup(tag, caches_before)
            assert not left, f"docker objects of the README test left behind: {left}"
    _done[section.anchor] = workdir


def _has_error_body(log_path: str, start: int) -> bool:
    with open(log_path, "rb") as f:
        f.seek(start)
        return b'"error_code"' in f.read()


# -- tests --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("section", [s for s in SECTIONS if s.runnable()], ids=lambda s: s.anchor)
def test_readme_section_runs(section: Section, tmp_path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    run_section(section, str(workdir))


def test_only_the_agreed_blocks_are_skipped() -> None:
    """Skips are for `make test` and `pip install` lines only; every other block runs."""
    for section in SECTIONS:
        for block in section.blocks:
            if "skip" not in block.directives:
                continue
            commands = [ln for ln in block.code.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
            assert commands and all(SKIPPABLE.match(c) for c in commands), (
                f"README.md:{block.line}: skipped, but it holds more than `make test` / `pip install` lines"
            )
            assert block.directives["skip"], f"README.md:{block.line}: a skip needs its reason"


def test_directives_are_known_and_attached() -> None:
    """A directive comment sits right above a runnable block and uses only the documented names."""
    known = {"skip", "background", "ready", "in", "after", "python", "xfail", "file"}
    for section in SECTIONS:
        for block in section.blocks:
            assert set(block.directives) <= known, f"README.md:{block.line}: unknown directive {block.directives}"
            if block.directives and "file" not in block.directives:
                assert block.kind != "text", f"README.md:{block.line}: a directive on a block that does not run"
    with open(README, encoding="utf-8") as f:
        count = sum(1 for ln in f if _DIRECTIVE.match(ln.strip()))
    attached = sum(1 for s in SECTIONS for b in s.blocks if b.directives)
    assert count == attached, "a readme-test comment is not right above a code block"


def test_harness_reports_the_failing_block(tmp_path) -> None:
    """The harness itself: python blocks share a namespace, a failing command fails with the README line,
    the block and its output, and a background command must exit 0 on SIGTERM."""
    from modelfmt.serving.testing import free_port

    port = free_port("127.0.0.1")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# t\n\n## Shared\n\n```python\nn = 41\n```\n\n```python\nassert n + 1 == 42\nprint('ok', n + 1)\n```\n\n"
        "## Failing\n\n```bash\necho before\nfalse\necho after\n```\n\n"
        "## Server\n\n"
        f"<!-- readme-test: background, ready http://127.0.0.1:{port}/ -->\n"
        f"```bash\npython3 -m http.server {port} --bind 127.0.0.1   # dies of SIGTERM: status 143\n"
        f"curl -s -o /dev/null localhost:{port}/\n```\n"
    )
    shared, failing, server = parse_readme(str(readme))
    assert [b.line for b in shared.blocks] == [5, 9]
    work = tmp_path / "shared"
    work.mkdir()
    run_section(shared, str(work))
    messages = []
    for section in (failing, server):
        work = tmp_path / section.anchor
        work.mkdir()
        with pytest.raises(pytest.fail.Exception) as failed:
            run_section(section, str(work))
        messages.append(str(failed.value))
    assert messages[0].startswith("README.md:16: the bash block failed\n--- block ---\necho before\nfalse\n")
    assert "\nbefore\n" in messages[0] and "\nafter\n" not in messages[0]
    assert "the background command exited 143 after SIGTERM (expected 0)" in messages[1]
