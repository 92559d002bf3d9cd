/* Proves that the TfLiteXNNPackDelegateOptions we declare (the header tflitec's bindings are
 * generated from) is at least as large as the struct the library writes when it returns one
 * by value from TfLiteXNNPackDelegateOptionsDefault.
 *
 * On aarch64 a struct over 16 bytes is returned through memory the caller reserves, its address
 * in x8. The call below passes a buffer whose first sizeof(TfLiteXNNPackDelegateOptions) bytes
 * are the struct and whose next GUARD bytes are a guard, filled with a pattern; after the call
 * the guard must be unchanged (twice, with two patterns, so that a byte the library writes is
 * seen whatever its value). A compiler-made temporary could hide an overrun, hence the explicit
 * call. A struct of 16 bytes or less comes back in registers and cannot overrun anything.
 *
 * Built and run by scripts/arm-ci.sh (cross gcc + qemu-aarch64). Exit 0: proven; 1: overrun. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The header under test includes common.h for TfLiteDelegate, which this check only passes by
 * pointer; common.h itself needs a C23 compiler (enums with a fixed underlying type, which
 * bindgen's clang reads but Debian 12's gcc does not), so it is stood in for here. */
#define TENSORFLOW_LITE_CORE_C_COMMON_H_
typedef struct TfLiteDelegate TfLiteDelegate;
#include "tensorflow/lite/delegates/xnnpack/xnnpack_delegate.h"

extern const char* TfLiteVersion(void);

#define DECLARED sizeof(TfLiteXNNPackDelegateOptions)
#define GUARD 256

static unsigned char buffer[DECLARED + GUARD] __attribute__((aligned(16)));

#if defined(__aarch64__)
_Static_assert(sizeof(TfLiteXNNPackDelegateOptions) > 16, "this check expects an indirect return");
static void options_default_into(void* result) {
  register void* x8 __asm__("x8") = result;
  __asm__ volatile("bl TfLiteXNNPackDelegateOptionsDefault"
                   : "+r"(x8)
                   :
                   : "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x9", "x10", "x11", "x12", "x13",
                     "x14", "x15", "x16", "x17", "x18", "x30", "v0", "v1", "v2", "v3", "v4", "v5", "v6",
                     "v7", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23", "v24", "v25", "v26",
                     "v27", "v28", "v29", "v30", "v31", "cc", "memory");
}
#else
#error "xnnpack_options_guard.c: only the aarch64 calling convention is written out"
#endif

/* Calls the library with the buffer filled with `fill`; returns the index one past the last
 * byte it changed (anywhere in struct + guard), so the caller can tell how much it wrote. */
static size_t written_with(unsigned char fill) {
  memset(buffer, fill, sizeof buffer);
  options_default_into(buffer);
  size_t end = 0;
  for (size_t i = 0; i < sizeof buffer; i++)
    if (buffer[i] != fill) end = i + 1;
  return end;
}

int main(void) {
  size_t a = written_with(0xAA), b = written_with(0x55);
  size_t written = a > b ? a : b;
  TfLiteXNNPackDelegateOptions options;
  memcpy(&options, buffer, DECLARED);
  printf("TF Lite %s: TfLiteXNNPackDelegateOptionsDefault wrote %zu bytes; declared struct %zu bytes; "
         "default flags 0x%x, num_threads %d\n",
         TfLiteVersion(), written, (size_t)DECLARED, options.flags, options.num_threads);
  if (written > DECLARED) {
    printf("FAIL: the library writes %zu bytes past the declared struct: fix "
           "tflite-c/include-*/tensorflow/lite/delegates/xnnpack/xnnpack_delegate.h\n", written - DECLARED);
    return 1;
  }
  printf("ok: the declared struct holds all the library writes (%zu guard bytes intact)\n", (size_t)GUARD);
  return 0;
}
