"""The contract between lever-plugins and its plugins. Every hook fires under project name "lever".

Registration hooks receive a ``register`` callback (as in simonw/llm); injection hooks are
``firstresult``: the first plugin that returns something other than None wins, and the built-in
plugin answers last with the paper's default.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("lever")
hookimpl = pluggy.HookimplMarker("lever")


@hookspec
def lever_register_teachers(register):
    """Fires once when the plugin manager builds its registries.

    Call ``register(name, factory)`` for each teacher. The core calls
    ``factory(config, seed=seed, **options)``: ``config`` the run's TeacherConfig, ``seed`` the teacher's
    seed (``[teacher] seed``, else the run's), ``options`` the ``[teacher.options]`` table (bound to the
    factory's signature before any stage runs). The teacher has ``preflight()`` (before any stage: raise a
    LeverError if it cannot run, e.g. a model missing), ``fit(doc_texts, lbl_texts, y, workdir,
    resume=True) -> dict`` (training stats) and ``embed(texts) -> np.ndarray`` (L2-normalised float32
    rows). Return value ignored.
    """


@hookspec
def lever_register_soft_label_providers(register):
    """Fires once when the plugin manager builds its registries.

    Call ``register(name, factory)``. The core calls ``factory(config, **options)``: ``config`` the run's
    SoftLabelConfig, ``options`` the ``[soft_labels.options]`` table. The provider has
    ``build(y_train, doc_emb, lbl_emb, has_text=None) -> SoftLabels`` giving the hard augmented (N+L)×L
    matrix and the teacher's soft (N+L)×L matrix (calibrated scores, ground truth never included).
    Return value ignored.
    """


@hookspec
def lever_register_adapters(register):
    """Fires once when the plugin manager builds its registries.

    Call ``register(name, factory)``. The core calls ``factory(**options)`` (the ``[trainer] options``
    table) and gets a :class:`lever_plugins.adapter.Adapter`: capabilities (``needs_features``,
    ``takes_sparse``, ``supports_finetune``, ``takes_loss_hook``), ``preflight(config)`` before any stage
    and ``train_predict(arm, config, loss) -> (test scores CSR, stats)`` per arm, with ``arm`` a frozen
    :class:`lever_plugins.adapter.Arm`. Adapters for upstream trainers subclass
    :class:`lever_plugins.wrap.WrapAdapter`. Return value ignored.
    """


@hookspec
def lever_register_baselines(register):
    """Fires once when the plugin manager builds its registries.

    Call ``register(name, factory)``. The core calls ``factory(**options)`` (the ``[baselines.<name>]``
    table) and gets a baseline with ``title`` (its row in the ``lever ab`` table) and ``run(ctx) -> CSR``
    test scores (n_test × L), where ``ctx`` is a ``lever_plugins.baselines.BaselineContext`` (the run,
    data, config, features, the A/B arms' cached inputs and scores, and ``uses`` to pass to
    ``stages.cached_stage``). ``lever ab`` runs those named in ``[eval] baselines``; the baseline ``plt``
    (registered by lever-napkinxc) is the ``--reference plt`` row. Return value ignored.
    """


@hookspec(firstresult=True)
def lever_blend_targets(y, soft, config):
    """Fires after soft labels are built, before the trainer sees its targets.

    ``y``: CSR (N+L)×L hard augmented targets (1 at ground truth and label rows); ``soft``: CSR of the
    same shape with the teacher's calibrated scores; ``config``: the run's SoftLabelConfig.
    Return the CSR float32 training targets (values in [0, 1]), or None to let the next plugin answer.
    """


@hookspec(firstresult=True)
def lever_loss(logits, targets, config):
    """Fires once per training step in adapters with ``takes_loss_hook`` (they get it as ``loss``).

    ``logits``: torch tensor (batch × candidates); ``targets``: float tensor of the same shape (the
    blended soft targets, or binary ones with --no-lever); ``config``: the TrainerConfig.
    Return a scalar torch loss that is a MEAN over the batch × candidates entries (the built-in trainer
    multiplies it by the number of candidate columns, so sampled shortlists weigh every entry alike),
    or None to let the next plugin answer.
    """


@hookspec
def lever_run_event(run, event, payload):
    """Fires at each stage boundary of a run: ``event`` is e.g. "stage_start", "stage_end",
    "metrics", "artifact"; ``run`` the Run (its directory and config); ``payload`` a dict.

    For loggers and trackers; return value ignored.
    """
