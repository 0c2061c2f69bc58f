"""Stand-in training loop: AdamW from transformers, CUDA autocast/scaler, `.cuda()` in test, top-20 predictions."""

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist
from torch import nn
from training_schedule import ThreePhaseOneCycleLR
from transformers import AdamW


class Runner:
    def __init__(self, params, train_dl, test_dl, inv_prop, top_k=5):
        self.train_dl = train_dl
        self.test_dl = test_dl
        self.top_k = top_k
        self.inv_prop = torch.from_numpy(inv_prop).double()

    def fit_one_epoch(self, model, params, device, epoch):
        model.train()
        total = torch.tensor(0.0).to(device)
        for x, mask, labels in self.train_dl:
            x, mask = x.to(device), mask.to(device)
            with torch.amp.autocast("cuda"):
                probs, cands, loss = model(x, mask, epoch, labels)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad()
            self.cycle_scheduler.step()
            total += loss.item()
        if getattr(params, "distributed", False):
            dist.reduce(total, dst=0, op=dist.ReduceOp.SUM)
        if getattr(params, "local_rank", 0) == 0:
            print(f"Epoch: {epoch},  Train Loss: {total.item() / len(self.train_dl)}")
        if getattr(params, "distributed", False):
            dist.barrier()
        self.test(model, params, device, epoch)

    def train(self, model, params, device):
        if getattr(params, "distributed", False):
            torch.cuda.set_device(params.local_rank)
            device = torch.device("cuda", params.local_rank)
            model = model.to(device)
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[params.local_rank], output_device=params.local_rank, find_unused_parameters=True
            )
            module = model.module
        else:
            module = model
        head = [*module.Cn_hidden.parameters(), *module.Cn.parameters(), *module.Cn_bias.parameters()]
        groups = [
            {"params": list(module.bert.parameters()), "weight_decay": params.weight_decay, "lr": params.lr},
            {"params": head, "weight_decay": 0.0, "lr": params.lr * 10},
        ]
        self.scaler = torch.amp.GradScaler("cuda")
        self.optimizer = AdamW(groups, lr=params.lr)
        self.cycle_scheduler = ThreePhaseOneCycleLR(
            self.optimizer, max_lr=[params.lr, params.lr * 10], epochs=params.num_epochs,
            steps_per_epoch=len(self.train_dl),
        )  # fmt: skip
        for epoch in range(params.num_epochs):
            if getattr(params, "distributed", False):
                self.train_dl.sampler.set_epoch(epoch)
            self.fit_one_epoch(model, params, device, epoch + 1)

    @torch.no_grad()
    def test(self, model, params, device, epoch=0):
        if not getattr(params, "dist_eval", False) and getattr(params, "local_rank", 0) != 0:
            return
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        model.eval()
        self.num = torch.zeros(self.top_k).cuda()
        rows, cols, vals, start = [], [], [], 0
        for x, mask, _labels in self.test_dl:
            with torch.amp.autocast("cuda"):
                probs, cands, weighted = model(x.to(device), mask.to(device), epoch)
            top_p, top_i = torch.topk(weighted[-1], 20)
            top_c = torch.gather(cands[-1], 1, top_i)
            rows.append(np.repeat(np.arange(start, start + x.shape[0]), 20))
            cols.append(top_c.flatten().cpu().numpy())
            vals.append(top_p.flatten().float().cpu().numpy())
            start += x.shape[0]
        preds = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(start, params.num_labels + 1)
        )
        sp.save_npz(f"./{params.dataset}_{params.bert}_{params.seed}_preds.npz", preds)
