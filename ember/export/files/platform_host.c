/* The platform on a hosted C99 system: stdio, no instruction counter. */
#include <stdio.h>
#include "platform.h"

void ember_platform_write(const char *text) { fputs(text, stdout); }

int ember_platform_read_input(int argc, char **argv, void *const *bufs, const size_t *sizes,
                              int count)
{
    FILE *f;
    int k, ok = 1;
    if (argc < 2) {
        fputs("usage: model INPUT.bin\n", stderr);
        return 1;
    }
    f = fopen(argv[1], "rb");
    if (!f) {
        fputs("cannot open the input file\n", stderr);
        return 1;
    }
    for (k = 0; k < count; ++k) ok = ok && fread(bufs[k], 1, sizes[k], f) == sizes[k];
    ok = ok && fgetc(f) == EOF;
    fclose(f);
    if (!ok) {
        fputs("the input file does not hold exactly the model's input bytes\n", stderr);
        return 1;
    }
    return 0;
}

void ember_platform_count_start(void) { }

int ember_platform_count_stop(uint64_t *instructions)
{
    *instructions = 0;
    return 0;
}

void ember_platform_format_float(char *out, double value, int digits)
{
    sprintf(out, "%.*g", digits, value);
}
