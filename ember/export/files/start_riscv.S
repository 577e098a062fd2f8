/* RISC-V bare-metal entry: stack, gp, trap handler, .bss clear, FPU on, main(0, 0), exit
 * through semihosting with main's status. Any trap exits with 99. */
    .section .text.start, "ax"
    .globl _start
_start:
    .option push
    .option norelax
    la      gp, __global_pointer$
    .option pop
    la      sp, __stack_top
    la      t0, trap_handler
    csrw    mtvec, t0
#if defined(__riscv_flen)
    li      t0, 0x2000          /* mstatus.FS = Initial: enable the FPU */
    csrs    mstatus, t0
#endif
    la      t0, __bss_start
    la      t1, __bss_end
1:  bgeu    t0, t1, 2f
    sw      zero, 0(t0)
    addi    t0, t0, 4
    j       1b
2:  li      a0, 0
    li      a1, 0
    call    main
    call    sh_exit             /* main's status is already in a0 */
3:  j       3b

    .align  2
trap_handler:
    li      a0, 99
    call    sh_exit
    j       3b
