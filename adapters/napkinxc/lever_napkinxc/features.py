"""TF-IDF features for napkinXC (which takes sparse features but builds none itself): the same
features as the built-in trainer's hybrid input (:mod:`lever_plugins.tfidf`)."""

from __future__ import annotations

from dataclasses import dataclass

import scipy.sparse as sp

from lever_plugins.tfidf import tfidf_features


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
    (x_trn, x_tst), vocab = tfidf_features(trn_texts, tst_texts, min_df=min_df, where="trainer.adapter = napkinxc")
    return Tfidf(x_trn, x_tst, vocab)
