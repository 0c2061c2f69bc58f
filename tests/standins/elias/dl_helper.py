"""Stand-in of ELIAS's dl_helper: padded label tensors, device moves."""

import torch


def unwrap(net):
    """The model inside a DistributedDataParallel wrapper (accelerate.prepare under several processes)."""
    return net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net


def ToD(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: ToD(v, device) for k, v in batch.items()}
    return batch


def csr_to_pad_tensor(spmat, pad):
    rows = [
        (spmat.indices[spmat.indptr[i] : spmat.indptr[i + 1]], spmat.data[spmat.indptr[i] : spmat.indptr[i + 1]])
        for i in range(spmat.shape[0])
    ]
    width = max([len(r[0]) for r in rows] + [1])
    inds = torch.full((len(rows), width), pad, dtype=torch.long)
    vals = torch.zeros((len(rows), width))
    for i, (ix, v) in enumerate(rows):
        inds[i, : len(ix)] = torch.as_tensor(ix, dtype=torch.long)
        vals[i, : len(v)] = torch.as_tensor(v, dtype=torch.float32)
    return {"inds": inds, "vals": vals}
