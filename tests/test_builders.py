"""`lever data build`: hierarchy data sets (WordNet, Wikipedia dumps, JSON lines) and the prefix-suffix set."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import WORDNET, lever

from lever_plugins.data import load_dataset
from lever_plugins.data.builders.hierarchy import build_hierarchy, read_source, write_built
from lever_plugins.errors import DataError

# A data.noun in the real format: licence header lines start with two spaces; w_cnt is hex, p_cnt
# 3 digits; "@" hypernym, "@i" instance hypernym, "~" hyponym (ignored), "+" to a verb (ignored).
SYNSETS = {
    # offset: (words, pointers [(symbol, offset, pos)], gloss)
    "00000001": (["entity"], [("~", "00000002", "n")], "that which exists"),
    "00000002": (["physical_entity"], [("@", "00000001", "n")], "an entity that has physical existence"),
    "00000003": (["object", "physical_object"], [("@", "00000002", "n"), ("+", "00000099", "v")], "a thing"),
    "00000004": (["animal", "beast", "fauna"], [("@", "00000003", "n")], 'a living organism; "the animal ran"'),
    "00000005": (["dog", "domestic_dog"], [("@", "00000004", "n"), ("@", "00000003", "n")], "a canine"),
    "00000006": (["Rex"], [("@i", "00000005", "n")], "a famous dog"),
    "00000007": (["cat"], [("@", "00000004", "n")], "a feline"),
    "00000008": (["lion"], [("@", "00000007", "n"), ("~", "00000001", "n")], "a big cat"),
    "00000009": (["abstraction"], [("@", "00000001", "n")], "a general concept"),
    "00000010": (["idea", "thought"], [("@", "00000009", "n")], "content of cognition"),
    "00000011": (["plan"], [("@", "00000010", "n")], "a series of steps"),
    "00000012": (["Dolly"], [("@i", "00000004", "n")], "a cloned sheep"),
}


def write_data_noun(path: Path) -> Path:
    lines = ["  1 This software and database is being provided to you, the LICENSEE, by  \n"]
    for off, (words, ptrs, gloss) in SYNSETS.items():
        w = " ".join(f"{x} 0" for x in words)
        p = " ".join(f"{s} {o} {pos} 0000" for s, o, pos in ptrs)
        lines.append(f"{off} 03 n {len(words):02x} {w} {len(ptrs):03d} {p} | {gloss}  \n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def read_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def closure_oracle(parents: dict[str, list[str]], depth: int) -> dict[str, set[str]]:
    """Ancestors within ``depth`` steps from powers of the boolean parent matrix (independent of the BFS)."""
    ids = sorted(set(parents) | {p for ps in parents.values() for p in ps})
    ix = {u: i for i, u in enumerate(ids)}
    a = np.zeros((len(ids), len(ids)), dtype=np.int64)
    for u, ps in parents.items():
        for p in ps:
            a[ix[u], ix[p]] = 1
    reach, power = np.zeros_like(a), np.eye(len(ids), dtype=np.int64)
    for _ in range(depth):
        power = (power @ a > 0).astype(np.int64)
        reach |= power
    np.fill_diagonal(reach, 0)
    return {u: {ids[j] for j in np.flatnonzero(reach[ix[u]])} for u in ids}


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_wordnet_fixture_labels_are_ancestors_within_depth(tmp_path: Path, depth: int) -> None:
    src = write_data_noun(tmp_path / "data.noun")
    out = tmp_path / "out"
    if depth == 2:  # through the CLI once; in-process otherwise (each CLI start costs ~1 s)
        r = lever("data", "build", "hierarchy", "--source", f"wordnet:{src}", "--depth", "2", "--seed", "5",
                  "--out", str(out))  # fmt: skip
        assert r.returncode == 0, r.stderr
    else:
        write_built(out, build_hierarchy(read_source(f"wordnet:{src}"), depth=depth, seed=5))
    parents = {"n" + o: ["n" + t for s, t, pos in ptrs if s in ("@", "@i")] for o, (_, ptrs, _) in SYNSETS.items()}
    expect = closure_oracle(parents, depth)
    trn, tst, lbl = (read_gz(out / f"{s}.json.gz") for s in ("trn", "tst", "lbl"))
    lbl_uids = [x["uid"] for x in lbl]
    docs = trn + tst
    # every synset with a hypernym is a document exactly once; entity (no hypernym) is not
    assert sorted(d["uid"] for d in docs) == sorted(u for u, ps in parents.items() if ps)
    assert len(tst) == round(0.3 * len(docs))
    for d in docs:
        assert {lbl_uids[i] for i in d["target_ind"]} == expect[d["uid"]]
        assert d["target_ind"] == sorted(d["target_ind"]) and d["target_rel"] == [1.0] * len(d["target_ind"])
    # labels: exactly the used ancestors, in offset order, text from the node
    assert lbl_uids == sorted(set().union(*(expect[d["uid"]] for d in docs)))
    dog = next(x for x in lbl + docs if x["uid"] == "n00000005")
    assert dog["title"] == "dog, domestic dog" and dog["content"] == "a canine"
    assert [d["uid"] for d in trn] == sorted(d["uid"] for d in trn)
    # filter pairs: documents that are labels, (row, label index)
    pairs = (
        (out / "tst_filter_labels.txt").read_text().split("\n")[:-1] if (out / "tst_filter_labels.txt").exists() else []
    )
    assert sorted(pairs) == sorted(f"{i} {lbl_uids.index(d['uid'])}" for i, d in enumerate(tst) if d["uid"] in lbl_uids)
    # stats recomputed from the loaded data set
    ds = load_dataset(out)
    s = json.loads((out / "stats.json").read_text())
    counts = np.asarray(ds.binary_train().sum(axis=0)).ravel()
    assert s["n_labels"] == ds.num_labels == len(lbl)
    assert s["labels_with_le5_trn_docs"] == int((counts <= 5).sum())
    assert s["labels_with_1_trn_doc"] == int((counts == 1).sum())
    assert s["labels_seen_in_trn"] == int((counts > 0).sum())
    tst_cols = set(ds.y_tst.indices.tolist())
    assert s["tst_labels_unseen_in_trn"] == len({j for j in tst_cols if counts[j] == 0})
    assert s["avg_labels_per_doc"] == round((ds.y_trn.nnz + ds.y_tst.nnz) / len(docs), 3)
    assert s["head"][0][1] == int(counts.max())


def test_split_is_seeded(tmp_path: Path) -> None:
    from lever_plugins.data.builders.hierarchy import Node, build_hierarchy

    nodes = [Node("root", "root")] + [Node(f"d{i}", f"doc {i}", parents=["root"]) for i in range(40)]
    a, b, c = (build_hierarchy(nodes, depth=1, seed=s) for s in (1, 1, 2))
    assert a.tst == b.tst and a.trn == b.trn
    assert {r["uid"] for r in a.tst} != {r["uid"] for r in c.tst}
    assert len(a.tst) == 12 and not {r["uid"] for r in a.tst} & {r["uid"] for r in a.trn}


def test_jsonl_source_cycle_and_non_documents(tmp_path: Path) -> None:
    nodes = [
        {"uid": "a", "title": "A", "parents": ["b"]},
        {"uid": "b", "title": "B", "parents": ["a", "c"]},  # a <-> b cycle
        {"uid": "c", "title": "C", "document": False, "parents": ["d"]},
        {"uid": "d", "title": "D"},
        {"uid": "e", "title": "", "content": "", "parents": ["a"]},  # no text: not a document
        {"uid": "f", "title": "F", "parents": ["missing"]},  # unknown parent ignored: no labels
    ]
    src = tmp_path / "n.jsonl"
    src.write_text("".join(json.dumps(n) + "\n" for n in nodes))
    out = tmp_path / "out"
    r = lever("data", "build", "hierarchy", "--source", f"jsonl:{src}", "--depth", "3", "--out", str(out),
              "--test-fraction", "0.5")  # fmt: skip
    assert r.returncode == 0, r.stderr
    lbl = [x["uid"] for x in read_gz(out / "lbl.json.gz")]
    docs = {d["uid"]: {lbl[i] for i in d["target_ind"]} for s in ("trn", "tst") for d in read_gz(out / f"{s}.json.gz")}
    assert docs == {"a": {"b", "c", "d"}, "b": {"a", "c", "d"}}


def _sql(table: str, columns: list[tuple[str, str]], rows: list[tuple]) -> str:
    def lit(v: object) -> str:
        if v is None:
            return "NULL"
        if isinstance(v, int):
            return str(v)
        return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"

    create = f"CREATE TABLE `{table}` (\n" + "".join(f"  `{c}` {t} NOT NULL,\n" for c, t in columns)
    create += "  PRIMARY KEY (`x`)\n) ENGINE=InnoDB;\n"
    values = ",".join("(" + ",".join(lit(v) for v in r) + ")" for r in rows)
    # two INSERT statements, as real dumps split them
    half = len(rows) // 2
    v1 = ",".join("(" + ",".join(lit(v) for v in r) + ")" for r in rows[:half])
    v2 = ",".join("(" + ",".join(lit(v) for v in r) + ")" for r in rows[half:])
    assert values
    return f"-- MySQL dump\n{create}INSERT INTO `{table}` VALUES {v1};\nINSERT INTO `{table}` VALUES {v2};\n"


PAGES = [  # page_id, namespace, title, is_redirect, len
    (10, 0, "Paris", 0, 100),
    (11, 0, "Lyon", 0, 90),
    (12, 0, "Old_Paris", 1, 5),  # redirect: skipped
    (13, 0, "Rock_'n'_Roll_(song)", 0, 7),  # escaped quotes and parentheses
    (20, 14, "Cities_in_France", 0, 1),
    (21, 14, "Cities", 0, 1),
    (22, 14, "France", 0, 1),
    (23, 14, "Songs", 0, 1),
]
CATLINKS = [  # cl_from, cl_to, cl_type
    (10, "Cities_in_France", "page"),
    (10, "Capitals", "page"),  # category without a page: still a label, no parents
    (11, "Cities_in_France", "page"),
    (12, "Cities", "page"),
    (13, "Songs", "page"),
    (20, "Cities", "subcat"),
    (20, "France", "subcat"),
    (21, "Places", "subcat"),
]


def test_wikipedia_dumps_old_and_new_schema(tmp_path: Path) -> None:
    page_cols = [
        ("page_id", "int"),
        ("page_namespace", "int"),
        ("page_title", "varbinary(255)"),
        ("page_is_redirect", "tinyint"),
        ("page_len", "int"),
    ]
    expect = {
        "Paris": {"Cities in France", "Capitals", "Cities", "France"},
        "Lyon": {"Cities in France", "Cities", "France"},
        "Rock 'n' Roll (song)": {"Songs"},
    }
    for schema in ("old", "new"):
        dumps = tmp_path / schema
        dumps.mkdir()
        with gzip.open(dumps / "xxwiki-latest-page.sql.gz", "wt", encoding="utf-8") as fh:
            fh.write(_sql("page", page_cols, PAGES))
        if schema == "old":
            cl = _sql("categorylinks", [("cl_from", "int"), ("cl_to", "varbinary(255)"), ("cl_type", "enum")], CATLINKS)
        else:
            names = sorted({c for _, c, _ in CATLINKS})
            lt = [(i + 1, 14, n) for i, n in enumerate(names)] + [(99, 0, "Cities")]  # ns 0 target: not a category
            (dumps / "xxwiki-latest-linktarget.sql").write_text(
                _sql("linktarget", [("lt_id", "bigint"), ("lt_namespace", "int"), ("lt_title", "varbinary")], lt)
            )
            rows = [(f, t, names.index(c) + 1) for f, c, t in CATLINKS]
            cl = _sql("categorylinks", [("cl_from", "int"), ("cl_type", "enum"), ("cl_target_id", "bigint")], rows)
        (dumps / "xxwiki-latest-categorylinks.sql").write_text(cl)
        out = tmp_path / f"out-{schema}"
        r = lever("data", "build", "hierarchy", "--source", f"wikipedia:{dumps}", "--depth", "2", "--out", str(out))
        assert r.returncode == 0, r.stderr
        lbl = [x["title"] for x in read_gz(out / "lbl.json.gz")]
        docs = {
            d["title"]: {lbl[i] for i in d["target_ind"]} for s in ("trn", "tst") for d in read_gz(out / f"{s}.json.gz")
        }
        assert docs == expect, schema
        assert "Places" not in lbl  # three levels above Paris


def test_wikipedia_new_schema_without_linktarget_is_one_line_error(tmp_path: Path) -> None:
    cols = [("page_id", "int"), ("page_namespace", "int"), ("page_title", "b"), ("page_is_redirect", "t")]
    (tmp_path / "w-page.sql").write_text(_sql("page", cols, [(1, 0, "A", 0)]))
    (tmp_path / "w-categorylinks.sql").write_text(
        _sql("categorylinks", [("cl_from", "int"), ("cl_target_id", "bigint")], [(1, 5)])
    )
    r = lever("data", "build", "hierarchy", "--source", f"wikipedia:{tmp_path}", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "linktarget" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "data.noun"
    bad.write_text("  header\n00000001 03 n zz entity 0 000 | x\n")
    out = tmp_path / "o"
    r = lever("data", "build", "hierarchy", "--source", f"wordnet:{bad}", "--out", str(out))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "data.noun:2" in r.stderr and not out.exists()
    for src in (f"wordnet:{tmp_path / 'nope'}", "mystery:x", f"jsonl:{bad}"):
        with pytest.raises(DataError):
            write_built(out, build_hierarchy(read_source(src)))
        assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    good = write_data_noun(tmp_path / "good.noun")
    with pytest.raises(DataError, match="not empty"):
        write_built(out, build_hierarchy(read_source(f"wordnet:{good}")))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


WORDNET_DATA_NOUN = os.environ.get("LEVER_WORDNET_DATA_NOUN")


@pytest.mark.skipif(
    not WORDNET_DATA_NOUN,
    reason="set LEVER_WORDNET_DATA_NOUN=PATH/data.noun (Debian wordnet-base 1:3.0-37) to rebuild the shared set",
)
def test_wordnet_rebuild_matches_shared_data(tmp_path: Path) -> None:
    out = tmp_path / "wn"
    r = lever("data", "build", "hierarchy", "--source", f"wordnet:{WORDNET_DATA_NOUN}", "--depth", "2", "--seed", "13",
              "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "stats.json").read_text()) == json.loads((WORDNET / "stats.json").read_text())
    for name in ("trn.json.gz", "tst.json.gz", "lbl.json.gz"):
        assert gzip.decompress((out / name).read_bytes()) == gzip.decompress((WORDNET / name).read_bytes()), name
    for name in ("trn_filter_labels.txt", "tst_filter_labels.txt", "stats.json"):
        assert (out / name).read_bytes() == (WORDNET / name).read_bytes(), name


# ----------------------------------------------------------------------------- prefix-suffix

QWORDS = ["cheap", "flights", "to", "paris", "new", "york", "hotels", "weather", "in", "car"]


def write_query_log(path: Path, n: int = 400, seed: int = 3) -> Path:
    """A Zipf-ish log with repeats, punctuation to normalise, tab counts and an empty query."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(QWORDS) + 1)
    p /= p.sum()
    lines = []
    for i in range(n):
        words = [str(w) for w in rng.choice(QWORDS, size=int(rng.integers(1, 5)), p=p)]
        q = " ".join(words)
        if i % 17 == 0:
            q = q.replace(" ", " -- ", 1) + "?"  # normalises to the plain query
        lines.append(f"{q}\t{int(rng.integers(1, 4))}" if i % 5 == 0 else q)
    lines.append("?!")  # empty after normalisation: dropped
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _norm_oracle(q: str) -> str:
    return " ".join("".join(c if c.isalnum() else " " for c in q).split())


def _truth_oracle(prefix: str, queries: list[str], kept: set[str]) -> set[str]:
    """Brute force: every kept s with some query q = A + " " + s, prefix a proper prefix of q, len(A) <= len(prefix)."""
    out = set()
    for q in queries:
        if not (q.startswith(prefix) and len(prefix) < len(q)):
            continue
        for s in kept:
            if q.endswith(" " + s) and len(q) - len(s) - 1 <= len(prefix):
                out.add(s)
    return out


@pytest.mark.parametrize("min_freq,max_labels", [(2, 0), (1, 15)])
def test_prefix_suffix_against_brute_force(tmp_path: Path, min_freq: int, max_labels: int) -> None:
    from lever_plugins.data.builders.prefix_suffix import build_prefix_suffix, read_query_log

    log = write_query_log(tmp_path / "log.txt")
    counts = read_query_log(log)
    # normalisation and merged counts, recomputed independently
    expect: dict[str, int] = {}
    for line in log.read_text().splitlines():
        text, _, c = line.rpartition("\t") if "\t" in line else (line, "", "1")
        if _norm_oracle(text):
            expect[_norm_oracle(text)] = expect.get(_norm_oracle(text), 0) + int(c)
    assert dict(counts) == expect
    built, split = build_prefix_suffix(counts, seed=7, min_label_freq=min_freq, max_labels=max_labels)
    assert sorted(split.trn + split.tst) == sorted(counts) and not set(split.trn) & set(split.tst)
    assert len(split.tst) == round(0.3 * len(counts))
    # label frequencies over train queries, brute force
    cands = {" ".join(q.split()[k:]) for q in split.trn for k in range(1, len(q.split()))}
    freq = {s: sum(counts[q] for q in split.trn if q.endswith(" " + s)) for s in cands}
    ranked = sorted((s for s in cands if freq[s] >= min_freq), key=lambda s: (-freq[s], s))
    ranked = ranked[:max_labels] if max_labels else ranked
    assert [x["title"] for x in built.lbl] == ranked
    kept = set(ranked)
    for docs, queries in ((built.trn, split.trn), (built.tst, split.tst)):
        for d in docs:
            got = {ranked[i] for i in d["target_ind"]}
            assert got and got == _truth_oracle(d["title"], queries, kept), d["title"]
            assert d["target_rel"] == [1.0] * len(got)
        # every query with a kept suffix has a sampled document that is its proper prefix
        titles = {d["title"] for d in docs} | ({d["title"] for d in built.trn} if docs is built.tst else set())
        for q in queries:
            bounds = [len(q) - len(s) - 1 for s in kept if q.endswith(" " + s)]
            if bounds:
                assert any(q.startswith(t) and min(bounds) <= len(t) < len(q) for t in titles), q
    assert not {d["title"] for d in built.tst} & {d["title"] for d in built.trn}
    assert built.stats["n_trn"] == len(built.trn) and built.stats["queries"] == len(counts)


def test_prefix_suffix_cli_seeded(tmp_path: Path) -> None:
    log = write_query_log(tmp_path / "log.txt")
    from lever_plugins.data.builders.prefix_suffix import build_prefix_suffix, read_query_log

    outs = [tmp_path / n for n in "abc"]
    r = lever("data", "build", "prefix-suffix", "--log", str(log), "--seed", "1", "--out", str(outs[0]))
    assert r.returncode == 0, r.stderr
    for out, seed in zip(outs[1:], (1, 2), strict=True):  # in-process: the same defaults as the CLI
        write_built(out, build_prefix_suffix(read_query_log(log), seed=seed)[0])
    same = [
        (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes() for f in ("trn.json.gz", "tst.json.gz", "lbl.json.gz")
    ]
    assert all(same)
    assert (outs[0] / "trn.json.gz").read_bytes() != (outs[2] / "trn.json.gz").read_bytes()
    ds = load_dataset(outs[0])  # loads as an LF data set
    assert ds.y_trn.shape[1] == len(ds.lbl_texts) and ds.y_trn.nnz > 0
    bad = tmp_path / "bad.txt"
    bad.write_text("cheap flights\tmany\n")
    r = lever("data", "build", "prefix-suffix", "--log", str(bad), "--out", str(tmp_path / "d"))
    assert r.returncode == 2 and "bad.txt:1" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "d").exists()
