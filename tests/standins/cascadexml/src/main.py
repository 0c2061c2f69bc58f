"""Stand-in entry point: argparse flags as the upstream's, `cuda:0` hard-coded, per-level label collation."""

import argparse
import os
import random

import numpy as np
import torch
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
    device = torch.device("cuda:0")
    random.seed(params.seed)
    np.random.seed(params.seed)
    torch.manual_seed(params.seed)
    params.data_path = os.path.join("./data/", params.dataset)
    x_trn, x_tst, y_trn, y_tst, tfidf, inv_prop = load_data(params.data_path, params.bert, params.num_labels, False)
    train_dataset = MultiXMLGeneral(x_trn, y_trn, params, tfidf, mode="train")  # noqa: F405
    test_dataset = MultiXMLGeneral(x_tst, y_tst, params, mode="test")  # noqa: F405
    train_dl = DataLoader(train_dataset, batch_size=params.batch_size, shuffle=True, collate_fn=multi_collate)
    test_dl = DataLoader(test_dataset, batch_size=params.batch_size, shuffle=False, collate_fn=multi_collate)
    model = CascadeXML(params=params, train_ds=train_dataset, device=device).to(device)
    Runner(params, train_dl, test_dl, inv_prop).train(model, params, device)


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
    params = parser.parse_args()
    main(params)
