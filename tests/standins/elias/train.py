"""Stand-in of ELIAS's train.py: a module-level script, paths relative to the working directory."""

import logging
import logging.config
import os
import sys

import torch
import yaml
from datasets import DATA_MANAGERS, XMCEvaluator
from losses import *  # noqa: F403
from nets import *  # noqa: F403
from resources import load_config_and_runtime_args

args = load_config_and_runtime_args(sys.argv)
torch.manual_seed(0)
args.DATA_DIR = f"Datasets/{args.dataset}"
args.OUT_DIR = f"Results/{args.project}/{args.dataset}/{args.expname}"
os.makedirs(args.OUT_DIR, exist_ok=True)
with open("configs/logging.yaml") as f:
    log_config = yaml.safe_load(f)
log_config["handlers"]["file_handler"]["filename"] = f"{args.OUT_DIR}/log.txt"
logging.config.dictConfig(log_config)

data_manager = DATA_MANAGERS[args.data_manager](args)
trn_loader, val_loader, _ = data_manager.build_data_loaders()
with open(f"{args.OUT_DIR}/config.yaml", "w") as f:
    yaml.safe_dump(vars(args), f)
evaluator = XMCEvaluator(args, val_loader, data_manager, "val")
net = NETS[args.net](args)  # noqa: F405
criterion = LOSSES[args.loss](args)  # noqa: F405
optim = torch.optim.Adam(net.parameters(), lr=args.lr)

for epoch in range(args.num_epochs):
    net.train()
    total = 0.0
    for i, b in enumerate(trn_loader):
        loss = criterion(net, b)
        optim.zero_grad()
        loss.backward()
        optim.step()
        net.update_non_parameters(epoch, i)
        total += loss.item()
    print(f"Mean loss after epoch {epoch}/{args.num_epochs}: {total / (i + 1):.4E}", flush=True)
    evaluator.predict_and_track_eval(net, epoch, total / (i + 1))
