"""Metrics: P, nDCG, PSP, PSnDCG, R, coverage, macro P/R/F1 @k, inverse propensity, decile analysis."""

from lever_plugins.metrics.deciles import decile_contributions, label_bins, plot_deciles
from lever_plugins.metrics.propensity import binarise, inv_propensity, propensity_ab
from lever_plugins.metrics.ranking import RankedEval, evaluate, prepare_eval, topk_labels

__all__ = [
    "RankedEval",
    "binarise",
    "decile_contributions",
    "evaluate",
    "inv_propensity",
    "label_bins",
    "plot_deciles",
    "prepare_eval",
    "propensity_ab",
    "topk_labels",
]
