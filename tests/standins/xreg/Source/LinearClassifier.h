// Stand-in (lever-xreg tests): names the adapter's contract checks. Not XReg code.
#pragma once
// A target value val in (0, 1) becomes a positive copy of weight val and a negative of weight (1 - val).
inline void prepareWtMat(float val, float* pos, float* neg) { *pos = val; *neg = (1 - val); }
