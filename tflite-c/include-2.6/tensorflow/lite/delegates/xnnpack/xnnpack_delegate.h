/* lesiond: the XNNPACK delegate's C interface as the TF Lite 2.6 library that the tflitec crate
 * ships (build-res/docsrs_res.zip, x86_64) defines it: the same layout as the bindings.rs that
 * tflitec generated for that library and ships beside it (8 bytes, returned in registers). No
 * registry package ships this header, so it is declared here, for that library only
 * (scripts/tflite-c.sh pairs them). See tflite-c/xnnpack_options_guard.c. */
#ifndef LESIOND_TFLITE_XNNPACK_DELEGATE_H_
#define LESIOND_TFLITE_XNNPACK_DELEGATE_H_

#include <stdbool.h>
#include <stdint.h>

#include "tensorflow/lite/core/c/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int32_t num_threads;  /* 0 or less: no thread pool */
  bool enable_int8_weights_unpacking;
} TfLiteXNNPackDelegateOptions;

TfLiteXNNPackDelegateOptions TfLiteXNNPackDelegateOptionsDefault(void);
TfLiteDelegate* TfLiteXNNPackDelegateCreate(const TfLiteXNNPackDelegateOptions* options);
void TfLiteXNNPackDelegateDelete(TfLiteDelegate* delegate);

#ifdef __cplusplus
}
#endif

#endif
