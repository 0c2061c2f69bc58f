"""Stand-in schedule: like the upstream's, it hands ``verbose`` to torch's ``_LRScheduler``."""

from torch.optim.lr_scheduler import _LRScheduler


class ThreePhaseOneCycleLR(_LRScheduler):
    def __init__(self, optimizer, max_lr, epochs=None, steps_per_epoch=None, last_epoch=-1, verbose=False):
        self.max_lr = list(max_lr)
        super().__init__(optimizer, last_epoch, verbose)

    def get_lr(self):
        return list(self.max_lr)
