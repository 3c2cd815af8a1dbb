/* SPDX-License-Identifier: MIT */
/* Layout of the TCG resume stub page (tcg_stub.S, tcg_state.c). */
#ifndef LS_VMM_ACCEL_TCG_STUB_H
#define LS_VMM_ACCEL_TCG_STUB_H

#define TCG_STUB_DATA  0x800
#define TCG_STUB_CR4   (TCG_STUB_DATA + 0x00)
#define TCG_STUB_CR3   (TCG_STUB_DATA + 0x08)
#define TCG_STUB_CR0   (TCG_STUB_DATA + 0x10)
#define TCG_STUB_EFER  (TCG_STUB_DATA + 0x18)
#define TCG_STUB_GDTR  (TCG_STUB_DATA + 0x20) /* limit16, then base64 */
#define TCG_STUB_IDTR  (TCG_STUB_DATA + 0x30)
#define TCG_STUB_DS    (TCG_STUB_DATA + 0x40)
#define TCG_STUB_ES    (TCG_STUB_DATA + 0x42)
#define TCG_STUB_FS    (TCG_STUB_DATA + 0x44)
#define TCG_STUB_GS    (TCG_STUB_DATA + 0x46)
#define TCG_STUB_FRAME 0xfd8 /* iretq frame: rip, cs, rflags, rsp, ss */
/* A new engine's CPUID probe (tcg_engine.c), run before the stub is
 * written; the stub never reaches it. */
#define TCG_STUB_PROBE 0xf00

#ifndef TCG_STUB_ASM
extern const unsigned char tcg_stub_code[], tcg_stub_code_end[];
#endif

#endif /* LS_VMM_ACCEL_TCG_STUB_H */
