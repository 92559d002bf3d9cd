"""Prints lesiond vs the Python peer from the JSON lines of `lesiond bench --json` and
`bench/peer.py` (stdin: lines prefixed with a variant label and a tab)."""
import json
import sys

rows = []
for line in sys.stdin:
    label, _, data = line.rstrip("\n").partition("\t")
    if data.strip().startswith("{"):
        rows.append((label, json.loads(data)))


def e2e_p95(r):
    s = r["stages_ms"]
    return s["total"]["p95"] + s["publish"]["p95"]


print("variant | threads | bare invoke p50 ms | e2e fps | e2e/bare | e2e latency p95 ms (capture->PUBACK) | CPU ms/frame | non-invoke CPU | peak RSS MB")
print("---|---|---|---|---|---|---|---|---")
for label, r in rows:
    print(f"{label} | {r['threads']} | {r['bare_invoke_ms']['p50']:.2f} | {r['fps']:.1f} | {r['fps'] / r['bare_fps']:.3f} | "
          f"{e2e_p95(r):.1f} | {r['cpu_ms_per_frame']:.2f} | {100 * r['non_invoke_cpu_share']:.1f}% | {r['peak_rss_mb']:.1f}")
peers = {r["threads"]: r for label, r in rows if label.startswith("peer")}
print()
print("lesiond / peer (same thread count): throughput (>1 wins), latency p95, RSS, CPU per frame (<1 wins)")
print("variant | threads | throughput | latency p95 | peak RSS | CPU/frame")
print("---|---|---|---|---|---")
for label, r in rows:
    p = peers.get(r["threads"])
    if label.startswith("peer") or p is None:
        continue
    print(f"{label} | {r['threads']} | {r['fps'] / p['fps']:.2f} | {e2e_p95(r) / e2e_p95(p):.2f} | "
          f"{r['peak_rss_mb'] / p['peak_rss_mb']:.2f} | {r['cpu_ms_per_frame'] / p['cpu_ms_per_frame']:.2f}")
