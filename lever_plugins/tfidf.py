"""TF-IDF features: the lexical half of the built-in trainer's hybrid input, and napkinXC's features.

scikit-learn's ``TfidfVectorizer``: lower-cased ``\\b\\w\\w+\\b`` tokens, sublinear tf (1 + ln count),
smoothed idf ln((1 + n) / (1 + df)) + 1, L2-normalised rows. The vocabulary and idf come from the
training documents only: test documents never shape the features, and their unseen tokens are dropped.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lever_plugins.errors import LeverError


def tfidf_features(
    fit_texts: list[str], *transform: list[str], min_df: int = 1, where: str = "[encoder] tfidf"
) -> tuple[list[sp.csr_matrix], dict[str, int]]:
    """Fit on ``fit_texts``; return [fit rows, *each of ``transform``] as CSR float32 with sorted
    indices, and the vocabulary (term → column)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(sublinear_tf=True, min_df=min_df, dtype=np.float32)
    try:
        first = vec.fit_transform(fit_texts)
    except ValueError as exc:  # no token of two or more word characters in any training text
        raise LeverError(
            f"no TF-IDF vocabulary in {len(fit_texts)} training texts: {exc}",
            where=where,
            fix="check [data] text (title/title+content): TF-IDF needs non-empty texts",
        ) from exc
    out = []
    for m in (first, *(vec.transform(t) for t in transform)):
        m = sp.csr_matrix(m, dtype=np.float32)
        m.sort_indices()
        out.append(m)
    return out, {str(k): int(v) for k, v in vec.vocabulary_.items()}
