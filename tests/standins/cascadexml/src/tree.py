"""Stand-in label tree: a pickled ``__dict__`` whose ``hash_map_array[d].clusters`` lists label ids per cluster."""

import pickle


class build_tree:
    def __init__(self, b_factors=(2,), M=1, leaf_size=0, force_shallow=True):
        self.b_factors = list(b_factors)
        self.leaf_size = leaf_size
        self.hash_map_array = []

    def load(self, fname):
        with open(fname, "rb") as fh:
            self.__dict__ = pickle.load(fh)

    def _get_cluster_depth(self, depth):
        return self.hash_map_array[depth].clusters
