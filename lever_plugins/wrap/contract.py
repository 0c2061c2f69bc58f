"""What an adapter needs from its upstream, checked from the source text alone.

Upstream trainers import CUDA-only packages (apex, custom kernels) at module level, so the check
parses files with :mod:`ast` and never imports them: drift (a renamed function, a changed
signature, a removed module) is found on any machine, before training starts.
"""

from __future__ import annotations

import ast
import hashlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Symbol:
    """One upstream name an adapter relies on.

    ``module``: the module's import name in the upstream process (``"dl_base"``); ``file``: its path from
    the upstream root when that is not ``module`` with dots as slashes (``"src/dataset.py"``); ``qualname``:
    ``"Class.method"``, ``"function"`` or a module-level assignment (``"LOSSES"``); ``params``: the
    parameter names in order (``"*args"``/``"**kw"`` for variadics), or None to check existence only.
    ``why`` says what the adapter does with it, for the doctor's report.
    """

    module: str
    qualname: str
    params: tuple[str, ...] | None = None
    why: str = ""
    file: str = ""

    @property
    def path(self) -> str:
        return self.file or self.module.replace(".", "/") + ".py"

    def __str__(self) -> str:
        return f"{self.module}.{self.qualname}" if self.qualname else self.module


@dataclass(frozen=True)
class SourceText:
    """Text an adapter relies on in an upstream that is not Python (C++ option flags, function names,
    Makefile targets): ``pattern`` (a regular expression, multi-line) must match in ``file`` (a path
    from the upstream root, or a glob such as ``"Source/*.cpp"``: found when any matching file has it).
    ``label`` is what the doctor prints. Build them with :meth:`flag`, :meth:`function` or directly.
    """

    file: str
    pattern: str
    label: str
    why: str = ""

    @property
    def path(self) -> str:
        return self.file

    def __str__(self) -> str:
        return self.label

    @classmethod
    def flag(cls, file: str, flag: str, sets: str = "", why: str = "") -> SourceText:
        """A command-line option compared as a string literal (``"-kleaf"``); with ``sets``, the comparison
        must be followed by an assignment to that variable (``opt == "-w" ) weighted = ...``), so an option
        that now sets something else is drift too."""
        pattern = re.escape(f'"{flag}"')
        if sets:
            pattern += r"\s*\)\s*\{?\s*" + re.escape(sets) + r"\s*="
        return cls(file, pattern, f"option {flag}" + (f" -> {sets}" if sets else ""), why)

    @classmethod
    def function(cls, file: str, name: str, why: str = "") -> SourceText:
        """A C/C++ function or method name followed by ``(`` (a definition or a call)."""
        return cls(file, r"\b" + r"\s*::\s*".join(map(re.escape, name.split("::"))) + r"\s*\(", f"{name}()", why)


Requirement = Symbol | SourceText


@dataclass(frozen=True)
class Problem:
    symbol: Requirement
    what: str

    def line(self) -> str:
        return f"{self.symbol.path}: {self.symbol}: {self.what}"


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[str, ...]:
    a = fn.args
    names = [x.arg for x in (*a.posonlyargs, *a.args)]
    if a.vararg:
        names.append("*" + a.vararg.arg)
    names += [x.arg for x in a.kwonlyargs]
    if a.kwarg:
        names.append("**" + a.kwarg.arg)
    return tuple(names)


def _find(body: list[ast.stmt], name: str) -> ast.AST | None:
    """The last top-level definition of ``name`` in ``body`` (later definitions win, as at run time)."""
    found = None
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            found = node
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            found = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            found = node
    return found


def check_symbol(root: Path, sym: Symbol, _trees: dict[str, ast.Module] | None = None) -> Problem | None:
    trees = {} if _trees is None else _trees
    file = root / sym.path
    if sym.path not in trees:
        if not file.is_file():
            return Problem(sym, "module not found")
        try:
            trees[sym.path] = ast.parse(file.read_text(encoding="utf-8", errors="replace"), filename=str(file))
        except SyntaxError as exc:
            return Problem(sym, f"does not parse (line {exc.lineno}): {exc.msg}")
    node: ast.AST | None = trees[sym.path]
    for part in sym.qualname.split(".") if sym.qualname else []:
        body = getattr(node, "body", None)
        node = _find(body, part) if isinstance(body, list) else None
        if node is None:
            return Problem(sym, "not defined")
    if sym.params is not None:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return Problem(sym, f"expected a function, found {type(node).__name__}")
        got = _params(node)
        if got != sym.params:
            return Problem(sym, f"signature changed: expected ({', '.join(sym.params)}), found ({', '.join(got)})")
    return None


def check_text(root: Path, req: SourceText, _texts: dict[Path, str] | None = None) -> Problem | None:
    texts = {} if _texts is None else _texts
    pattern_path = any(c in req.file for c in "*?[")
    files = sorted(f for f in (root.glob(req.file) if pattern_path else [root / req.file]) if f.is_file())
    if not files:
        return Problem(req, "file not found")
    rx = re.compile(req.pattern, re.MULTILINE)
    for f in files:
        if f not in texts:
            texts[f] = f.read_text(encoding="utf-8", errors="replace")
        if rx.search(texts[f]):
            return None
    return Problem(req, "not found" + (f" in any of {len(files)} files" if len(files) > 1 else ""))


def check_contract(root: str | Path, symbols: list[Requirement]) -> list[Problem]:
    """Every symbol that is missing or has another signature in the checkout at ``root``, and every
    :class:`SourceText` whose pattern no longer matches."""
    trees: dict[str, ast.Module] = {}
    texts: dict[Path, str] = {}
    out = []
    for s in symbols:
        p = check_text(Path(root), s, texts) if isinstance(s, SourceText) else check_symbol(Path(root), s, trees)
        if p is not None:
            out.append(p)
    return out


def file_digest(path: Path) -> str:
    """sha256 of a file with line endings normalised (checkouts on Windows keep their meaning)."""
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def identify_commit(root: str | Path, tested: dict[str, dict[str, str]]) -> tuple[str | None, list[str]]:
    """Which tested commit the checkout at ``root`` is: ``(commit, [])`` when git says so or when every
    fingerprinted file matches; else ``(None or the git HEAD, files that differ from the closest one)``.

    ``tested`` maps commit → {relative path: sha256}. Fingerprints, not code, are what adapters ship:
    a ``git archive`` export has no .git, and the licences forbid keeping the files themselves.
    """
    root = Path(root)
    head = None
    if (root / ".git").exists():
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
        head = r.stdout.strip() or None
        if head in tested:
            return head, []
    best: tuple[str | None, list[str]] = (head, sorted({f for files in tested.values() for f in files}))
    for commit, files in tested.items():
        diff = [f for f, digest in files.items() if not (root / f).is_file() or file_digest(root / f) != digest]
        if not diff:
            return commit, []
        if len(diff) < len(best[1]):
            best = (head, diff)
    return best
