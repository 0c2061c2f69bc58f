"""Stand-in xreg_train MODEL_DIR X_FILE Y_FILE [-flag value]...: soft nearest-centroid model."""

import json
import os
import sys

import numpy as np
from common import crash, model_folder, options, read_matrix, unit_rows

model, x_file, y_file = sys.argv[1:4]
model_folder(model)
opts = options(sys.argv[4:])
x, y = unit_rows(read_matrix(x_file)), read_matrix(y_file)
if int(opts.get("-m", 20)) >= 2 * y.shape[1]:
    crash("tree depth 0")
centroids = unit_rows(y.T @ x)  # label j: target-weighted sum of its rows
np.save(os.path.join(model, "centroids.npy"), centroids)
with open(os.path.join(model, "argv.json"), "w") as fh:
    json.dump({"argv": sys.argv[1:], "omp_thread_limit": os.environ.get("OMP_THREAD_LIMIT")}, fh)
print(f"trained {centroids.shape[0]} labels on {x.shape[0]} rows")
