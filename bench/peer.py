"""The usual way to build a dermatoscope classifier on a Pi, as a baseline for `lesiond bench`.

A Python loop: Pillow decodes and resizes, the ai-edge-litert interpreter (its default, XNNPACK)
runs the same .tflite model, numpy does softmax and top-3, paho-mqtt publishes JSON at QoS 1 to
the same broker. Same images, same model, same thread count as lesiond. Prints one JSON line
with the same fields as `lesiond bench --json` (where they exist).

    python bench/peer.py --images ../shared/data/ham10000/images --frames 300 --threads 2 \
        --model models/lesion_mnv2_int8.tflite --mqtt-port 1883
"""
import argparse
import json
import os
import resource
import threading
import time
import uuid

import numpy as np
import paho.mqtt.client as mqtt
from ai_edge_litert.interpreter import Interpreter
from PIL import Image


def pct(values):
    if not values:
        return {"p50": 0.0, "p95": 0.0}
    v = sorted(values)
    rank = lambda q: v[min(len(v), max(1, int(np.ceil(q * len(v))))) - 1]
    return {"p50": rank(0.50), "p95": rank(0.95)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default=os.path.join(os.environ.get("LESIOND_DATA", "../shared/data/ham10000"), "images"))
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="models/lesion_mnv2_int8.tflite")
    ap.add_argument("--labels", default="models/labels.json")
    ap.add_argument("--calibration", default="models/calibration.json")
    ap.add_argument("--mqtt-host", default="127.0.0.1")
    ap.add_argument("--mqtt-port", type=int, default=1883)
    ap.add_argument("--paced-fps", type=float, default=30.0,
                    help="second pass with frames arriving at this rate, like a camera (0: skip)")
    args = ap.parse_args()

    files = sorted(f for f in os.listdir(args.images) if f.endswith(".jpg"))[: args.frames]
    labels = json.load(open(args.labels))["classes"]
    temperature = json.load(open(args.calibration)).get("temperature", 1.0) if os.path.exists(args.calibration) else 1.0

    interp = Interpreter(model_path=args.model, num_threads=args.threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    height, width = int(inp["shape"][1]), int(inp["shape"][2])
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]

    def preprocess(path):
        img = Image.open(path).convert("RGB").resize((width, height), Image.BILINEAR)
        x = np.asarray(img, dtype=np.float32)
        if inp["dtype"] == np.uint8 and in_scale:
            x = np.clip(np.round(x / in_scale + in_zero), 0, 255)
        return x.astype(inp["dtype"])[None]

    # The bare interpreter, for reference.
    x = preprocess(os.path.join(args.images, files[0]))
    for _ in range(5):
        interp.set_tensor(inp["index"], x)
        interp.invoke()
    bare, cpu0 = [], time.process_time()
    for _ in range(min(200, len(files))):
        t = time.perf_counter()
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        bare.append((time.perf_counter() - t) * 1e3)
    bare_cpu = (time.process_time() - cpu0) * 1e3 / len(bare)

    acked = {}
    sent_at = {}
    # Set by the network thread once every publish so far is acknowledged (`expected` grows by
    # one pass's frames before each pass), so waiting costs no CPU in the measured window.
    expected = [0]
    all_acked = threading.Event()

    def on_publish(client, userdata, mid, reason_code=None, properties=None):
        acked[mid] = time.perf_counter()
        if len(acked) >= expected[0]:
            all_acked.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"lesiond-peer-{os.getpid()}")
    client.on_publish = on_publish
    ready_t = time.perf_counter()
    client.connect(args.mqtt_host, args.mqtt_port, keepalive=30)
    client.loop_start()

    def one_frame(seq, name, stages):
        t0 = time.perf_counter()
        img = Image.open(os.path.join(args.images, name)).convert("RGB")
        t1 = time.perf_counter()
        x = np.asarray(img.resize((width, height), Image.BILINEAR), dtype=np.float32)
        if inp["dtype"] == np.uint8 and in_scale:
            x = np.clip(np.round(x / in_scale + in_zero), 0, 255)
        x = x.astype(inp["dtype"])[None]
        t2 = time.perf_counter()
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        raw = interp.get_tensor(out["index"])[0]
        t3 = time.perf_counter()
        logits = (raw.astype(np.float32) - out_zero) * out_scale if out_scale else raw.astype(np.float32)
        z = logits / temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        top = np.argsort(-p)[:3]
        payload = json.dumps({
            "result_id": str(uuid.uuid4()), "seq": seq, "source": name,
            "probabilities": {c["code"]: float(p[c["index"]]) for c in labels},
            "top": [{"code": labels[i]["code"], "probability": float(p[i])} for i in top],
        })
        t4 = time.perf_counter()
        info = client.publish("lesiond-peer/classification", payload, qos=1)
        # From before the publish call: the PUBACK can arrive before publish() returns.
        sent_at[info.mid] = t4
        for k, a, b in (("decode", t0, t1), ("preprocess", t1, t2), ("inference", t2, t3), ("postprocess", t3, t4), ("total", t0, t4)):
            stages[k].append((b - a) * 1e3)

    def start_pass():
        expected[0] += len(files)
        all_acked.clear()

    def wait_for_acks():
        all_acked.wait(timeout=120)

    def stage_percentiles(stages):
        publish = [(acked[m] - sent_at[m]) * 1e3 for m in sent_at if m in acked]
        return {**{k: pct(v) for k, v in stages.items()}, "publish": pct(publish)}

    # As fast as it goes (throughput, CPU per frame).
    stages = {k: [] for k in ("decode", "preprocess", "inference", "postprocess", "total")}
    start_pass()
    cpu0, start = time.process_time(), time.perf_counter()
    for seq, name in enumerate(files, 1):
        one_frame(seq, name, stages)
    wait_for_acks()
    wall = time.perf_counter() - start
    cpu = (time.process_time() - cpu0) * 1e3 / len(files)
    n_acked = sum(m in acked for m in sent_at)
    saturated = stage_percentiles(stages)

    # Paced like a camera (latency without a backlog): the same frames at --paced-fps.
    paced = None
    if args.paced_fps > 0:
        sent_at.clear()
        stages = {k: [] for k in stages}
        start_pass()
        t_next = time.perf_counter()
        for seq, name in enumerate(files, 1):
            delay = t_next - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t_next = max(t_next, time.perf_counter()) + 1.0 / args.paced_fps
            one_frame(seq, name, stages)
        wait_for_acks()
        paced = {"fps": args.paced_fps, "frames": len(files), "dropped": 0, "stages_ms": stage_percentiles(stages)}
    client.loop_stop()
    client.disconnect()
    print(json.dumps({
        "impl": "python-peer",
        "threads": args.threads,
        "frames": len(files),
        "acknowledged": n_acked,
        "bare_invoke_ms": pct(bare),
        "bare_cpu_ms_per_invoke": bare_cpu,
        "bare_fps": 1e3 * len(bare) / sum(bare),  # sustained rate, as lesiond bench reports it
        "stages_ms": saturated,
        "fps": len(files) / wall,
        "cpu_ms_per_frame": cpu,
        "non_invoke_cpu_share": max(0.0, 1 - bare_cpu / cpu),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ready_ms": (start - ready_t) * 1e3,
        "paced": paced,
    }))


if __name__ == "__main__":
    main()
