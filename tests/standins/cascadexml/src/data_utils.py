"""Stand-in data loading: token-id pickles, label CSRs, TF-IDF and cached inverse propensities."""

import os
import pickle

import numpy as np
import scipy.sparse as sp

A = {"Wiki10-31K": 0.55}
B = {"Wiki10-31K": 1.5}


def get_inv_prop(dataset, Y):
    path = os.path.join(dataset, "inv_prop.npy")
    if os.path.exists(path):
        return np.load(path)
    name = dataset.split("/")[-1]
    a, b = A[name], B[name]  # KeyError for other names, as upstream
    n = np.asarray(Y.sum(axis=0)).ravel()
    c = (np.log(Y.shape[0]) - 1) * np.power(b + 1, a)
    return 1 + c * np.power(n + b, -a)


def load_data(dataset, model, num_labels, LF_data):
    with open(f"{dataset}/{model}/train_encoded.pkl", "rb") as fh:
        train_texts = pickle.load(fh)
    with open(f"{dataset}/{model}/test_encoded.pkl", "rb") as fh:
        test_texts = pickle.load(fh)
    train_labels = sp.load_npz(f"{dataset}/Y.trn.npz")
    test_labels = sp.load_npz(f"{dataset}/Y.tst.npz")
    tfidf = sp.load_npz(f"{dataset}/tfidf.npz")
    return train_texts, test_texts, train_labels, test_labels, tfidf, get_inv_prop(dataset, train_labels)
