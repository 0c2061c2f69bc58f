"""Stand-in of ELIAS's resources: YAML configs with __dependency__ chains, propensity, filter files."""

import argparse
import os

import numpy as np
import scipy.sparse as sp
import yaml


def load_yaml(fname):
    d = yaml.safe_load(open(fname)) or {}
    chain = []
    for dep in str(d.get("__dependency__", "")).split(","):
        dep = dep.strip()
        if dep:
            chain += load_yaml(dep if os.path.isabs(dep) else os.path.join(os.getcwd(), dep))
    chain.append(d)
    return chain


def load_config_and_runtime_args(argv, **extra_args):
    dash = [i for i, a in enumerate(argv[1:]) if a.startswith("-")]
    files = argv[1 : 1 + dash[0]] if dash else argv[1:]
    rest = argv[1 + len(files) :]
    config = {}
    for f in files:
        for d in load_yaml(f):
            config.update(d)
    config.update(extra_args)
    parser = argparse.ArgumentParser()
    for k, v in config.items():
        kind = (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(v, bool) else type(v)
        parser.add_argument(f"--{k}", default=v, type=kind)
    return parser.parse_args(rest)


def get_inv_prop(X_Y, dataset_name):
    a, b = (0.6, 2.6) if "amazon" in dataset_name.lower() else (0.55, 1.5)
    n = X_Y.shape[0]
    freq = np.asarray(X_Y.sum(axis=0)).ravel()  # column sums of the stored values, as pyxclib does
    c = (np.log(n) - 1) * (b + 1) ** a
    return 1.0 + c * (freq + b) ** (-a)


def load_filter_mat(fname, shape):
    if not os.path.exists(fname):
        return None
    pairs = np.loadtxt(fname, dtype=np.int64, ndmin=2)
    return sp.csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=shape)


def precision_at_1(score_mat, X_Y):
    top = np.asarray(score_mat.argmax(axis=1)).ravel()
    has = np.asarray(score_mat.getnnz(axis=1)).ravel() > 0
    hits = np.asarray((X_Y != 0)[np.arange(X_Y.shape[0]), top]).ravel() & has
    return 100.0 * hits.mean()
