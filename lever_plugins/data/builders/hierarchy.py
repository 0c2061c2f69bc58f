"""LF data sets from a label hierarchy (the LF-WikiHierarchy construction, for any directed graph of nodes).

Documents are the nodes marked as documents that have text and at least one parent; a document's labels
are its ancestors up to ``depth`` levels up (breadth-first, the node itself excluded even on a cycle);
the label set is every node that is a label of some document, in source order, and a label's text is
its node's title and content. Documents are split by a seeded shuffle of the source order
(``random.Random(seed)``): the first ``round(test_fraction * n)`` go to test; both splits keep source
order. A document that is itself a label (same uid) gets a ("row label") filter pair, as in the LF-* sets.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lever_plugins.errors import DataError
from lever_plugins.runs import atomic_dir

HEAD = 8  # labels listed in stats.json "head"


@dataclass
class Node:
    """One node of the hierarchy: ``parents`` are uids one level up; ``document``: may become a document."""

    uid: str
    title: str
    content: str = ""
    parents: list[str] = field(default_factory=list)
    document: bool = True


@dataclass
class Built:
    """A built LF data set in memory: json records per file, filter pairs and statistics."""

    trn: list[dict[str, Any]]
    tst: list[dict[str, Any]]
    lbl: list[dict[str, Any]]
    trn_filter: list[tuple[int, int]]
    tst_filter: list[tuple[int, int]]
    stats: dict[str, Any]


def ancestors(uid: str, parents: dict[str, list[str]], depth: int) -> set[str]:
    """Nodes 1..``depth`` levels above ``uid`` (breadth-first; ``uid`` itself never included)."""
    seen = {uid}
    frontier = [uid]
    for _ in range(depth):
        nxt = []
        for u in frontier:
            for p in parents.get(u, ()):
                if p not in seen:
                    seen.add(p)
                    nxt.append(p)
        frontier = nxt
    seen.discard(uid)
    return seen


def split_documents(uids: list[str], seed: int, test_fraction: float) -> tuple[list[str], list[str]]:
    """Seeded shuffle of ``uids`` (in the given order): the first round(test_fraction * n) are test.
    Both splits are returned in the original order."""
    order = {u: i for i, u in enumerate(uids)}
    perm = list(uids)
    random.Random(seed).shuffle(perm)
    n_tst = int(round(test_fraction * len(perm)))
    tst = sorted(perm[:n_tst], key=order.__getitem__)
    trn = sorted(perm[n_tst:], key=order.__getitem__)
    return trn, tst


def build_hierarchy(nodes: Iterable[Node], depth: int = 2, seed: int = 13, test_fraction: float = 0.3) -> Built:
    """Build the LF data set of a hierarchy (see the module docstring)."""
    if depth < 1:
        raise DataError(f"depth {depth} must be >= 1", where="--depth")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction {test_fraction} must be in (0, 1)", where="--test-fraction")
    by_uid: dict[str, Node] = {}
    for n in nodes:
        if n.uid in by_uid:
            raise DataError(f"node {n.uid!r} appears twice", where="hierarchy source", fix="uids must be unique")
        by_uid[n.uid] = n
    parents = {u: [p for p in n.parents if p in by_uid] for u, n in by_uid.items()}
    labels_of: dict[str, set[str]] = {}
    for u, n in by_uid.items():
        if n.document and (n.title.strip() or n.content.strip()):
            anc = ancestors(u, parents, depth)
            if anc:
                labels_of[u] = anc
    if not labels_of:
        raise DataError("no node has text and a parent: nothing to build", where="hierarchy source")
    used = set().union(*labels_of.values())
    lbl_uids = [u for u in by_uid if u in used]  # source order
    lidx = {u: i for i, u in enumerate(lbl_uids)}
    trn_u, tst_u = split_documents(list(labels_of), seed, test_fraction)

    def records(uids: list[str]) -> list[dict[str, Any]]:
        out = []
        for u in uids:
            ind = sorted(lidx[a] for a in labels_of[u])
            n = by_uid[u]
            out.append(
                {
                    "uid": n.uid,
                    "title": n.title,
                    "content": n.content,
                    "target_ind": ind,
                    "target_rel": [1.0] * len(ind),
                }
            )
        return out

    trn, tst = records(trn_u), records(tst_u)
    lbl = [{"uid": u, "title": by_uid[u].title, "content": by_uid[u].content} for u in lbl_uids]
    trn_f = [(i, lidx[r["uid"]]) for i, r in enumerate(trn) if r["uid"] in lidx]
    tst_f = [(i, lidx[r["uid"]]) for i, r in enumerate(tst) if r["uid"] in lidx]
    return Built(trn, tst, lbl, trn_f, tst_f, lf_stats(trn, tst, lbl))


def short_title(title: str, names: int = 2) -> str:
    """The first ``names`` comma-separated names of a title ("person, individual, someone" -> "person, individual")."""
    return ", ".join(title.split(", ")[:names])


def lf_stats(trn: list[dict], tst: list[dict], lbl: list[dict]) -> dict[str, Any]:
    """Docs, labels, labels/doc, tail counts and the head labels of a built data set."""
    n_lbl = len(lbl)
    counts = Counter(i for r in trn for i in r["target_ind"])
    tst_labels = {i for r in tst for i in r["target_ind"]}
    lbl_uids = {r["uid"] for r in lbl}
    n_docs = len(trn) + len(tst)
    head = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:HEAD]
    return {
        "n_trn": len(trn),
        "n_tst": len(tst),
        "n_labels": n_lbl,
        "avg_labels_per_doc": round(sum(len(r["target_ind"]) for r in trn + tst) / max(n_docs, 1), 3),
        "labels_seen_in_trn": len(counts),
        "labels_with_le5_trn_docs": sum(1 for j in range(n_lbl) if counts[j] <= 5),
        "labels_with_1_trn_doc": sum(1 for j in range(n_lbl) if counts[j] == 1),
        "tst_labels_unseen_in_trn": len(tst_labels - counts.keys()),
        "tst_docs_that_are_labels": sum(1 for r in tst if r["uid"] in lbl_uids),
        "head": [[short_title(lbl[j]["title"]), c] for j, c in head],
    }


def _write_json_gz(path: Path, records: list[dict[str, Any]]) -> None:
    import gzip

    # mtime 0 and a fixed name: the same data gives the same bytes
    with open(path, "wb") as raw, gzip.GzipFile(filename=path.name, fileobj=raw, mode="wb", mtime=0) as gz:
        for rec in records:
            gz.write(json.dumps(rec, ensure_ascii=False).encode("utf-8") + b"\n")


def write_built(out: str | Path, built: Built) -> None:
    """Write ``built`` as an LF folder: trn/tst/lbl.json.gz, the filter files (when not empty) and stats.json.

    Everything is written into a temporary sibling folder that is renamed to ``out`` at the end, so a
    crash leaves no half-built data set. ``out`` must not exist or be an empty folder.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError("output folder exists and is not empty", where=str(out), fix="choose a new --out or remove it")
    with atomic_dir(out) as tmp:
        _write_json_gz(tmp / "trn.json.gz", built.trn)
        _write_json_gz(tmp / "tst.json.gz", built.tst)
        _write_json_gz(tmp / "lbl.json.gz", built.lbl)
        for name, pairs in (("trn_filter_labels.txt", built.trn_filter), ("tst_filter_labels.txt", built.tst_filter)):
            if pairs:
                (tmp / name).write_text("".join(f"{r} {c}\n" for r, c in pairs), encoding="ascii")
        (tmp / "stats.json").write_text(json.dumps(built.stats, indent=1), encoding="utf-8")


def read_jsonl_nodes(path: str | Path) -> Iterator[Node]:
    """A generic hierarchy: one JSON object a line, ``{"uid", "title", "content"?, "parents"?, "document"?}``."""
    p = Path(path)
    if not p.is_file():
        raise DataError("hierarchy file not found", where=str(p), fix="give a JSON-lines file of nodes")
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                yield Node(
                    uid=str(obj["uid"]),
                    title=str(obj.get("title", "")),
                    content=str(obj.get("content", "")),
                    parents=[str(x) for x in obj.get("parents", [])],
                    document=bool(obj.get("document", True)),
                )
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
                raise DataError(
                    f"bad node line: {exc}",
                    where=f"{p}:{lineno}",
                    fix='each line must be {"uid": ..., "title": ..., "content": ..., "parents": [...]}',
                ) from None


SOURCES = ("wordnet", "wikipedia", "jsonl")


def read_source(source: str) -> Iterable[Node]:
    """Nodes of ``KIND:PATH``: ``wordnet:data.noun``, ``wikipedia:DUMP_FOLDER`` or ``jsonl:nodes.jsonl``."""
    kind, sep, path = source.partition(":")
    if not sep or kind not in SOURCES or not path:
        raise DataError(
            f"unknown hierarchy source {source!r}",
            where="--source",
            fix="use wordnet:PATH/data.noun, wikipedia:DUMP_FOLDER or jsonl:NODES.jsonl",
        )
    if kind == "wordnet":
        from lever_plugins.data.builders.wordnet import read_wordnet_nouns

        return read_wordnet_nouns(path)
    if kind == "wikipedia":
        from lever_plugins.data.builders.wikipedia import read_wikipedia_categories

        return read_wikipedia_categories(path)
    return read_jsonl_nodes(path)
