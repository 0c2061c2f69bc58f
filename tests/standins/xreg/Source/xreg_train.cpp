// Stand-in (lever-xreg tests). Not XReg code.
void check_valid_foldername(const char* name);
int main(int argc, char* argv[]) { check_valid_foldername(argv[1]); return 0; }
