"""LF data sets from a query log: the LF-AOL-270K construction (query auto-completion as XC).

Input: one query a line, optionally ``query<TAB>count`` (plain or .gz). Queries are normalised
(every run of non-alphanumeric characters becomes one space, no lower-casing, as the official notebook
does); empty ones are dropped and equal ones merged, their counts summed. Distinct queries are split
train/test by a seeded shuffle (``random.Random(seed)``, sorted order; the first
round(test_fraction * n) are test).

Labels are word-level suffixes: for a query "w1 w2 ... wn" the strings "wk ... wn" for k >= 2. A suffix's
frequency is the summed count of the train queries that end in it; suffixes shorter than
``min_label_freq``, longer than ``max_label_chars`` or beyond the ``max_labels`` most frequent are
dropped. Each query with a kept suffix yields one document, its prefix q[:m] with m drawn uniformly
(same seeded generator) from [shortest boundary, len(q) - 1], where a suffix's boundary is the length
of the words before it: the prefix covers at least one whole word before some completion and never the
whole query. Equal prefixes are one document. A document's labels are the full ground truth of its split:
every kept suffix s of every query q of that split such that the document is a proper prefix of q and
covers the words before s. Test documents use the train label set only; test prefixes that are train
documents are dropped. Targets are binary (the query counts only rank the labels).
"""

from __future__ import annotations

import gzip
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lever_plugins.data.builders.hierarchy import Built, lf_stats
from lever_plugins.errors import DataError

_NON_ALNUM = re.compile(r"[\W_]+")


def normalise(query: str) -> str:
    """Non-alphanumeric runs to one space, stripped."""
    return _NON_ALNUM.sub(" ", query).strip()


def word_suffixes(query: str) -> Iterator[tuple[int, str]]:
    """(boundary, suffix) for every word-level proper suffix: boundary = length of the words before it."""
    pos = query.find(" ")
    while pos >= 0:
        yield pos, query[pos + 1 :]
        pos = query.find(" ", pos + 1)


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_query_log(path: str | Path) -> Counter[str]:
    """Normalised query -> summed count, from lines ``query`` or ``query<TAB>count``."""
    p = Path(path)
    if not p.is_file():
        raise DataError("query log not found", where=str(p), fix="give a text file with one query a line")
    counts: Counter[str] = Counter()
    with _open(p) as fh:
        for lineno, line in enumerate(fh, start=1):
            text, tab, count = line.rstrip("\r\n").rpartition("\t")
            if not tab:
                text, count = count, "1"
            if not count.strip().isdigit():
                raise DataError(
                    f"count {count!r} is not a non-negative integer",
                    where=f"{p}:{lineno}",
                    fix="write 'query' or 'query<TAB>count' a line",
                )
            q = normalise(text)
            if q:
                counts[q] += int(count)
    if not counts:
        raise DataError("no queries in the log", where=str(p))
    return counts


@dataclass
class QuerySplit:
    trn: list[str]
    tst: list[str]


def split_queries(queries: list[str], test_fraction: float, rng: random.Random) -> QuerySplit:
    perm = sorted(queries)
    rng.shuffle(perm)
    n_tst = int(round(test_fraction * len(perm)))
    return QuerySplit(trn=sorted(perm[n_tst:]), tst=sorted(perm[:n_tst]))


def _documents(
    queries: list[str], kept: dict[str, int], rng: random.Random, exclude: set[str]
) -> tuple[list[str], dict[str, set[str]]]:
    """Sample one prefix per query with a kept suffix, then the full ground truth of every prefix."""
    docs: set[str] = set()
    sufs: dict[str, list[tuple[int, str]]] = {}
    for q in queries:
        ks = [(b, s) for b, s in word_suffixes(q) if s in kept]
        if not ks:
            continue
        sufs[q] = ks
        lo = min(b for b, _ in ks)
        p = q[: rng.randint(lo, len(q) - 1)]
        if p not in exclude:
            docs.add(p)
    labels: dict[str, set[str]] = {p: set() for p in docs}
    for q, ks in sufs.items():
        lo = min(b for b, _ in ks)
        for m in range(lo, len(q)):
            p = q[:m]
            if p in labels:
                labels[p].update(s for b, s in ks if b <= m)
    return sorted(docs), labels


def build_prefix_suffix(
    counts: Counter[str],
    seed: int = 13,
    test_fraction: float = 0.3,
    min_label_freq: int = 2,
    max_labels: int = 0,
    max_label_chars: int = 100,
) -> tuple[Built, QuerySplit]:
    """Build the prefix -> suffix data set from query counts (see the module docstring)."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction {test_fraction} must be in (0, 1)", where="--test-fraction")
    rng = random.Random(seed)
    split = split_queries(list(counts), test_fraction, rng)
    freq: Counter[str] = Counter()
    for q in split.trn:
        for _, s in word_suffixes(q):
            freq[s] += counts[q]
    ranked = sorted(
        ((s, f) for s, f in freq.items() if f >= min_label_freq and len(s) <= max_label_chars),
        key=lambda sf: (-sf[1], sf[0]),
    )
    if max_labels:
        ranked = ranked[:max_labels]
    if not ranked:
        raise DataError(
            f"no suffix reaches frequency {min_label_freq} in the train queries",
            where="query log",
            fix="lower --min-label-freq or give a larger log",
        )
    kept = {s: j for j, (s, _) in enumerate(ranked)}
    trn_docs, trn_lab = _documents(split.trn, kept, rng, exclude=set())
    tst_docs, tst_lab = _documents(split.tst, kept, rng, exclude=set(trn_docs))

    def records(docs: list[str], labels: dict[str, set[str]], prefix: str) -> list[dict]:
        out = []
        for i, p in enumerate(docs):
            ind = sorted(kept[s] for s in labels[p])
            out.append(
                {"uid": f"{prefix}{i}", "title": p, "content": "", "target_ind": ind, "target_rel": [1.0] * len(ind)}
            )
        return out

    trn, tst = records(trn_docs, trn_lab, "p"), records(tst_docs, tst_lab, "t")
    lbl = [{"uid": f"s{j}", "title": s, "content": ""} for j, (s, _) in enumerate(ranked)]
    stats = lf_stats(trn, tst, lbl)
    stats.update(
        queries=len(counts),
        trn_queries=len(split.trn),
        tst_queries=len(split.tst),
        min_label_freq=min_label_freq,
        label_freq_max=ranked[0][1],
        label_freq_min=ranked[-1][1],
    )
    return Built(trn, tst, lbl, [], [], stats), split
