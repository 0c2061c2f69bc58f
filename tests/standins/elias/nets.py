"""Stand-in of ELIAS's nets: ELIAS1 with a hashed bag-of-tokens encoder instead of a transformer."""

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F
from dl_helper import ToD, csr_to_pad_tensor

HASH = 4096


class ELIAS1(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.numy, self.beam_size, self.alpha, self.K = args.numy, args.beam_size, args.alpha, args.K
        self.max_num_trn_clusters = self.beam_size + 5
        self.C = args.C = int(2 ** np.ceil(np.log2(args.numy / args.max_leaf)))
        self.enc = nn.EmbeddingBag(HASH, args.embs_dim, mode="mean")
        self.WC = nn.Linear(args.embs_dim, self.C)
        self.WL = nn.Embedding(args.numy + 1, args.embs_dim)
        self.WL_bias = nn.Parameter(torch.zeros(args.numy + 1))
        self.load_adjacency_matrix(args.A_init_path)

    def load_adjacency_matrix(self, fname):
        A = sp.load_npz(fname).tocsr()
        parent = np.asarray(A.argmax(axis=0)).ravel()
        self.register_buffer("parent", torch.as_tensor(np.concatenate([parent, [self.C]]), dtype=torch.long))
        nz = csr_to_pad_tensor(A, self.numy)
        self.register_buffer("A_nz_inds", nz["inds"])
        self.register_buffer("A_nz_vals", nz["vals"])

    def encode(self, b):
        return self.enc(b["xfts"]["input_ids"] % HASH)

    def get_cluster_shortlist(self, cluster_scores, b=None):
        vals, inds = torch.topk(cluster_scores, self.beam_size, dim=1)
        if self.training:
            # Teacher forcing: the clusters of every stored label join the shortlist.
            forced = self.parent[b["y"]["inds"]]
            inds = torch.hstack((forced, inds))
            srt, order = inds.sort(dim=1)
            dup = torch.zeros_like(srt, dtype=torch.bool)
            dup[:, 1:] = srt[:, 1:] == srt[:, :-1]
            dup = dup | (srt == self.C)
            srt[dup] = torch.randint(0, self.C, (int(dup.sum()),))
            inds = srt.gather(1, order.argsort(dim=1))
            vals = cluster_scores.gather(1, inds)
            if inds.shape[1] > self.max_num_trn_clusters:
                pick = torch.multinomial(vals + 1e-6, self.max_num_trn_clusters, replacement=False)
                inds, vals = inds.gather(1, pick), vals.gather(1, pick)
        return inds, vals

    def forward(self, b):
        b = ToD(b, self.WC.weight.device)
        embs = self.encode(b)
        cluster_scores = torch.clamp(self.alpha * F.softmax(self.WC(embs), dim=1), min=0, max=1)
        c_inds, c_vals = self.get_cluster_shortlist(cluster_scores, b)
        n = c_inds.shape[0]
        sl_inds = self.A_nz_inds[c_inds].reshape(n, -1)
        sl_vals = (c_vals.unsqueeze(2) * self.A_nz_vals[c_inds]).reshape(n, -1)
        top_vals, pos = sl_vals.topk(min(self.K, sl_vals.shape[1]))
        top_inds = sl_inds.gather(1, pos)
        wl = torch.sigmoid((self.WL(top_inds) * embs.unsqueeze(1)).sum(-1) + self.WL_bias[top_inds])
        top_vals = top_vals * wl
        if self.training:
            return top_vals, top_inds, sl_vals, sl_inds
        return top_vals, top_inds

    def predict(self, data_source, K=100, bsz=256, accelerator=None):
        self.eval()
        n, rows = len(data_source.dataset), []
        with torch.no_grad():
            for b in data_source:
                vals, inds = self(b)
                k = min(K, vals.shape[1])
                v, p = vals.topk(k)
                rows.append((b["ids"].numpy(), inds.gather(1, p).numpy(), v.numpy()))
        r = np.concatenate([np.repeat(ids, i.shape[1]) for ids, i, _ in rows])
        c = np.concatenate([i.ravel() for _, i, _ in rows])
        v = np.concatenate([x.ravel() for _, _, x in rows])
        keep = c < self.numy
        return sp.csr_matrix((v[keep], (r[keep], c[keep])), shape=(n, self.numy))

    def update_non_parameters(self, *args, **kwargs):
        pass

    def save(self, path):
        torch.save(self.state_dict(), path)

    def load(self, path):
        return self.load_state_dict(torch.load(path, map_location="cpu"))


NETS = {
    "elias-1": ELIAS1,
}
