#ifndef AT_ACME_INT_H
#define AT_ACME_INT_H
#include "at_acme.h"
#endif
