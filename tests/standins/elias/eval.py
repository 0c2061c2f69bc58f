"""Stand-in of ELIAS's eval.py: the saved best model scores the test set into tst_score_mat.npz."""

import sys

import scipy.sparse as sp
from datasets import DATA_MANAGERS, XMCEvaluator
from nets import *  # noqa: F403
from resources import load_config_and_runtime_args

args = load_config_and_runtime_args(sys.argv)
args.DATA_DIR = f"Datasets/{args.dataset}"
data_manager = DATA_MANAGERS[args.data_manager](args)
_, _, tst_loader = data_manager.build_data_loaders()
net = NETS[args.net](args)  # noqa: F405
net.load(f"{args.OUT_DIR}/model.pt")
score_mat = net.predict(tst_loader, K=args.eval_topk)
score_mat, p1 = XMCEvaluator(args, tst_loader, data_manager, prefix="tst").eval(score_mat)
sp.save_npz(f"{args.OUT_DIR}/tst_score_mat.npz", score_mat)
print(f"tst P@1 {p1:.2f}")
