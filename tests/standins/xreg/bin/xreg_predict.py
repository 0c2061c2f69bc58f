"""Stand-in xreg_predict MODEL_DIR SCORE_FILE X_FILE [-flag value]...: top 100 cosines per row."""

import os
import sys

import numpy as np
from common import crash, model_folder, options, read_matrix, unit_rows

model, score_file, x_file = sys.argv[1:4]
model_folder(model)
options(sys.argv[4:])
x = unit_rows(read_matrix(x_file))
if x.shape[0] < 6:
    crash("reads row 5 of the score matrix")
c = np.load(os.path.join(model, "centroids.npy"))
s = x @ c.T
with open(score_file, "w") as fh:
    fh.write(f"{s.shape[0]} {s.shape[1]}\n")
    for row in s:
        top = sorted(np.argsort(-row, kind="stable")[:100])
        fh.write(" ".join(f"{j}:{row[j]:.6g}" for j in top if row[j] > 0) + "\n")
print(f"predicted {s.shape[0]} rows")
