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

    Call ``register(name, factory)`` for each teacher; ``factory(config: TeacherConfig)`` returns an
    object with ``fit(doc_texts, lbl_texts, y, workdir, resume) -> dict`` (training stats) and
    ``embed(texts) -> np.ndarray`` (L2-normalised float32 rows). Return value ignored.
    """


@hookspec
def lever_register_soft_label_providers(register):
    """Fires once when the plugin manager builds its registries.

    Call ``register(name, factory)``; ``factory(config: SoftLabelConfig)`` returns an object with
    ``build(y_train, doc_emb, lbl_emb, has_text=None) -> SoftLabels`` giving the hard augmented (N+L)×L matrix and the
    teacher's soft (N+L)×L matrix (calibrated scores, ground truth never included). Return ignored.
    """


@hookspec
def lever_register_adapters(register):
    """Fires once when the plugin manager builds its registries.

    Call ``register(name, factory)``; ``factory(**options)`` (``[trainer] options``) returns an adapter
    with ``train_predict(x_train, targets, x_test, config, seed, ...) -> (test scores CSR, stats)``.
    Adapters for upstream trainers subclass :class:`lever_plugins.wrap.WrapAdapter` (contract,
    prepare, patches, collect; ``lever wrap`` and ``lever doctor`` use them). An adapter that can train
    the encoder (``[trainer] finetune = true``) sets ``supports_finetune = True`` and takes ``texts``,
    ``encoder`` and ``encoder_dir`` in ``train_predict``; the others are refused before any stage runs.
    Return value ignored.
    """


@hookspec
def lever_register_baselines(register):
    """Fires once when the plugin manager builds its registries.

    Call ``register(name, factory)``; ``factory()`` returns a baseline with ``title`` (its row in the
    ``lever ab`` table) and ``run(ctx) -> CSR`` test scores (n_test × L), where ``ctx`` is a
    ``lever_plugins.baselines.BaselineContext`` (the run, data, config, features and the A/B arms' cached
    inputs and scores). ``lever ab`` runs those named in ``[eval] baselines``. Return value ignored.
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
    """Fires once per training step in trainers that take their loss from LEVER (builtin, adapters).

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
