"""The built-in plugin: registered through the same hooks as any third-party plugin.

Factories import lazily so that listing plugins never pulls in torch or faiss.
"""

from __future__ import annotations

from lever_plugins.hookspecs import hookimpl
from lever_plugins.plugins import LazyFactory


def _lazy(target: str) -> LazyFactory:
    return LazyFactory(target)


@hookimpl
def lever_register_teachers(register):
    register("siamese", _lazy("lever_plugins.teacher.siamese:SiameseTeacher"))
    register("head", _lazy("lever_plugins.teacher.head:HeadTeacher"))


@hookimpl
def lever_register_soft_label_providers(register):
    register("knn", _lazy("lever_plugins.soft_labels.provider:KnnProvider"))


@hookimpl
def lever_register_adapters(register):
    register("builtin", _lazy("lever_plugins.trainer.adapter:BuiltinAdapter"))


@hookimpl
def lever_register_baselines(register):
    register("rerank", _lazy("lever_plugins.baselines:ReRank"))
    register("ensemble", _lazy("lever_plugins.baselines:Ensemble"))
    register("label_rows", _lazy("lever_plugins.baselines:LabelRows"))
    register("lever_rerank", _lazy("lever_plugins.baselines:LeverReRank"))
    register("lever_ensemble", _lazy("lever_plugins.baselines:LeverEnsemble"))


@hookimpl(trylast=True)
def lever_blend_targets(y, soft, config):
    from lever_plugins.soft_labels.blend import blend

    return blend(y, soft, config.blend_lambda, mode=config.blend_mode)


@hookimpl(trylast=True)
def lever_loss(logits, targets, config):
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(logits, targets, reduction="mean")
