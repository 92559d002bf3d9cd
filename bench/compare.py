"""Prints lesiond vs the Python peer from the JSON lines of `lesiond bench --json` and
`bench/peer.py` (stdin: lines prefixed with a variant label and a tab).

Latency is capture -> PUBACK, as p95(capture -> result) + p95(result -> PUBACK) (an upper
bound of the per-frame p95, computed the same way for both). It is taken from the camera-paced
run: when the replay goes as fast as the engine, frames queue by design (lesiond reads ahead to
keep the engine busy) and the latency measures the backlog, not the work; that figure is shown
too, as "saturated"."""
import json
import sys

rows = []
for line in sys.stdin:
    label, _, data = line.rstrip("\n").partition("\t")
    if data.strip().startswith("{"):
        rows.append((label, json.loads(data)))


def e2e_p95(stages):
    return stages["total"]["p95"] + stages["publish"]["p95"]


def paced_p95(r):
    return e2e_p95(r["paced"]["stages_ms"]) if r.get("paced") else float("nan")


def by(r):
    """lesiond's per-thread account of a frame's CPU (the peer has one thread: no split)."""
    b = r.get("cpu_ms_per_frame_by")
    return " / ".join(f"{b[k]:.2f}" for k in ("invoke", "capture", "inference_other", "rest")) if b else "-"


def share(r):
    """Non-invoke CPU share measured within the run (lesiond, per thread), and against the bare
    invoke measured before and after it (the peer has only the latter)."""
    vs_bare = r.get("non_invoke_cpu_share_vs_bare")
    if vs_bare is None:
        return f"- ({100 * r['non_invoke_cpu_share']:.1f}%)"
    return f"{100 * r['non_invoke_cpu_share']:.1f}% ({100 * vs_bare:.1f}%)"


paced_fps = next((r["paced"]["fps"] for _, r in rows if r.get("paced")), None)
print(f"variant | threads | bare invoke p50 ms (before / after the run) | bare invoke mean ms | e2e fps | e2e/bare | latency p95 ms at {paced_fps:g} fps "
      "(capture->PUBACK) | latency p95 ms saturated | CPU ms/frame | of which invoke / capture / inference other / rest "
      "| non-invoke CPU (vs bare) | peak RSS MB | ready ms")
print("---|---|---|---|---|---|---|---|---|---|---|---|---")
for label, r in rows:
    dropped = r["paced"]["dropped"] if r.get("paced") else 0
    ba = r.get("bare_p50_before_after_ms")
    drift = f" ({ba[0]:.2f} / {ba[1]:.2f})" if ba else ""
    print(f"{label} | {r['threads']} | {r['bare_invoke_ms']['p50']:.2f}{drift} | {1e3 / r['bare_fps']:.2f} | {r['fps']:.1f} | {r['fps'] / r['bare_fps']:.3f} | "
          f"{paced_p95(r):.1f}{f' ({dropped} dropped)' if dropped else ''} | {e2e_p95(r['stages_ms']):.1f} | "
          f"{r['cpu_ms_per_frame']:.2f} | {by(r)} | {share(r)} | {r['peak_rss_mb']:.1f} | {r['ready_ms']:.0f}")
print()
print("per stage p50/p95 ms, camera-paced run (publish: result ready -> PUBACK)")
print("variant | threads | decode | preprocess | queue | inference | postprocess | publish")
print("---|---|---|---|---|---|---|---")
for label, r in rows:
    if not r.get("paced"):
        continue
    s = r["paced"]["stages_ms"]
    cell = lambda k: f"{s[k]['p50']:.2f} / {s[k]['p95']:.2f}" if k in s else "-"
    print(f"{label} | {r['threads']} | " + " | ".join(cell(k) for k in ("decode", "preprocess", "queue", "inference", "postprocess", "publish")))
peers = {r["threads"]: r for label, r in rows if label.startswith("peer")}
print()
print("lesiond / peer (same thread count): throughput (>1 wins); latency p95 (paced), peak RSS, CPU per frame (<1 wins)")
print("variant | threads | throughput | latency p95 | peak RSS | CPU/frame")
print("---|---|---|---|---|---")
for label, r in rows:
    p = peers.get(r["threads"])
    if label.startswith("peer") or p is None:
        continue
    print(f"{label} | {r['threads']} | {r['fps'] / p['fps']:.2f} | {paced_p95(r) / paced_p95(p):.2f} | "
          f"{r['peak_rss_mb'] / p['peak_rss_mb']:.2f} | {r['cpu_ms_per_frame'] / p['cpu_ms_per_frame']:.2f}")
