/* Compile test: the public header is valid, warning-free C11. */
#include "streampool.h"
int sp_header_c11_compiles(void);
int sp_header_c11_compiles(void) { return (int)SP_OK; }
