"""Test stand-in for Renée's ``main.py`` (NOT Renée's code): the same flags and the same path through the
patched symbols, on CPU: ``main()`` starts ``start`` in a ``torch.multiprocessing.spawn`` child (one "GPU"),
which reads ``trn_X_Y.txt`` with ``xclib``'s reader, computes the propensity with ``xclib``, builds the
``dl_base`` dataset/collator/loss/model, trains and saves ``<expname>_score_mat.npz`` under
``./Results/Bert-XC/<data folder>/<expname>/``. It also writes ``<expname>_probe.json`` there (for the tests:
process ids, the propensity it got, the targets its loss used per epoch).
"""

import argparse
import json
import os
import random

import numpy as np
import scipy.sparse as sp
import torch
import torch.multiprocessing as mp
import xclib.data.data_utils as data_utils
from dl_base import *  # noqa: F403  (as Renée's main.py)


def start(device, ngpus_per_node, args):
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(1)
    args.rank = my_rank = 0
    dataset = args.data_dir.split("/")[-1]
    results_dir = "./Results/Bert-XC/"
    trn_X_Y = data_utils.read_sparse_file(f"{args.data_dir}/trn_X_Y.txt")
    tst_X_Y = data_utils.read_sparse_file(f"{args.data_dir}/tst_X_Y.txt")
    inv_prop = xc_metrics.compute_inv_propesity(trn_X_Y, 0.55, 1.5)  # noqa: F405
    temp = np.fromfile(f"{args.data_dir}/tst_filter_labels.txt", sep=" ").astype(int).reshape(-1, 2).T
    filter_mat = sp.coo_matrix((np.ones(temp.shape[1]), (temp[0], temp[1])), tst_X_Y.shape).tocsr()
    if "roberta" in args.tf:
        tokenizer_type = "roberta-base"
    elif "bert" in args.tf:
        tokenizer_type = "bert-base-uncased"
    elif "MiniLM" in args.tf:
        tokenizer_type = "miniLM_L6"
    else:
        tokenizer_type = args.tf
    padded_numy = 16 * ((trn_X_Y.shape[1] + 15) // 16)
    numy_per_gpu = padded_numy // args.world_size
    tok = f"{args.data_dir}/{tokenizer_type}-{args.maxlen}"
    trn = PreTokBertDataset(tok, trn_X_Y.tocsc()[:, :numy_per_gpu].tocsr(), trn_X_Y.shape[0], args.maxlen)  # noqa: F405
    tst = PreTokBertDataset(tok, tst_X_Y, tst_X_Y.shape[0], args.maxlen, doc_type="tst")  # noqa: F405
    gbsz = args.batch_size * args.world_size
    trn_loader = torch.utils.data.DataLoader(
        trn, batch_size=gbsz, shuffle=True, num_workers=0,
        collate_fn=XCCollator(padded_numy, trn, my_rank, args.world_size, args.accum, gbsz // args.accum, True,  # noqa: F405
                              args.default_impl))  # fmt: skip
    tst_loader = torch.utils.data.DataLoader(
        tst, batch_size=gbsz, num_workers=0,
        collate_fn=XCCollator(padded_numy, tst, my_rank, args.world_size, args.accum, gbsz // args.accum, False,  # noqa: F405
                              args.default_impl))  # fmt: skip
    args.bottleneck_dims = 16
    out_dir = f"{results_dir}/{dataset}/{args.expname}"
    model = GenericModel(my_rank, args, trn_X_Y.shape[1], numy_per_gpu, args.batch_size,  # noqa: F405
                         [BagEncoder(args.bottleneck_dims)], device="cpu", name=args.expname, out_dir=out_dir)  # noqa: F405
    loss = BCELossMultiNodeDefault(model) if args.default_impl else BCELossMultiNode(model)  # noqa: F405
    evaluator = PrecEvaluator(model, tst_loader, FullPredictor(), filter_mat=filter_mat, inv_prop=inv_prop)  # noqa: F405
    model.fit(trn_loader, loss, torch.optim.SGD, {"lr": args.lr1, "momentum": args.mo}, torch.optim.SGD,
              {"lr": args.lr2}, epochs=args.epochs, evaluator=evaluator)
    with open(f"{out_dir}/{args.expname}_probe.json", "w") as fh:
        json.dump({"pid": os.getpid(), "parent": os.getppid(), "inv_prop": [float(v) for v in inv_prop],
                   "trn_shape": list(trn_X_Y.shape), **model.probe}, fh)


def main():
    parser = argparse.ArgumentParser(description="Renee stand-in")
    parser.add_argument("--data-dir", type=str, default="")
    parser.add_argument("--custom-cuda", action="store_true", default=False)
    parser.add_argument("--default-impl", action="store_true", default=False)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--expname", type=str, default="renee-exp")
    parser.add_argument("--device", type=int, default=None)
    parser.add_argument("--world-size", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lr1", type=float, default=0.0025)
    parser.add_argument("--lr2", type=float, default=1e-5)
    parser.add_argument("--mo", type=float, default=0.9)
    parser.add_argument("--noloss", action="store_true", default=False)
    parser.add_argument("--fp16xfc", action="store_true", default=False)
    parser.add_argument("--fp32encoder", action="store_true", default=False)
    parser.add_argument("--warmup", type=int, default=140000)
    parser.add_argument("--accum", type=int, default=1)
    parser.add_argument("--maxlen", type=int, default=32)
    parser.add_argument("--tf", type=str, default="distilbert-base-uncased")
    args = parser.parse_args()
    if args.device is not None:
        start(args.device, 1, args)
    else:
        mp.spawn(start, nprocs=1, args=(1, args), join=True)


if __name__ == "__main__":
    main()
