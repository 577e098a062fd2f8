/* Cortex-M startup: vector table, .data/.bss initialization, FPU/MVE enable, main(), exit
 * through semihosting with main's status. A fault prints CFSR/HFSR/PC and exits with 99. */
#include <stdint.h>
#include "platform.h"
#include "semihost.h"

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top;
int main(int argc, char **argv);
void Reset_Handler(void);
void Fault_Handler(void);
void SysTick_Handler(void);
void ember_fault_report(const uint32_t *frame);

volatile uint32_t ember_systick_wraps;          /* the instruction counter's high part */
void SysTick_Handler(void) { ember_systick_wraps++; }

void ember_fault_report(const uint32_t *frame)
{
    const uint32_t regs[3] = { *(volatile uint32_t *)0xE000ED28,    /* CFSR */
                               *(volatile uint32_t *)0xE000ED2C,    /* HFSR */
                               frame[6] };                           /* stacked PC */
    static const char *const names[3] = { "FAULT: CFSR=0x", " HFSR=0x", " PC=0x" };
    char hex[9];
    int k, i;
    for (k = 0; k < 3; k++) {
        for (i = 0; i < 8; i++) hex[i] = "0123456789abcdef"[(regs[k] >> (28 - 4 * i)) & 0xF];
        hex[8] = 0;
        ember_platform_write(names[k]);
        ember_platform_write(hex);
    }
    ember_platform_write("\n");
    sh_exit(99);
}

#if defined(__ARM_ARCH_6M__)
__attribute__((naked)) void Fault_Handler(void)
{
    __asm__ volatile("mov r0, lr\n\tmovs r1, #4\n\ttst r0, r1\n\tbne 1f\n\t"
                     "mrs r0, msp\n\tb ember_fault_report\n1:\tmrs r0, psp\n\tb ember_fault_report");
}
#else
__attribute__((naked)) void Fault_Handler(void)
{
    __asm__ volatile("tst lr, #4\n\tite eq\n\tmrseq r0, msp\n\tmrsne r0, psp\n\t"
                     "b ember_fault_report");
}
#endif

/* The initial stack pointer, then the handlers: a struct keeps data and function pointers
 * apart, as ISO C wants. */
typedef void (*handler)(void);
__attribute__((section(".vectors"), used))
const struct { const uint32_t *stack; handler handlers[15]; } ember_vectors = {
    &__stack_top, {
        Reset_Handler,
        Fault_Handler, Fault_Handler,       /* NMI, HardFault */
        Fault_Handler, Fault_Handler,       /* MemManage, BusFault */
        Fault_Handler, Fault_Handler,       /* UsageFault, SecureFault */
        0, 0, 0,
        Fault_Handler, Fault_Handler, 0,    /* SVCall, DebugMon */
        Fault_Handler, SysTick_Handler,     /* PendSV, SysTick */
    }
};

void Reset_Handler(void)
{
    uint32_t *src = &__data_load, *dst = &__data_start;
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    /* CPACR: full access to CP10/CP11 before any FP or MVE instruction (the copy loops below
     * may be vectorized with them at -O3) */
    *(volatile uint32_t *)0xE000ED88 |= (0xFu << 20);
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    while (dst < &__data_end) *dst++ = *src++;
    for (dst = &__bss_start; dst < &__bss_end; ) *dst++ = 0;
    sh_exit(main(0, 0));
}
