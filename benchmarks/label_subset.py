"""Cut a small long-tailed set out of an LF-* set's TRAIN split: a stand-in for the unseen sets the default
config is checked on (about 1,400 train / 600 test documents, 600–850 labels).

    python benchmarks/label_subset.py ../shared/data/wordnet-hypernyms-lf /tmp/wn1 --seed 1 --labels 750 \\
        --train 2000 --test 600

Labels: a seeded random choice among labels with >= 2 train documents. Documents: those keeping at least one
chosen label, shuffled; the first --train become the subset's train split and the next --test its test
split. Both come from the source's train split, so its test split stays unseen. Filter pairs (a document
that is itself a label) are carried over and re-indexed. Writes trn/tst/lbl.json.gz and
{trn,tst}_filter_labels.txt, then prints one line of counts.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from collections import Counter
from pathlib import Path


def _rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _filter(path: Path) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    if path.is_file():
        for line in path.read_text().split("\n"):
            if line.strip():
                r, c = map(int, line.split())
                out.setdefault(r, set()).add(c)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--labels", type=int, default=750)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=600)
    a = ap.parse_args()
    src, dst = Path(a.src), Path(a.dst)
    rng = random.Random(a.seed)
    rows, lbl = _rows(src / "trn.json.gz"), _rows(src / "lbl.json.gz")
    filt = _filter(src / "trn_filter_labels.txt")
    count = Counter(j for r in rows for j in r.get("target_ind", []))
    keep = sorted(rng.sample(sorted(j for j, n in count.items() if n >= 2), a.labels))
    new = {j: i for i, j in enumerate(keep)}
    docs = [i for i, r in enumerate(rows) if any(j in new for j in r.get("target_ind", []))]
    rng.shuffle(docs)
    docs = docs[: a.train + a.test]
    dst.mkdir(parents=True, exist_ok=True)

    def write(name: str, idx: list[int]) -> int:
        pairs = []
        with gzip.open(dst / f"{name}.json.gz", "wt", encoding="utf-8") as fh:
            for k, i in enumerate(idx):
                r = dict(rows[i])
                kept = [(new[j], v) for j, v in zip(r["target_ind"], r["target_rel"], strict=True) if j in new]
                r["target_ind"], r["target_rel"] = [j for j, _ in kept], [v for _, v in kept]
                fh.write(json.dumps(r) + "\n")
                pairs += [(k, new[c]) for c in sorted(filt.get(i, ())) if c in new]
        (dst / f"{name}_filter_labels.txt").write_text("".join(f"{r} {c}\n" for r, c in pairs))
        return len(pairs)

    n_filter = write("trn", docs[: a.train]) + write("tst", docs[a.train :])
    with gzip.open(dst / "lbl.json.gz", "wt", encoding="utf-8") as fh:
        for j in keep:
            fh.write(json.dumps(lbl[j]) + "\n")
    seen = Counter(new[j] for i in docs[: a.train] for j in rows[i]["target_ind"] if j in new)
    print(f"{dst}: {a.labels} labels ({len(seen)} seen in train, {sum(v <= 5 for v in seen.values())} with <= 5 "
          f"documents), {min(a.train, len(docs))} train, {max(0, len(docs) - a.train)} test, {n_filter} filter pairs")


if __name__ == "__main__":
    main()
