// Stand-in (lever-xreg tests). Not XReg code.
#pragma once
