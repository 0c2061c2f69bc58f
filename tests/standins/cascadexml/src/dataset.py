"""Stand-in dataset: label indices only (values dropped), each coarser level the parents of the finer one."""

import os

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.preprocessing import normalize
from torch.utils.data import Dataset
from tree import build_tree as Tree


class MultiXMLGeneral(Dataset):
    def __init__(self, x, Y, params, X_tfidf=None, mode="train"):
        super().__init__()
        self.mode = mode
        self.x = x
        self.Y = Y
        if mode == "train":
            self.tf_X = normalize(X_tfidf, norm="l2")
        self.n_labels = params.num_labels
        self.max_len = params.max_len
        self.cls_token_id = [101]
        self.sep_token_id = [102]
        self.label_graph = self.load_graph(params)
        self.tree = Tree(b_factors=params.tree_depth, leaf_size=params.num_labels)
        self.build(params)
        self.groups.append(np.arange(self.n_labels).reshape(-1, 1))
        self.num_clusters = [len(g) for g in self.groups]
        # child -> parent maps, finest first; coarse groups re-expressed in the next level's ids
        self.label_to_cluster_maps = []
        for i in range(len(self.groups) - 2, -1, -1):
            parent = np.full(self.num_clusters[i + 1], -1, dtype=np.int64)
            for c, members in enumerate(self.groups[i]):
                parent[np.asarray(members, dtype=np.int64)] = c
            self.label_to_cluster_maps.append(parent)
            for j in range(i):
                self.groups[j] = [np.unique(parent[np.asarray(m, dtype=np.int64)]) for m in self.groups[j]]
        self.groups.pop(-1)

    def __len__(self):
        return len(self.x)

    def load_graph(self, params, word_embeds=None):
        path = os.path.join(params.data_path, params.graph_name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: the stand-in has no random walk")
        return sp.load_npz(path)

    def build(self, params, lbl_dense=None, word_embeds=None):
        path = os.path.join(params.data_path, params.cluster_name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: the stand-in does not cluster")
        self.tree.load(path)
        self.groups = [self.tree._get_cluster_depth(d) for d in range(len(self.tree.b_factors))]

    def __getitem__(self, idx):
        ids = [torch.LongTensor(self.Y[idx].indices)]
        for parent in self.label_to_cluster_maps:
            ids.append(torch.LongTensor(np.unique(parent[ids[-1].numpy()])))
            assert ids[-1][0] != -1  # IndexError on a row with no labels, as upstream
        ids = ids[::-1]
        tokens = self.cls_token_id + list(self.x[idx])[: self.max_len - 2] + self.sep_token_id
        pad = self.max_len - len(tokens)
        return torch.tensor(tokens + [0] * pad), torch.tensor([1] * len(tokens) + [0] * pad), *ids
