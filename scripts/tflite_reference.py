"""The x86_64 TF Lite reference for the aarch64 check in scripts/arm-ci.sh.

Runs the int8 model through ai-edge-litert's own interpreter on x86_64 (PyPI
ai-edge-litert==1.4.0: TF Lite 2.20, the same release as the aarch64 libLiteRtRuntimeCApi.so the
Pi runs), with its XNNPACK delegate (the interpreter's default), on the same input bytes as
lesiond (crop-resize-v1 from training/lesion_training/preprocess.py, byte-identical to the Rust
code: the input_sha256 of each line must equal lesiond's). XNNPACK's int8 arithmetic differs
from TF Lite's built-in kernels by a few quantization steps, so the device is compared with the
same delegate here, and with lesiond's x86_64 TF Lite 2.6 (built-in kernels) for information.

    python scripts/tflite_reference.py MODEL IMAGE...   # one JSON object per image on stdout
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))

import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402
from lesion_training.preprocess import preprocess_file, quantize_input  # noqa: E402


def main(model: str, images: list[str]) -> None:
    it = Interpreter(model_path=model, num_threads=2, experimental_op_resolver_type=OpResolverType.AUTO)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    for path in images:
        x = quantize_input(preprocess_file(path), in_scale, in_zero)
        it.set_tensor(inp["index"], x[None])
        it.invoke()
        q = it.get_tensor(out["index"])[0].astype(np.int64)
        logits = (q - out_zero) * out_scale  # T = 1, as `lesiond classify --model` without --calibration
        p = np.exp(logits - logits.max())
        p /= p.sum()
        print(json.dumps({"image": path, "input_sha256": hashlib.sha256(x.tobytes()).hexdigest(),
                          "raw_output": [int(v) for v in q], "probabilities": [float(v) for v in p]}))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
