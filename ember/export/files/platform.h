/* What main.c needs from the board: console, the input bytes, an instruction counter. */
#ifndef EMBER_PLATFORM_H
#define EMBER_PLATFORM_H
#include <stddef.h>
#include <stdint.h>

void ember_platform_write(const char *text);
/* Reads the input file (named by argv[1], or on a semihosted board by QEMU's semihosting
 * command line): its bytes fill bufs[0] (sizes[0] bytes), then bufs[1] ... Returns 0 when the
 * file held exactly that many bytes; otherwise prints why not and returns 1. */
int ember_platform_read_input(int argc, char **argv, void *const *bufs, const size_t *sizes,
                              int count);
void ember_platform_count_start(void);
/* Instructions since ember_platform_count_start(); 0 when the platform cannot count. */
int ember_platform_count_stop(uint64_t *instructions);
/* `value` as printf's %.<digits>g (digits <= 17). */
void ember_platform_format_float(char *out, double value, int digits);
#endif
