#include "at_test.h"
static const at_test_case cases[] = { AT_CASE_END };
int main(int argc, char **argv) { return at_test_main(argc, argv, cases); }
