"""Stand-in entry point: argparse flags as the upstream's, `cuda:0` hard-coded, per-level label collation.

`--distributed` follows the upstream's DDP path: torchrun's environment, `init_process_group("nccl")`
hard-coded, `cuda:<local_rank>`, a DistributedSampler over the train set (`Runner.train` wraps DDP)."""

import argparse
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from CascadeXML import CascadeXML
from data_utils import load_data
from dataset import *  # noqa: F403
from Runner import Runner
from torch.utils.data import DataLoader
from transformers import AdamW  # noqa: F401 (imported here too, as upstream)


def multi_collate(batch):
    batch = list(zip(*batch, strict=True))
    return torch.stack(batch[0]), torch.stack(batch[1]), [list(b) for b in batch[2:]]


def main(params):
    if params.distributed:
        env_dict = {key: os.environ[key] for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
        dist.init_process_group(backend="nccl")
        print(f"[{os.getpid()}] world_size = {dist.get_world_size()}, rank = {dist.get_rank()}, "
              f"backend={dist.get_backend()}", flush=True)  # fmt: skip
        params.rank = int(os.environ["RANK"])
        params.local_rank = int(os.environ["LOCAL_RANK"])
        device = torch.device("cuda", params.local_rank)
    else:
        params.local_rank = 0
        device = torch.device("cuda:0")
    random.seed(params.seed)
    np.random.seed(params.seed)
    torch.manual_seed(params.seed)
    params.data_path = os.path.join("./data/", params.dataset)
    x_trn, x_tst, y_trn, y_tst, tfidf, inv_prop = load_data(params.data_path, params.bert, params.num_labels, False)
    train_dataset = MultiXMLGeneral(x_trn, y_trn, params, tfidf, mode="train")  # noqa: F405
    test_dataset = MultiXMLGeneral(x_tst, y_tst, params, mode="test")  # noqa: F405
    if params.distributed:
        sampler = torch.utils.data.DistributedSampler(
            train_dataset, shuffle=True, seed=params.seed, num_replicas=int(env_dict["WORLD_SIZE"])
        )
        train_dl = DataLoader(
            train_dataset, batch_size=params.batch_size, collate_fn=multi_collate, sampler=sampler, shuffle=False
        )
    else:
        train_dl = DataLoader(train_dataset, batch_size=params.batch_size, shuffle=True, collate_fn=multi_collate)
    test_dl = DataLoader(test_dataset, batch_size=params.batch_size, shuffle=False, collate_fn=multi_collate)
    model = CascadeXML(params=params, train_ds=train_dataset, device=device).to(device)
    Runner(params, train_dl, test_dl, inv_prop).train(model, params, device)
    if params.distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--num_labels", type=int, default=670091)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=29)
    parser.add_argument("--mn", type=str, default="")
    parser.add_argument("--num_epochs", type=int, default=15)
    parser.add_argument("--dataset", type=str, default="Amazon-670K")
    parser.add_argument("--bert", type=str, default="bert-base")
    parser.add_argument("--max_len", type=int, default=128)
    parser.add_argument("--topk", type=int, default=10, nargs="+")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--embed_drops", type=float, default=[0.2, 0.25, 0.4, 0.5], nargs="+")
    parser.add_argument("--weight_decay", type=float, default=0.05)
    parser.add_argument("--rw_loss", type=int, nargs="+", default=[1, 1, 1, 1])
    parser.add_argument("--cluster_name", default="clusters_eclare_4.pkl")
    parser.add_argument("--tree_depth", type=int, nargs="+", default=[10, 13, 16])
    parser.add_argument("--graph_name", default="graph.npz")
    parser.add_argument("--distributed", action="store_true")
    parser.add_argument("--local_rank", type=int, default=None)
    parser.add_argument("--local_world_size", type=int, default=2)
    parser.add_argument("--dist_eval", action="store_true")
    params = parser.parse_args()
    main(params)
