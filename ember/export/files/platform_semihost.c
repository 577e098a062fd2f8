/* The platform on a bare-metal Arm Cortex-M or RISC-V board under QEMU: semihosting for the
 * console, the input file and exit; SysTick (Arm) or minstret (RISC-V) counts instructions
 * when QEMU runs with -icount. Also the memcpy, memmove and memset the compiler may call: the
 * project links no C library. Build this file with -fno-tree-loop-distribute-patterns, so
 * those loops do not become calls to themselves. */
#include "platform.h"
#include "semihost.h"

void *memcpy(void *restrict dst, const void *restrict src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--) *d++ = *s++;
    return dst;
}

/* GCC may turn a copy loop whose ends it cannot tell apart into a call to memmove */
void *memmove(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if ((uintptr_t)d < (uintptr_t)s) {
        while (n--) *d++ = *s++;
    } else {
        d += n;
        s += n;
        while (n--) *--d = *--s;
    }
    return dst;
}

void *memset(void *dst, int c, size_t n)
{
    unsigned char *d = dst;
    while (n--) *d++ = (unsigned char)c;
    return dst;
}

void sh_exit(long code)
{
    const long args[2] = { 0x20026 /* ADP_Stopped_ApplicationExit */, code };
    sh_call(SH_SYS_EXIT_EXTENDED, args);
    for (;;) { }
}

void ember_platform_write(const char *text) { sh_call(SH_SYS_WRITE0, text); }

static size_t length(const char *s)
{
    size_t n = 0;
    while (s[n]) ++n;
    return n;
}

int ember_platform_read_input(int argc, char **argv, void *const *bufs, const size_t *sizes,
                              int count)
{
    /* The command line is "PROGRAM INPUT" (QEMU -semihosting-config ...,arg=P,arg=INPUT). */
    static char line[256];
    long args[3] = { (long)line, (long)sizeof line - 1, 0 };
    char *name = line;
    long handle, total = 0;
    int k, ok = 1;
    (void)argc; (void)argv;
    if (sh_call(SH_SYS_GET_CMDLINE, args) != 0) {
        ember_platform_write("no semihosting command line\n");
        return 1;
    }
    line[args[1] < (long)sizeof line ? args[1] : (long)sizeof line - 1] = 0;
    while (*name && *name != ' ') ++name;       /* skip the program name */
    while (*name == ' ') ++name;
    args[0] = (long)name; args[1] = 1 /* "rb" */; args[2] = (long)length(name);
    handle = *name ? sh_call(SH_SYS_OPEN, args) : -1;
    if (handle == -1) {
        ember_platform_write("cannot open the input file (none on the command line?)\n");
        return 1;
    }
    for (k = 0; k < count; ++k) total += (long)sizes[k];
    args[0] = handle;
    ok = sh_call(SH_SYS_FLEN, args) == total;
    for (k = 0; ok && k < count; ++k) {
        args[0] = handle; args[1] = (long)bufs[k]; args[2] = (long)sizes[k];
        ok = sh_call(SH_SYS_READ, args) == 0;       /* returns the bytes not read */
    }
    args[0] = handle;
    sh_call(SH_SYS_CLOSE, args);
    if (!ok) {
        ember_platform_write("the input file does not hold exactly the model's input bytes\n");
        return 1;
    }
    return 0;
}

#if defined(__arm__)
/* SysTick on the processor clock. With `-icount shift=S` each instruction advances virtual
 * time by 2^S ns, so ticks = instructions * 2^S * HZ / 1e9 exactly; wraps of the 24-bit
 * counter are counted by SysTick_Handler (startup.c). */
#ifndef EMBER_ICOUNT_SHIFT
#define EMBER_ICOUNT_SHIFT 6
#endif
#ifndef EMBER_SYSTICK_MHZ
#define EMBER_SYSTICK_MHZ 25
#endif
#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)
extern volatile uint32_t ember_systick_wraps;
static uint64_t count_start;

static uint64_t ticks_now(void)
{
    uint32_t w, v;
    do { w = ember_systick_wraps; v = SYST_CVR; } while (w != ember_systick_wraps);
    return (uint64_t)w * 0x01000000u + (0x00FFFFFFu - v);
}

void ember_platform_count_start(void)
{
    SYST_CSR = 0;
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 7;                       /* enable, interrupt, processor clock */
    while (SYST_CVR == 0) { }           /* the first reload comes with the first tick */
    count_start = ticks_now();
}

int ember_platform_count_stop(uint64_t *instructions)
{
    const uint64_t ticks = ticks_now() - count_start;
    *instructions = ticks * 1000u / ((uint64_t)EMBER_SYSTICK_MHZ << EMBER_ICOUNT_SHIFT);
    return 1;
}
#else
/* minstret is the exact retired-instruction count under QEMU -icount. */
static uint64_t instret(void)
{
#if __riscv_xlen == 32
    uint32_t hi, lo, hi2;
    do {
        __asm__ volatile("csrr %0, minstreth" : "=r"(hi));
        __asm__ volatile("csrr %0, minstret" : "=r"(lo));
        __asm__ volatile("csrr %0, minstreth" : "=r"(hi2));
    } while (hi != hi2);
    return (uint64_t)hi << 32 | lo;
#else
    uint64_t v;
    __asm__ volatile("csrr %0, minstret" : "=r"(v));
    return v;
#endif
}
static uint64_t count_start;

void ember_platform_count_start(void) { count_start = instret(); }

int ember_platform_count_stop(uint64_t *instructions)
{
    *instructions = instret() - count_start;
    return 1;
}
#endif

static char *put_uint(char *p, uint64_t u, int min_digits)
{
    char digits[20];
    int n = 0;
    do { digits[n++] = (char)('0' + u % 10u); u /= 10u; } while (u || n < min_digits);
    while (n) *p++ = digits[--n];
    return p;
}

/* printf's %.<digits>g, computed in double: correctly rounded except for values within about
 * 1e-14 (relative) of a rounding tie, where the scaling's rounding errors may tip it. Only
 * models with floating-point outputs link it (--gc-sections drops it otherwise). */
void ember_platform_format_float(char *out, double value, int digits)
{
    uint64_t bits, m = 0, limit = 1;
    double scaled = 0.0;
    int e = 0, k, point, last;
    char mant[20];
    memcpy(&bits, &value, sizeof bits);
    if (bits >> 63) *out++ = '-';
    if (value != value) { memcpy(out, "nan", 4); return; }
    if (value < 0) value = -value;
    if (value > 1.79769313486231570e308) { memcpy(out, "inf", 4); return; }
    if (value == 0.0) { memcpy(out, "0", 2); return; }
    for (k = 1; k < digits; ++k) limit *= 10u;        /* 10^(digits-1) <= m < 10^digits */
    while (value >= 10.0) { value /= 10.0; ++e; }     /* 1 <= value < 10 */
    while (value < 1.0) { value *= 10.0; --e; }
    for (;;) {                       /* m = round(value * 10^(digits-1)), ties to even */
        double floor_part;
        scaled = value;
        for (k = 1; k < digits; ++k) scaled *= 10.0;
        m = (uint64_t)scaled;
        floor_part = (double)m;
        if (scaled - floor_part > 0.5 || (scaled - floor_part == 0.5 && (m & 1u))) ++m;
        if (m < limit * 10u) break;
        value /= 10.0;
        ++e;
    }
    put_uint(mant, m, digits);
    for (last = digits - 1; last > 0 && mant[last] == '0'; --last) { }
    if (e < -4 || e >= digits) {     /* d.ddde+XX */
        *out++ = mant[0];
        if (last > 0) { *out++ = '.'; for (k = 1; k <= last; ++k) *out++ = mant[k]; }
        *out++ = 'e';
        *out++ = e < 0 ? '-' : '+';
        out = put_uint(out, (uint64_t)(e < 0 ? -e : e), 2);
    } else if (e >= 0) {             /* ddd.ddd */
        point = e + 1;
        for (k = 0; k < point; ++k) *out++ = mant[k];
        if (last >= point) { *out++ = '.'; for (k = point; k <= last; ++k) *out++ = mant[k]; }
    } else {                         /* 0.000ddd */
        *out++ = '0'; *out++ = '.';
        for (k = -1; k > e; --k) *out++ = '0';
        for (k = 0; k <= last; ++k) *out++ = mant[k];
    }
    *out = 0;
}
