// Stand-in (lever-xreg tests). Not XReg code.
int main() { return 0; }
