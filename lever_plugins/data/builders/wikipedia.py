"""Reader for the Wikipedia category graph from the MediaWiki SQL dumps: the route to LF-WikiHierarchy-1M.

Input: a folder with the ``page`` and ``categorylinks`` table dumps of one wiki, e.g.
``enwiki-latest-page.sql.gz`` and ``enwiki-latest-categorylinks.sql.gz`` from dumps.wikimedia.org
(``*.sql`` or ``*.sql.gz``; matched by ``*page.sql*`` and ``*categorylinks.sql*``). Dumps made after the
2025 schema change keep the category in ``cl_target_id``; then the ``linktarget`` dump
(``*linktarget.sql*``) must be in the folder too. Columns are found by name from each dump's
``CREATE TABLE`` statement, so column order does not matter.

Nodes: every non-redirect article (namespace 0; uid = page id, title = page title with "_" as spaces,
a document) and every category that appears in a link (uid "Category:" + title, title with spaces,
never a document). Parents are the categories a page (or a category page, namespace 14) is linked into.
Order: articles by page id, then categories by title. Memory grows with the dumps: the whole English
Wikipedia needs tens of GB; cut the dumps to a sample of pages first for a 1M-document set.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from lever_plugins.data.builders.hierarchy import Node
from lever_plugins.errors import DataError

ARTICLE_NS, CATEGORY_NS = 0, 14
_TOKEN = re.compile(r"\s*(?:'((?:[^'\\]|\\.)*)'|(NULL)|(-?[0-9][0-9.eE+-]*)|(\()|(\))|(,)|(;))", re.S)
_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}
_UNESCAPE = re.compile(r"\\(.)", re.S)
_CREATE = re.compile(r"CREATE TABLE `(\w+)`")
_COLUMN = re.compile(r"\s+`(\w+)`\s")
_INSERT = re.compile(r"INSERT INTO `(\w+)` VALUES ")


def _unescape(s: str) -> str:
    return _UNESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), s)


def parse_values(text: str, where: str) -> Iterator[tuple[Any, ...]]:
    """The row tuples of the VALUES part of one MySQL INSERT statement."""
    pos, row, depth = 0, [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            if not text[pos:].strip():
                break
            raise DataError(f"cannot parse SQL values near {text[pos : pos + 40]!r}", where=where)
        pos = m.end()
        s, null, num, opn, cls, _comma, semi = m.groups()
        if opn:
            depth, row = depth + 1, []
        elif cls:
            depth -= 1
            yield tuple(row)
        elif s is not None:
            row.append(_unescape(s))
        elif null:
            row.append(None)
        elif num is not None:
            row.append(int(num) if re.fullmatch(r"-?\d+", num) else float(num))
        elif semi:
            break
    if depth != 0:
        raise DataError("unbalanced parentheses in an SQL INSERT statement", where=where)


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_sql_table(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
    """Rows of the dump's table, reduced to ``columns`` (by name, from its CREATE TABLE)."""
    names: list[str] = []
    idx: list[int] | None = None
    in_create = False
    with _open(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if in_create:
                m = _COLUMN.match(line)
                if m:
                    names.append(m.group(1))
                elif line.startswith(")"):
                    in_create = False
                continue
            if _CREATE.match(line):
                in_create, names = True, []
                continue
            m = _INSERT.match(line)
            if not m:
                continue
            if idx is None:
                missing = [c for c in columns if c not in names]
                if missing:
                    raise DataError(
                        f"table dump lacks columns {missing} (has {names})",
                        where=str(path),
                        fix="give the MediaWiki page / categorylinks / linktarget SQL dumps",
                    )
                idx = [names.index(c) for c in columns]
            for row in parse_values(line[m.end() :], f"{path}:{lineno}"):
                if len(row) != len(names):
                    raise DataError(
                        f"row has {len(row)} values, table has {len(names)} columns", where=f"{path}:{lineno}"
                    )
                yield tuple(row[i] for i in idx)


def _one(folder: Path, pattern: str, required: bool = True) -> Path | None:
    found = sorted(p for p in folder.glob(pattern) if p.suffix in (".sql", ".gz"))
    if len(found) > 1:
        raise DataError(f"several files match {pattern}: {[p.name for p in found]}", where=str(folder))
    if not found and required:
        raise DataError(
            f"no file matching {pattern}",
            where=str(folder),
            fix="put the wiki's page and categorylinks SQL dumps (e.g. enwiki-latest-page.sql.gz) in this folder",
        )
    return found[0] if found else None


def read_wikipedia_categories(folder: str | Path) -> list[Node]:
    """Articles and categories of the dumps in ``folder`` as hierarchy Nodes (see the module docstring)."""
    f = Path(folder)
    if not f.is_dir():
        raise DataError("Wikipedia dump folder not found", where=str(f), fix="give a folder with the SQL dumps")
    page_path = _one(f, "*page.sql*")
    cl_path = _one(f, "*categorylinks.sql*")
    assert page_path is not None and cl_path is not None
    articles: dict[int, str] = {}
    cat_pages: dict[int, str] = {}
    for pid, ns, title, redirect in read_sql_table(
        page_path, ("page_id", "page_namespace", "page_title", "page_is_redirect")
    ):
        if redirect:
            continue
        if ns == ARTICLE_NS:
            articles[pid] = title
        elif ns == CATEGORY_NS:
            cat_pages[pid] = title
    with _open(cl_path) as fh:
        head = fh.read(1 << 16)
    if "`cl_to`" in head:
        links: Iterator[tuple[Any, ...]] = read_sql_table(cl_path, ("cl_from", "cl_to"))
    else:
        lt_path = _one(f, "*linktarget.sql*", required=False)
        if lt_path is None:
            raise DataError(
                "this categorylinks dump has no cl_to column (2025 schema): the linktarget dump is needed",
                where=str(cl_path),
                fix="add the wiki's linktarget SQL dump (e.g. enwiki-latest-linktarget.sql.gz) to the folder",
            )
        targets = {
            lid: title
            for lid, ns, title in read_sql_table(lt_path, ("lt_id", "lt_namespace", "lt_title"))
            if ns == CATEGORY_NS
        }
        links = ((src, targets.get(tid)) for src, tid in read_sql_table(cl_path, ("cl_from", "cl_target_id")))
    parents: dict[int, list[str]] = {}
    for src, cat in links:
        if cat is not None and (src in articles or src in cat_pages):
            parents.setdefault(src, []).append("Category:" + cat)
    cats = sorted({c for ps in parents.values() for c in ps})
    cat_parent = {"Category:" + t: parents.get(pid, []) for pid, t in cat_pages.items()}
    nodes = [
        Node(uid=str(pid), title=articles[pid].replace("_", " "), parents=parents.get(pid, []))
        for pid in sorted(articles)
    ]
    nodes += [
        Node(uid=c, title=c[len("Category:") :].replace("_", " "), parents=cat_parent.get(c, []), document=False)
        for c in cats
    ]
    return nodes
