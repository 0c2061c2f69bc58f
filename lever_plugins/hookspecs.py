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
    rows; the document side). Optional: ``embed_labels(texts)`` (the label side, when it differs; default
    ``embed``) and ``fit_embeddings()`` (document-side embeddings of the documents ``fit`` trained on,
    out-of-fold, so the student is not distilled from the teacher's overfit; default ``embed`` of them).
    Return value ignored.
    """


@hookspec
def lever_register_soft_label_providers(register):
    """Fires once when the plugin manager builds its registries.

    Call ``register(name, factory)``. The core calls ``factory(config, **options)``: ``config`` the run's
    SoftLabelConfig (``calibration = "auto"`` already made "linear" or "sigmoid" by the label-count rule; a
    small dense run may then choose another calibration for its dense targets on a hold-out, after the
    provider has run), ``options`` the ``[soft_labels.options]`` table. The provider has
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
    """Fires after soft labels are built, before the trainer sees its targets (the streamed builder,
    ``soft_labels.stream.write_soft_labels``, calls it once per block of rows: keep it row-local).

    ``y``: CSR (N+L)×L hard augmented targets (1 at ground truth and label rows); ``soft``: CSR of the
    same shape with the teacher's calibrated scores; ``config``: the run's SoftLabelConfig (calibration named).
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

    Where a plugin answers it: the built-in trainer (every step); Renée (``xfc_backward``: the gradient of
    each chunk of labels by autograd of this loss × entries; ``--default-impl``'s loss), ELIAS (the
    classification term of ``ELIASLoss``, on ``logit`` of its top-K probabilities), CascadeXML (every
    level's term), in both arms, called inside the launched upstream process (so the plugin must be an
    installed distribution). With only the built-in answer, upstreams keep their own BCE (fast paths).
    Adapters without ``takes_loss_hook`` (xreg, napkinxc) refuse a run in which a plugin implements it.
    """


@hookspec
def lever_run_event(run, event, payload):
    """Fires at each stage boundary of a run and inside stages: ``event`` is "stage_start", "stage_end",
    "epoch" (teacher and built-in trainer: ``epoch``, ``loss``, ``docs_per_s``, ``seconds``), "valid",
    "artifact" (``name``, ``path`` of each artefact a stage wrote) or "metrics" (``arm``, ``metrics``);
    ``run`` the Run (``run.root`` its directory); ``payload`` a dict with ``stage`` for events inside a
    stage. Full list: :mod:`lever_plugins.events`.

    For loggers and trackers (e.g. the lever-tensorboard distribution); return value ignored.
    """
