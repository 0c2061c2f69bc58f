"""Reader for the WordNet 3.0 noun database ``data.noun`` (Debian package wordnet-base, usr/share/wordnet/).

Each synset line (after the licence header, whose lines start with two spaces) is::

    offset lex_filenum ss_type w_cnt(hex) [word lex_id(hex)]*w_cnt p_cnt(3 digits)
        [pointer_symbol offset pos source/target]*p_cnt [frames] | gloss

Nodes: uid "n" + offset, title = the lemma names with "_" as spaces joined by ", ", content = the gloss;
parents = the noun hypernym pointers ``@`` (hypernym) and ``@i`` (instance hypernym).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lever_plugins.data.builders.hierarchy import Node
from lever_plugins.errors import DataError

HYPERNYMS = ("@", "@i")


def parse_synset(line: str) -> Node:
    """One data.noun synset line as a Node (raises ValueError/IndexError on a malformed line)."""
    head, sep, gloss = line.partition(" | ")
    if not sep:
        head, gloss = line.rstrip("\n"), ""
    f = head.split()
    offset = f[0]
    if len(offset) != 8 or not offset.isdigit():
        raise ValueError(f"bad synset offset {offset!r}")
    n_words = int(f[3], 16)
    words = [f[4 + 2 * i].replace("_", " ") for i in range(n_words)]
    i = 4 + 2 * n_words
    n_ptr = int(f[i])
    i += 1
    parents = []
    for _ in range(n_ptr):
        symbol, target, pos = f[i], f[i + 1], f[i + 2]
        i += 4
        if symbol in HYPERNYMS and pos == "n":
            parents.append("n" + target)
    if not words:
        raise ValueError("synset without words")
    return Node(uid="n" + offset, title=", ".join(words), content=gloss.strip(), parents=parents)


def read_wordnet_nouns(path: str | Path) -> Iterator[Node]:
    """Every noun synset of ``data.noun``, in file (offset) order."""
    p = Path(path)
    if not p.is_file():
        raise DataError("WordNet data.noun not found", where=str(p), fix="give the path of data.noun from wordnet-base")
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.startswith("  ") or not line.strip():
                continue  # licence header
            try:
                yield parse_synset(line)
            except (ValueError, IndexError) as exc:
                raise DataError(
                    f"not a WordNet data.noun synset line: {exc}",
                    where=f"{p}:{lineno}",
                    fix="give the data.noun file of the WordNet 3.0 database (Debian package wordnet-base)",
                ) from None
