"""TF-IDF features for napkinXC (which takes sparse features but builds none itself).

scikit-learn's ``TfidfVectorizer`` (installed with lever-plugins through sentence-transformers):
lower-cased ``\\b\\w\\w+\\b`` tokens, sublinear tf (1 + ln count), smoothed idf ln((1 + n) / (1 + df)) + 1,
L2-normalised rows. The vocabulary and idf come from the training rows only: test documents never
shape the features, and their unseen tokens are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from lever_plugins.errors import LeverError


@dataclass
class Tfidf:
    x_trn: sp.csr_matrix  # float32, sorted indices
    x_tst: sp.csr_matrix
    vocabulary: dict[str, int]  # term -> column

    @property
    def dim(self) -> int:
        return len(self.vocabulary)


def tfidf(trn_texts: list[str], tst_texts: list[str], min_df: int = 1) -> Tfidf:
    """Fit TF-IDF on ``trn_texts`` and transform both lists (CSR float32, rows L2-normalised)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(sublinear_tf=True, min_df=min_df, dtype=np.float32)
    try:
        x_trn = vec.fit_transform(trn_texts)
    except ValueError as exc:  # no token of two or more word characters in any training text
        raise LeverError(
            f"no TF-IDF vocabulary in {len(trn_texts)} training texts: {exc}",
            where="trainer.adapter = napkinxc",
            fix="check [data] text (title/title+content): the napkinxc adapter needs non-empty texts",
        ) from exc
    x_tst = vec.transform(tst_texts)
    out = []
    for m in (x_trn, x_tst):
        m = sp.csr_matrix(m, dtype=np.float32)
        m.sort_indices()
        out.append(m)
    return Tfidf(out[0], out[1], {str(k): int(v) for k, v in vec.vocabulary_.items()})
