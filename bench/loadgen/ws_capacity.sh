#!/usr/bin/env bash
# How many real WebSocket connections this machine holds, with memory per connection on both sides
# (issue 6). Starts NODES agner-node processes (one process holds at most ~19k sockets: open-file
# limit 20000) and runs agner-loadgen over WORKERS worker processes, one source address each, with
# every device online, one device per phone and no sends; samples the RSS of the nodes and of the
# workers every 2 s and prints the peak. Needs a release build.
# Usage: bench/loadgen/ws_capacity.sh PHONES NODES WORKERS [HOLD_S] [OUT_DIR]
set -euo pipefail
phones=$1 nodes=$2 workers=$3 hold=${4:-60} out=${5:-/tmp/agner-ws-capacity}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/build/release/tools
heartbeat_ms=25000
rm -rf "$out"; mkdir -p "$out"
node_pids=()
cleanup() { kill "${node_pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
addrs="" dirs=""
for i in $(seq 0 $((nodes - 1))); do
  port=$((19100 + i))
  "$bin/agner-node" --http.host=127.0.0.1 --http.port=$port --store.dir="$out/node-$i" \
    --gateway.heartbeat_ms=$heartbeat_ms >"$out/node-$i.log" 2>&1 &
  node_pids+=($!)
  addrs+="${addrs:+,}127.0.0.1:$port"; dirs+="${dirs:+,}$out/node-$i"
done
for i in $(seq 0 $((nodes - 1))); do
  for _ in $(seq 100); do grep -q "chat node ready" "$out/node-$i.log" && break; sleep 0.1; done
done
rss_kb() {
  local t=0 v
  for p in "$@"; do
    v=$(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    t=$((t + ${v:-0}))
  done
  echo $t
}
nodes_before=$(rss_kb "${node_pids[@]}")
ramp=$((phones / 2500 + 10))
"$bin/agner-loadgen" --transport=ws --nodes="$addrs" --node_dirs="$dirs" --workers="$workers" --phones="$phones" \
  --multi_device_fraction=0 --online_mean_s=1e9 --offline_mean_s=1 --ramp_up_s=$ramp --sends_per_online_minute=0 \
  --duration_s=$((ramp + hold)) --drain=false --heartbeat_ms=$heartbeat_ms --progress=on --out_dir="$out/lg" \
  >"$out/loadgen.log" 2>&1 &
lg=$!
peak_nodes=0 peak_workers=0 nworkers=0
while kill -0 $lg 2>/dev/null; do
  sleep 2
  mapfile -t wp < <(pgrep -f -- "agner-loadgen-worker __worker" || true)
  n=$(rss_kb "${node_pids[@]}"); w=$(rss_kb "${wp[@]}")
  [ "$n" -gt "$peak_nodes" ] && peak_nodes=$n
  [ "$w" -gt "$peak_workers" ] && { peak_workers=$w; nworkers=${#wp[@]}; }
done
wait $lg || true
ready=$(python3 -c "import json;print(json.load(open('$out/lg/report.json'))['load']['peak_ready'])")
closes=$(python3 -c "import json;print(json.load(open('$out/lg/report.json'))['load']['unexpected_closes'])")
echo "connections held: $ready of $phones (unexpected closes $closes), $nodes nodes, $workers workers"
echo "nodes:   RSS $((nodes_before / 1024)) MiB before, $((peak_nodes / 1024)) MiB peak: $(( (peak_nodes - nodes_before) * 1024 / (ready > 0 ? ready : 1) )) B per connection"
echo "workers: RSS $((peak_workers / 1024)) MiB peak over $nworkers processes: $(( peak_workers * 1024 / (ready > 0 ? ready : 1) )) B per connection, fixed cost included"
