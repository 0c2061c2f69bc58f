"""Test stand-in for Renée's ``dl_base`` (NOT Renée's code): written for lever-plugins' tests from the
facts in shared/notes/upstream-renee.md, with the module, class and method names and the signatures the
renee adapter checks and patches, and the behaviour it relies on:

- ``XCCollator.__call__`` returns ``z`` (row, label) of ``labels[batch].tocoo()`` WITHOUT the values, and
  chunk offsets ``i`` for ``accum > 1`` (row ids of ``z`` made local to each chunk);
- ``BCELossMultiNode.xfc_backward`` does the classifier's backward by hand and subtracts 1.0 at every
  stored entry (binary targets), the loss value only every ``LOSS_SAMPLE_FREQ`` steps;
- ``--default-impl`` passes the stored values through ``csr_to_pad_tensor`` to ``default_loss``;
- ``FullPredictor`` clamps predictions of padded labels to ``numy - 1``; ``PrecEvaluator`` saves
  ``<name>_score_mat.npz`` (top 100 at the last epoch).

CPU only, one process per "GPU", no AMP. ``GenericModel.fit`` also records, for the tests, the target
values its loss really used (``t = σ(x) − grad`` at the positives) in ``self.probe``.
"""

import os

import numpy as np
import torch
import torch.nn as nn
import xclib.evaluation.xc_metrics as xc_metrics  # noqa: F401  (Renée's dl_base exports it to main.py)
from scipy.sparse import csr_matrix, save_npz

LOSS_SAMPLE_FREQ = 100


def csr_to_pad_tensor(spmat, pad):
    width = max(int(spmat.getnnz(1).max()), 1) if spmat.shape[0] else 1
    inds = torch.full((spmat.shape[0], width), pad, dtype=torch.long)
    vals = torch.zeros(spmat.shape[0], width)
    for r in range(spmat.shape[0]):
        a, b = spmat.indptr[r], spmat.indptr[r + 1]
        inds[r, : b - a] = torch.from_numpy(spmat.indices[a:b].astype(np.int64))
        vals[r, : b - a] = torch.from_numpy(spmat.data[a:b].astype(np.float32))
    return {"inds": inds, "vals": vals}


class BagEncoder(nn.Module):
    """Mean of token embeddings under the attention mask (a transformer's stand-in)."""

    def __init__(self, dim, vocab=4096):
        super().__init__()
        self.vocab = vocab
        self.emb = nn.Embedding(vocab, dim)

    def forward(self, data):
        ids = data["input_ids"] % self.vocab
        mask = data["attention_mask"].unsqueeze(-1).float()
        return (self.emb(ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class GenericModel(nn.Module):
    def __init__(self, rank, args, numy, numy_per_gpu, per_gpu_batch_size, modules=None, device=None,
                 name="generic_model", out_dir=None):
        super().__init__()
        self.embed = nn.Sequential(*(modules or []))
        self.rank = rank
        self.world_size = args.world_size
        # upstream: a CUDA GradScaler, enabled unless --fp32encoder, initial scale 2**12 with --fp16xfc.
        # This stand-in's fit has no scaler step (no unscaling), so it is on only with --fp16xfc.
        self.scaler = torch.amp.GradScaler("cpu", enabled=args.fp16xfc and not args.fp32encoder,
                                           init_scale=2.0**12 if args.fp16xfc else 2.0**16)
        self.numy = numy
        self.numy_per_gpu = numy_per_gpu
        self.padded_numy = numy_per_gpu * args.world_size
        self.xfc_batch_size = per_gpu_batch_size * args.world_size // args.accum
        self.fp16xfc = args.fp16xfc
        self.accum = args.accum
        self.compute_loss = not args.noloss
        self.custom_cuda = args.custom_cuda
        self.default_impl = args.default_impl
        self.default_loss = nn.BCEWithLogitsLoss(reduction="sum")
        self.count = 0
        half = torch.float16 if args.fp16xfc else torch.float32  # logits buffer and the GEMMs' dtype
        self.outsoft = torch.empty(per_gpu_batch_size * args.world_size, numy_per_gpu, dtype=half)
        self.grad_input = torch.empty(per_gpu_batch_size * args.world_size, args.bottleneck_dims)  # always fp32
        self.dummy = torch.zeros(1, dtype=half)
        self.xfc_weight = nn.Parameter(torch.randn(numy_per_gpu, args.bottleneck_dims) * 0.02)
        self._target_device = torch.device(device or "cpu")
        self.name = name
        self.out_dir = out_dir
        self.probe = {"target_sum": [], "loss": []}
        os.makedirs(out_dir, exist_ok=True)

    def fit(self, dataloader, loss_model, xfc_optimizer_class, xfc_optimizer_params, tf_optimizer_class,
            tf_optimizer_params, epochs=1, evaluator=None, evaluation_epochs=5):
        xfc = xfc_optimizer_class([self.xfc_weight], **xfc_optimizer_params)
        tf = tf_optimizer_class(list(self.embed.parameters()), **tf_optimizer_params)
        self.epochs = epochs
        for epoch in range(epochs):
            seen, losses = 0.0, []
            for batch_data in dataloader:
                bsz = batch_data["batch_size"]
                if self.default_impl:
                    embed_out = loss_model.gather_embed(loss_model(batch_data), batch_data)
                    out = loss_model.xfc_forward(embed_out)
                    yfull = torch.zeros(bsz, self.numy_per_gpu + 1).scatter_(
                        1, batch_data["y"]["inds"], batch_data["y"]["vals"])[:, :-1]
                    loss = self.default_loss(out, yfull)
                    loss.backward()
                    xfc.step(), tf.step(), xfc.zero_grad(), tf.zero_grad()
                    seen += float(yfull.sum())
                    losses.append(float(loss))
                    continue
                embed = loss_model(batch_data)
                with torch.no_grad():
                    embed_out = loss_model.gather_embed(embed, batch_data)
                    z, index = batch_data["z"], batch_data["i"]
                    chunks = [(0, bsz, 0, z.shape[1])] if self.accum == 1 else [
                        (s, min(s + self.xfc_batch_size, bsz), int(index[k]), int(index[k + 1]))
                        for k, s in enumerate(range(0, bsz, self.xfc_batch_size))]
                    loss = 0.0
                    for s, e, a, b in chunks:
                        out = self.outsoft[: e - s]
                        loss_model.xfc_forward(embed_out[s:e], out)
                        px, py = z[0, a:b], z[1, a:b]
                        before = torch.sigmoid(out[px, py])
                        loss += float(loss_model.xfc_backward(embed_out[s:e], out, px, py, self.grad_input[s:e], False))
                        seen += float((before - out[px, py]).sum())  # the targets the gradient used
                    xfc.step()
                    self.xfc_weight.grad = None
                embed.backward(self.grad_input[:bsz])
                if self.compute_loss and self.count % LOSS_SAMPLE_FREQ == 0:
                    losses.append(loss)
                self.count += 1
                tf.step()
                tf.zero_grad()
            self.probe["target_sum"].append(seen)
            self.probe["loss"].append(float(np.mean(losses)) if losses else None)
            if evaluator is not None and ((epoch + 1) % evaluation_epochs == 0 or epoch == epochs - 1):
                evaluator(loss_model, epoch, 0.0, self.out_dir, self.name)


class BCELossMultiNodeDefault(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch_data):
        return self.model.embed(batch_data["xfts"])

    def gather_embed(self, embed, batch_data):
        return embed

    def xfc_forward(self, embed):
        return embed @ self.model.xfc_weight.t()


class BCELossMultiNode(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.loss = torch.tensor(0.0)

    def forward(self, batch_data):
        return self.model.embed(batch_data["xfts"])

    def gather_embed(self, embed, batch_data):
        # --fp16xfc: the embeddings and a copy of the classifier weights go to fp16 once per batch
        if self.model.fp16xfc:
            self.xfc_weight = self.model.xfc_weight.to(torch.float16)
            return embed.to(torch.float16)
        self.xfc_weight = self.model.xfc_weight
        return embed

    def xfc_forward(self, embed, out):
        torch.matmul(embed, self.xfc_weight.t(), out=out)

    def xfc_backward(self, embed_out, out, pos_x, pos_y, grad_input, use_custom):
        """Facts of the upstream path: loss sums accumulate in fp32 from out's dtype; σ(x) − 1 in place in
        out's dtype; the AMP scale is the alpha of the input-gradient GEMM (fp16 with --fp16xfc, then
        cast to the fp32 buffer; else written straight into it); the weight gradient is the GEMM's result
        cast to fp32 on the first chunk, then accumulated into the same tensor (fp16 product added
        with --fp16xfc, an in-place addmm otherwise)."""
        model = self.model
        if model.compute_loss and model.count % LOSS_SAMPLE_FREQ == 0:
            self.loss = out.clamp(min=0.0).sum(dtype=torch.float32) - out[pos_x, pos_y].sum(dtype=torch.float32)
            self.loss += torch.nn.functional.softplus(-out.float().abs()).sum()
        torch.sigmoid(out, out=out)
        out[pos_x, pos_y] -= 1.0  # binary targets: every stored entry counts as 1
        if model.xfc_weight.grad is None:
            model.scaler.scale(self.loss)
            self.scale_bwd = model.scaler.get_scale()
        if model.fp16xfc:
            grad_input.copy_(torch.addmm(model.dummy, out, self.xfc_weight, beta=0, alpha=self.scale_bwd).float())
        else:
            torch.addmm(model.dummy, out, self.xfc_weight, beta=0, alpha=self.scale_bwd, out=grad_input)
        if model.xfc_weight.grad is None:
            model.xfc_weight.grad = out.t().mm(embed_out).to(torch.float32)
        elif model.fp16xfc:
            model.xfc_weight.grad += (out.t() @ embed_out).float()
        else:
            torch.addmm(model.xfc_weight.grad, out.t(), embed_out, beta=1, alpha=1, out=model.xfc_weight.grad)
        return self.loss


class FullPredictor:
    def __init__(self, K=5):
        self.K = K

    def __call__(self, loss_model, model, dataloader):
        n = len(dataloader.dataset)
        data, inds = np.zeros((n, self.K)), np.zeros((n, self.K), dtype=np.int32)
        ctr = 0
        with torch.no_grad():
            for batch_data in dataloader:
                embed = loss_model.gather_embed(model.embed(batch_data["xfts"]), batch_data)
                out = embed @ model.xfc_weight.t()
                top, idx = torch.topk(out, self.K)
                idx[idx >= model.numy] = model.numy - 1  # padded labels
                data[ctr : ctr + len(top)], inds[ctr : ctr + len(top)] = top.numpy(), idx.numpy()
                ctr += len(top)
        return csr_matrix((data.ravel(), inds.ravel(), np.arange(0, n * self.K + 1, self.K)), (n, model.numy))


class PrecEvaluator:
    def __init__(self, model, dataloader, predictor, filter_mat=None, K=5, metric="P", inv_prop=-1):
        self.model, self.dataloader, self.predictor = model, dataloader, predictor
        self.filter_mat, self.inv_prop, self.K = filter_mat, inv_prop, K

    def __call__(self, loss_model, epoch=-1, loss=-1.0, out_dir=None, name=""):
        self.predictor.K = 100 if epoch < 0 or epoch == self.model.epochs - 1 else 5
        score_mat = self.predictor(loss_model, self.model, self.dataloader)
        if out_dir is not None:
            save_npz(f"{out_dir}/{name}_score_mat.npz", score_mat)
        return 0.0


class PreTokBertDataset(torch.utils.data.Dataset):
    def __init__(self, tokenization_folder, X_Y, num_points, max_len, doc_type="trn", iter_mode="pointwise"):
        self.tokenization_folder, self.labels = tokenization_folder, X_Y
        self.num_points, self.max_len, self.doc_type = num_points, max_len, doc_type
        self.start = True

    def __getitem__(self, index):
        return index

    def get_fts(self, indices, source="point"):
        if self.start:
            self.start = False
            shape = (self.num_points, self.max_len)
            folder, kind = self.tokenization_folder, self.doc_type
            self.X_ii = np.memmap(f"{folder}/{kind}_doc_input_ids.dat", mode="r", shape=shape, dtype=np.int64)
            self.X_am = np.memmap(f"{folder}/{kind}_doc_attention_mask.dat", mode="r", shape=shape, dtype=np.int64)
        ids, mask = self.X_ii[indices], self.X_am[indices]
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

    def __len__(self):
        return self.num_points


class XCCollator:
    def __init__(self, padded_numy, dataset, my_rank, world_size, accum, xfcz, train, yfull):
        self.numy, self.dataset, self.rank, self.world_size = padded_numy, dataset, my_rank, world_size
        self.accum, self.xfcz, self.test, self.yfull = accum, xfcz, not train, yfull

    def __call__(self, batch):
        ids = np.array(batch)
        if self.test:
            return {"batch_size": len(ids), "numy": self.numy, "xfts": self.dataset.get_fts(ids, "point")}
        coo = self.dataset.labels[ids].tocoo()
        z = torch.LongTensor(np.stack((coo.row, coo.col)))
        index = None
        if self.accum > 1:
            starts = list(range(0, len(ids), self.xfcz))
            index = torch.zeros(len(starts) + 1, dtype=torch.long)
            for k, s in enumerate(starts):
                index[k + 1] = index[k] + self.dataset.labels[ids[s : s + self.xfcz]].nnz
                z[0, index[k] : index[k + 1]] -= s
        out = {"batch_size": len(ids), "numy": self.numy, "z": z, "i": index, "y": None, "yfull": None,
               "xfts": self.dataset.get_fts(ids, "point")}
        if self.yfull:
            out["y"] = csr_to_pad_tensor(self.dataset.labels[ids], self.numy // self.world_size)
        return out
