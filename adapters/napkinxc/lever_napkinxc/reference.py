"""Plain PLT on TF-IDF: the reference row of ``lever ab --reference plt``, registered as the baseline
``plt`` through ``lever_register_baselines`` (the core knows no adapter by name)."""

from __future__ import annotations

from typing import Any

import scipy.sparse as sp

from lever_napkinxc.adapter import train_predict_texts


def plt_reference(
    trn_texts: list[str], y_trn: sp.spmatrix, tst_texts: list[str], top_k: int = 100, seed: int = 13
) -> sp.csr_matrix:
    """napkinXC PLT (defaults) on TF-IDF of the texts, trained on the binary ``y_trn``; top-k scores
    as CSR n_test × L. The same code path as the napkinxc adapter's base arm."""
    y = sp.csr_matrix(y_trn, copy=True)
    y.data = (y.data > 0).astype(y.data.dtype)  # any stored relevance counts as a positive
    scores, _ = train_predict_texts(list(trn_texts), y, list(tst_texts), top_k=top_k, seed=seed)
    return scores


class PltReference:
    """Baseline ``plt``: napkinXC PLT on TF-IDF of the documents, binary targets, cached as its own stage
    (``reference_plt``, artefact ``reference/scores.npz``)."""

    name = "plt"
    title = "napkinXC PLT"

    def run(self, ctx: Any) -> sp.csr_matrix:
        from lever_plugins.stages import cached_stage, config_hash, save_csr

        ds, cfg, run = ctx.ds, ctx.cfg, ctx.run
        key = config_hash(ctx.sig, cfg.seed, cfg.trainer.top_k, "plt")
        art = "reference/scores.npz"

        def compute() -> None:
            s = plt_reference(ds.trn_texts, ds.binary_train(), ds.tst_texts, top_k=cfg.trainer.top_k, seed=cfg.seed)
            save_csr(run.root / art, s)

        cached_stage(run, "reference_plt", key, [art], compute, ctx.log, uses=ctx.uses)
        return sp.load_npz(run.root / art).tocsr()
