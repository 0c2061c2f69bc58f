"""Stand-in of ELIAS's train.py: a module-level script, paths relative to the working directory.

As ELIAS's: an ``accelerate.Accelerator`` built at import, ``accelerator.prepare(net, optim, loader)``
(data-parallel under ``accelerate launch``), ``accelerator.backward``, and only the main process logs,
writes the config and evaluates; every rank waits for the others after each epoch."""

from accelerate import Accelerator

accelerator = Accelerator()
IS_MAIN_PROC = accelerator.is_main_process

import logging  # noqa: E402 (as ELIAS: the Accelerator first)
import logging.config  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402
from datasets import DATA_MANAGERS, XMCEvaluator  # noqa: E402
from dl_helper import unwrap  # noqa: E402
from losses import *  # noqa: F403, E402
from nets import *  # noqa: F403, E402
from resources import load_config_and_runtime_args  # noqa: E402

args = load_config_and_runtime_args(sys.argv)
args.device = str(accelerator.device)
args.num_gpu = accelerator.state.num_processes
torch.manual_seed(0)
args.DATA_DIR = f"Datasets/{args.dataset}"
args.OUT_DIR = f"Results/{args.project}/{args.dataset}/{args.expname}"
os.makedirs(args.OUT_DIR, exist_ok=True)
if IS_MAIN_PROC:
    with open("configs/logging.yaml") as f:
        log_config = yaml.safe_load(f)
    log_config["handlers"]["file_handler"]["filename"] = f"{args.OUT_DIR}/log.txt"
    logging.config.dictConfig(log_config)

data_manager = DATA_MANAGERS[args.data_manager](args)
trn_loader, val_loader, _ = data_manager.build_data_loaders()
if IS_MAIN_PROC:
    with open(f"{args.OUT_DIR}/config.yaml", "w") as f:
        yaml.safe_dump(vars(args), f)
    evaluator = XMCEvaluator(args, val_loader, data_manager, "val")
accelerator.wait_for_everyone()
net = NETS[args.net](args)  # noqa: F405
criterion = LOSSES[args.loss](args)  # noqa: F405
optim = torch.optim.Adam(net.parameters(), lr=args.lr)
net, optim, trn_loader = accelerator.prepare(net, optim, trn_loader)

for epoch in range(args.num_epochs):
    net.train()
    total = 0.0
    for i, b in enumerate(trn_loader):
        loss = criterion(net, b)
        optim.zero_grad()
        accelerator.backward(loss)
        optim.step()
        unwrap(net).update_non_parameters(epoch, i)
        total += loss.item()
    if IS_MAIN_PROC:
        print(f"Mean loss after epoch {epoch}/{args.num_epochs}: {total / (i + 1):.4E}", flush=True)
        evaluator.predict_and_track_eval(unwrap(net), epoch, total / (i + 1))
    accelerator.wait_for_everyone()
