"""Stand-in of ELIAS's datasets: label matrices, token memmaps, collator, data manager, evaluator."""

import os

import numpy as np
import scipy.sparse as sp
import torch
from dl_helper import csr_to_pad_tensor
from resources import get_inv_prop, load_filter_mat, precision_at_1


class BaseDataset(torch.utils.data.Dataset):
    def __init__(self, labels, sample=None, filter_mat=None):
        self.sample = np.arange(labels.shape[0]) if sample is None else sample
        self.labels = labels[self.sample]
        self.filter_mat = filter_mat[self.sample] if filter_mat is not None else None

    def __getitem__(self, index):
        return {"index": index}

    def __len__(self):
        return len(self.sample)


class OfflineBertDataset(BaseDataset):
    def __init__(self, fname, labels, max_len, token_type, **kw):
        super().__init__(labels, **kw)
        rows, cols, dtype = open(f"{fname}.meta").read().split()
        self.X_ii = np.memmap(fname, mode="r", dtype=dtype, shape=(int(rows), int(cols)))

    def get_fts(self, indices):
        ids = np.asarray(self.X_ii[self.sample[np.asarray(indices)]])
        return {"input_ids": torch.as_tensor(ids, dtype=torch.long)}


class XMCCollator:
    def __init__(self, dataset):
        self.dataset = dataset
        self.numy = dataset.labels.shape[1]

    def __call__(self, batch):
        ids = torch.LongTensor([x["index"] for x in batch])
        return {
            "batch_size": torch.LongTensor([len(batch)]),
            "numy": torch.LongTensor([self.numy]),
            "y": csr_to_pad_tensor(self.dataset.labels[ids.numpy()], self.numy),
            "ids": ids,
            "xfts": self.dataset.get_fts(ids.numpy()),
        }


class XMCDataManager:
    def __init__(self, args):
        self.trn_X_Y = sp.load_npz(f"{args.DATA_DIR}/Y.trn.npz").tocsr()
        self.tst_X_Y = sp.load_npz(f"{args.DATA_DIR}/Y.tst.npz").tocsr()
        self.tst_filter_mat = load_filter_mat(f"{args.DATA_DIR}/filter_labels_test.txt", self.tst_X_Y.shape)
        self.trn_filter_mat = load_filter_mat(f"{args.DATA_DIR}/filter_labels_train.txt", self.trn_X_Y.shape)
        self.inv_prop = get_inv_prop(self.trn_X_Y, args.dataset)
        self.numy = args.numy = self.trn_X_Y.shape[1]
        self.trn_numx = self.trn_X_Y.shape[0]
        self.tf_max_len = args.tf_max_len
        self.tf_token_type = args.tf_token_type = (
            "roberta-base" if "roberta" in args.tf else "bert-base-uncased" if "bert" in args.tf else args.tf
        )
        self.DATA_DIR, self.bsz, self.num_val_points = args.DATA_DIR, args.bsz, args.num_val_points
        if self.num_val_points > 0:
            path = f"{args.DATA_DIR}/val_inds_{self.num_val_points}.npy"
            if os.path.exists(path):
                self.val_inds = np.load(path)
            else:  # like ELIAS: from every train row
                self.val_inds = np.random.choice(self.trn_numx, size=self.num_val_points, replace=False)
                np.save(path, self.val_inds)
            self.trn_inds = np.setdiff1d(np.arange(self.trn_numx), self.val_inds)
        else:
            self.trn_inds = self.val_inds = None

    def build_datasets(self):
        def tokens(split):
            return f"{self.DATA_DIR}/raw/{split}_X.{self.tf_token_type}_{self.tf_max_len}.dat"

        kw = (self.tf_max_len, self.tf_token_type)
        self.trn_dataset = OfflineBertDataset(tokens("trn"), self.trn_X_Y, *kw, sample=self.trn_inds)
        self.val_dataset = OfflineBertDataset(tokens("trn"), self.trn_X_Y, *kw, sample=self.val_inds)
        self.tst_dataset = OfflineBertDataset(tokens("tst"), self.tst_X_Y, *kw, filter_mat=self.tst_filter_mat)
        if self.num_val_points <= 0:
            self.val_dataset = self.tst_dataset
        return self.trn_dataset, self.val_dataset, self.tst_dataset

    def build_data_loaders(self):
        if not hasattr(self, "trn_dataset"):
            self.build_datasets()

        def loader(ds, shuffle):
            return torch.utils.data.DataLoader(ds, batch_size=self.bsz, shuffle=shuffle, collate_fn=XMCCollator(ds))

        self.trn_loader = loader(self.trn_dataset, True)
        self.val_loader = loader(self.val_dataset, False)
        self.tst_loader = loader(self.tst_dataset, False)
        return self.trn_loader, self.val_loader, self.tst_loader


class XMCEvaluator:
    def __init__(self, args, data_source, data_manager, prefix="default"):
        self.data_source, self.prefix, self.args = data_source, prefix, args
        self.labels = data_source.dataset.labels
        self.filter_mat = data_source.dataset.filter_mat
        self.inv_prop = data_manager.inv_prop
        self.best_score = -1.0

    def eval(self, score_mat, epoch=-1, loss=float("inf")):
        if self.filter_mat is not None:
            score_mat = score_mat.multiply(self.filter_mat == 0).tocsr()
            score_mat.eliminate_zeros()
        p1 = precision_at_1(score_mat, self.labels)
        with open(f"{self.args.OUT_DIR}/{self.prefix}_metrics.tsv", "a") as fh:
            fh.write(f"{epoch}\t{p1:.4f}\t{loss:.6f}\n")
        return score_mat, p1

    def predict_and_track_eval(self, net, epoch="-", loss=float("inf")):
        score_mat, p1 = self.eval(net.predict(self.data_source, K=self.args.eval_topk), epoch, loss)
        if p1 > self.best_score:
            self.best_score = p1
            if self.args.save:
                sp.save_npz(f"{self.args.OUT_DIR}/{self.prefix}_score_mat.npz", score_mat)
                net.save(f"{self.args.OUT_DIR}/model.pt")
        return p1


DATA_MANAGERS = {
    "xmc": XMCDataManager,
}
