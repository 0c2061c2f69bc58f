// Stand-in (lever-xreg tests): names the adapter's contract checks. Not XReg code.
#include "Param.h"
void train_leaf_classifiers() {}
void wt_partition_to_assign_mat() {}
struct XregPredict { float getNewScore(float prod); };
float XregPredict::getNewScore(float prod) { return prod; }
