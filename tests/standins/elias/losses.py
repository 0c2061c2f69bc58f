"""Stand-in of ELIAS's losses: classification BCE on stored values, shortlist BCE on stored entries as 1."""

from turtle import forward  # noqa: F401  (ELIAS has this unused import; lever-elias stubs turtle without Tk)

import torch
import torch.nn as nn


class ELIASLoss(nn.Module):
    def __init__(self, args, reduction="mean"):
        super().__init__()
        self.numy = args.numy
        self.loss_lambda = args.loss_lambda
        self.criterion = nn.BCELoss(reduction=reduction)

    def forward(self, model, b):
        top_vals, top_inds, sl_vals, sl_inds = model(b)
        y_inds, y_vals = b["y"]["inds"].to(top_inds.device), b["y"]["vals"].to(top_vals.device)
        with torch.no_grad():
            top_t = torch.zeros_like(top_vals)
            sl_t = torch.zeros_like(sl_vals)
            for j in range(y_inds.shape[1]):
                top_t = torch.where(top_inds == y_inds[:, [j]], y_vals[:, [j]], top_t)
                hit = (sl_inds == y_inds[:, [j]]) & (sl_inds < self.numy)
                sl_t = torch.where(hit, torch.ones_like(sl_t), sl_t)
        classification = self.criterion(top_vals, top_t)
        pos_t, pos = sl_t.topk(min(y_inds.shape[1], sl_t.shape[1]))
        pos_v = sl_vals.gather(1, pos) * (pos_t >= 1e-5)
        return classification + self.loss_lambda * self.criterion(pos_v, pos_t)


LOSSES = {
    "elias-loss": ELIASLoss,
}
