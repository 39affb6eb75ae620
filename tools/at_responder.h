#ifndef AT_RESPONDER_H
#define AT_RESPONDER_H
#endif
