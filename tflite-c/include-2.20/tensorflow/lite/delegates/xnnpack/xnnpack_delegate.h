/* lesiond: the XNNPACK delegate's C interface as TF Lite 2.20 (libLiteRtRuntimeCApi.so from
 * PyPI ai-edge-litert==1.4.0, aarch64) defines it. No registry package ships this header, so it
 * is declared here, for that library only (scripts/tflite-c.sh pairs them).
 *
 * The options struct is returned BY VALUE from TfLiteXNNPackDelegateOptionsDefault: the caller
 * reserves sizeof(TfLiteXNNPackDelegateOptions) bytes and the library writes its own struct
 * there. A declaration smaller than the library's corrupts the caller's stack. The layout below
 * was read off the library (56 bytes on a 64-bit target: num_threads 0, flags 3 = QS8|QU8 at
 * offset 8, weight_cache_file_descriptor -1 at offset 40) and is proven on every CI run by
 * tflite-c/xnnpack_options_guard.c (guard bytes after the struct, checked after the call). */
#ifndef LESIOND_TFLITE_XNNPACK_DELEGATE_H_
#define LESIOND_TFLITE_XNNPACK_DELEGATE_H_

#include <stdbool.h>
#include <stdint.h>

#include "tensorflow/lite/core/c/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TFLITE_XNNPACK_DELEGATE_FLAG_QS8 0x00000001
#define TFLITE_XNNPACK_DELEGATE_FLAG_QU8 0x00000002

struct TfLiteXNNPackDelegateWeightsCache;

typedef struct {
  int32_t num_threads;  /* 0 or less: no thread pool */
  uint32_t runtime_flags;
  uint32_t flags;       /* TFLITE_XNNPACK_DELEGATE_FLAG_* */
  struct TfLiteXNNPackDelegateWeightsCache* weights_cache;
  bool handle_variable_ops;
  const char* weight_cache_file_path;
  int weight_cache_file_descriptor;
  void* weight_cache_provider;
} TfLiteXNNPackDelegateOptions;

TfLiteXNNPackDelegateOptions TfLiteXNNPackDelegateOptionsDefault(void);
TfLiteDelegate* TfLiteXNNPackDelegateCreate(const TfLiteXNNPackDelegateOptions* options);
int TfLiteXNNPackDelegateGetFlags(TfLiteDelegate* delegate);
void TfLiteXNNPackDelegateDelete(TfLiteDelegate* delegate);

#ifdef __cplusplus
}
#endif

#endif
