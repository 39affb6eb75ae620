#ifndef AT_FAKE_CA_H
#define AT_FAKE_CA_H
#endif
