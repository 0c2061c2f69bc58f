"""lever-tensorboard: TensorBoard event files for lever-plugins runs (hooks in lever_tensorboard.plugin)."""
