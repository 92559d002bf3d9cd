/* lesiond: the path tflitec includes; the C API itself lives in core/c/ (headers from the
 * edgefirst-tflite-sys crate, see scripts/tflite-c.sh). */
#include "tensorflow/lite/core/c/c_api.h"
