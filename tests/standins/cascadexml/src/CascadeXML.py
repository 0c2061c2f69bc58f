"""Stand-in model: one classifier per tree level on [CLS] states of chosen layers; each level scores the
children of the previous level's top clusters (training adds the previous level's labels first)."""

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import BertConfig, BertModel


def get_bert(bert_name):
    config = BertConfig.from_pretrained("bert-base-uncased")
    config.output_hidden_states = True
    return BertModel.from_pretrained("bert-base-uncased", config=config)


def cls_features(layers, hidden):
    out = []
    for spec in layers:
        if isinstance(spec, int):
            out.append(hidden[spec][:, 0])
        else:
            out.append(torch.cat([hidden[k][:, 0] for k in spec], dim=1))
    return out


class CascadeXML(nn.Module):
    def __init__(self, params, train_ds, device):
        super().__init__()
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.candidates_topk = list(params.topk)
        self.device = device
        self.rw_loss = params.rw_loss
        n_labels = params.num_labels
        groups = [list(g) for g in train_ds.groups]
        self.num_ele = [len(g) for g in groups] + [n_labels]
        width = max(len(c) for c in groups[-1])
        groups[-1] = [np.pad(np.asarray(c), (0, width - len(c)), constant_values=n_labels) for c in groups[-1]]
        stacked = [np.stack([np.asarray(c, dtype=np.int64) for c in g]) for g in groups]
        self.clusters = [torch.LongTensor(c).to(device) for c in stacked]
        self.layers = [(5, 6), 8, 10, 12] if len(self.num_ele) == 4 else [(7, 8), 10, 12]
        self.bert = get_bert(params.bert)
        h = self.bert.config.hidden_size
        self.Cn_hidden = nn.Sequential(nn.Dropout(0.2), nn.Linear(len(self.layers[0]) * h, h))
        self.embed_drops = nn.ModuleList([nn.Dropout(p) for p in params.embed_drops])
        self.Cn = nn.ModuleList([nn.Embedding(n, h) for n in self.num_ele[:-1]])
        self.Cn.append(nn.Embedding(n_labels + 1, h, padding_idx=-1))
        self.Cn_bias = nn.ModuleList([nn.Embedding(n, 1) for n in self.num_ele[:-1]])
        self.Cn_bias.append(nn.Embedding(n_labels + 1, 1, padding_idx=-1))
        for table in self.Cn:
            nn.init.xavier_uniform_(table.weight)
        with torch.no_grad():
            self.Cn[-1].weight[-1].fill_(0)
        for table in self.Cn_bias:
            nn.init.zeros_(table.weight)

    def get_candidates(self, group_scores, prev_cands, level, group_gd=None):
        forced = group_scores + group_gd if group_gd is not None else group_scores
        _, top = torch.topk(forced, k=self.candidates_topk[level - 1])
        rows = torch.arange(top.shape[0], device=top.device)[:, None]
        scores = group_scores[rows, top]
        parents = prev_cands[rows, top]
        children = self.clusters[level - 1][parents]
        return parents, children.flatten(1), (torch.ones_like(children) * scores[..., None]).flatten(1)

    def forward(self, input_ids, attention_mask, epoch=None, all_labels=None, return_out=False):
        training = all_labels is not None
        types = torch.zeros_like(attention_mask)
        hidden = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=types)[-1]
        if return_out:
            return hidden[-1][:, 0].detach().cpu()
        feats = cls_features(self.layers, hidden)
        n, last = input_ids.shape[0], len(self.Cn) - 1
        probs, cands_all, weighted, losses = [], [], [], []
        prev_scores = prev_cands = prev_labels = None
        for i, (embed, feat) in enumerate(zip(self.Cn, feats, strict=True)):
            if i == 0:
                feat = self.Cn_hidden(feat)
                cands = torch.arange(embed.num_embeddings, device=input_ids.device)[None].expand(n, -1)
                parent_scores = None
            else:
                _, cands, parent_scores = self.get_candidates(prev_scores, prev_cands, i, prev_labels)
            feat = self.embed_drops[i](feat)
            if i == last:  # drop the padding ids, re-pad every row to the widest
                keep = [cands[b] != self.num_ele[i] for b in range(n)]
                cands = pad_sequence([cands[b][keep[b]] for b in range(n)], True, self.num_ele[i])
                parent_scores = pad_sequence([parent_scores[b][keep[b]] for b in range(n)], True, 0.0)
            logits = torch.bmm(embed(cands), feat.unsqueeze(-1)).squeeze(-1) + self.Cn_bias[i](cands).squeeze(-1)
            p = torch.sigmoid(logits)
            if i == last:
                p = torch.where(cands == self.num_ele[i], torch.zeros_like(p), p)
            probs.append(p)
            cands_all.append(cands)
            weighted.append(p if i == 0 else p * parent_scores)
            if training:
                target = torch.zeros_like(logits)
                for b in range(n):
                    ext = all_labels[i][b].to(cands.device)
                    target[b] = (cands[b][:, None] == ext[None, :]).any(-1).float()
                losses.append(self.loss_fn(logits, target))
                prev_labels = target
            prev_scores, prev_cands = p.detach(), cands
        if training:
            total = 0.0
            for i, loss in enumerate(losses):
                total = total + loss * self.rw_loss[i]
            return probs, cands_all, total
        return probs, cands_all, weighted
