#!/usr/bin/env bash
# make bench: the Go micro-benchmarks and the pipeline benchmark, one table, appended to
# BENCHMARKS.md with the machine and the commands. Kafka and ClickHouse must be up (make up).
#
#   BENCH_DURATION   seconds of load per batch size (default 60)
#   BENCH_BATCHES    batch sizes to offer, in order (default "100 1000 1")
#   BENCH_CLIENTS    concurrent HTTP clients for batches > 1 (default 16; 128 for single events)
#   BENCH_ACCOUNTS   accounts of the settle-month benchmark (default 100000; 1000000 for the aim)
#   BENCH_OUT        the file to append the table to (default BENCHMARKS.md; "-" for none)
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${BENCH_DURATION:-60}
batches=${BENCH_BATCHES:-100 1000 1}
clients=${BENCH_CLIENTS:-16}
accounts=${BENCH_ACCOUNTS:-100000}
out=${BENCH_OUT:-BENCHMARKS.md}
tally=bin/tally
run_id=$(date -u +%Y%m%d%H%M%S)
work=$(mktemp -d)
pids=()
source deploy/local/versions.env
kafka_libs=${TALLY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tally}/kafka-$KAFKA_VERSION/libs
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  if [[ -n ${TALLY_CLICKHOUSE_DATABASE:-} ]]; then # the run's own topics and database go again
    curl -fs "http://${TALLY_TEST_CLICKHOUSE_HTTP:-127.0.0.1:8123}/" --data-binary "DROP DATABASE IF EXISTS $TALLY_CLICKHOUSE_DATABASE" >/dev/null || true
    java -cp "$kafka_libs/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "${TALLY_TEST_KAFKA_BROKERS:-127.0.0.1:9092}" \
      --delete --topic "bench\.$run_id\..*" >/dev/null 2>&1 || say "could not delete the topics bench.$run_id.* (delete them by hand)"
  fi
}
trap cleanup EXIT

say() { echo "bench: $*" >&2; }
rows=()
row() { rows+=("| $1 | $2 | \`$3\` |"); }

# --- micro-benchmarks ---
micro() { # name, package, bench regexp, extra flags
  local name=$1 pkg=$2 re=$3; shift 3
  say "go test -bench '$re' $pkg"
  go test -run '^$' -bench "$re" -benchmem "$@" "$pkg" | grep -E '^Benchmark' | while read -r line; do
    local bname ns extra
    bname=$(awk '{print $1}' <<<"$line")
    ns=$(awk '{for (i=1;i<=NF;i++) if ($i=="ns/op") print $(i-1)}' <<<"$line")
    extra=$(awk '{for (i=3;i<=NF;i++) if ($i ~ /(records|events)\/s$|allocs\/op$|MiB-peak-RSS$|s\/settlement$/) printf "%s %s, ", $(i-1), $i}' <<<"$line")
    echo "$name|$bname: ${ns} ns/op, ${extra%, }|go test -run '^\$' -bench '$re' -benchmem $* $pkg"
  done
}
while IFS='|' read -r name result cmd; do row "$name" "$result" "$cmd"; done < <(
  micro "decode + validate a usage event" ./contract 'DecodeUsage' -benchtime 1s
  micro "ingest handler, 50 events a request" ./ingest 'Handler' -benchtime 2s
  micro "fold (one core)" ./aggregate 'Fold$' -benchtime 1000000x -cpu 1
  micro "billing core: settle 100k accounts × 8 services in memory" ./settle 'Settle100kx8$' -benchtime 3x -cpu 1
)

# --- the pipeline: HTTP ingest → Kafka → sink → ClickHouse, and → aggregate ---
export TALLY_TOPIC_USAGE=bench.$run_id.usage TALLY_TOPIC_USAGE_DLQ=bench.$run_id.usage.dlq TALLY_TOPIC_USAGE_TOTALS=bench.$run_id.totals
export TALLY_TOPIC_ACCOUNTS=bench.$run_id.accounts TALLY_TOPIC_ACCOUNT_STATUS=bench.$run_id.status TALLY_TOPIC_BILLING=bench.$run_id.billing
export TALLY_TOPIC_LEDGER=bench.$run_id.ledger TALLY_TOPIC_SETTLE_JOURNAL=bench.$run_id.journal TALLY_CLICKHOUSE_DATABASE=bench_$run_id
say "migrate (topics bench.$run_id.*, database bench_$run_id)"
$tally migrate >"$work/migrate.log" 2>&1
start() { # role, admin port, args…
  local role=$1 port=$2; shift 2
  $tally "$role" --admin-addr "127.0.0.1:$port" "$@" >"$work/$role.log" 2>&1 &
  pids+=($!)
  eval "${role}_pid=$!"
}
start ingest 19201 --http-addr 127.0.0.1:18201
start sink 19202
start aggregate 19203 --api-addr 127.0.0.1:18203 --group "bench-$run_id"
for port in 19201 19202 19203; do
  for _ in $(seq 1 120); do curl -fs "127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.5; done
done
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hwm() { awk '/VmHWM/{printf "%d", $2/1024}' "/proc/$1/status"; }
lag() { curl -s "127.0.0.1:$1/metrics" | awk -v m="$2" '$1 ~ "^"m"\\{" {s+=$2} END{printf "%d", s}'; }
quantile() { # port, histogram, q: the upper bound of the bucket holding the q-quantile
  curl -s "127.0.0.1:$1/metrics" | awk -v h="$2_bucket" -v q="$3" '
    index($1, h"{") == 1 { match($1, /le="[^"]*"/); le = substr($1, RSTART+4, RLENGTH-5); n++; les[n] = le; cnt[n] = $2 }
    END { total = cnt[n]; for (i = 1; i <= n; i++) if (cnt[i] >= q*total) { print "≤ " les[i] " s"; exit } }'
}
hz=$(getconf CLK_TCK)
for batch in $batches; do
  c=$clients
  [[ $batch == 1 ]] && c=128
  say "load: batches of $batch, $c clients, ${duration}s, SDK-shaped events, 1% retries"
  i0=$(ticks "$ingest_pid"); s0=$(ticks "$sink_pid"); a0=$(ticks "$aggregate_pid")
  $tally loadgen --target http://127.0.0.1:18201/v1/events --batch "$batch" --clients "$c" --duration "${duration}s" --shape sdk --retries 0.01 >"$work/load.txt" 2>&1 &
  load=$!
  lags=() sink_lags=()
  for ((t = 10; t <= duration; t += 10)); do
    sleep 10
    l=$(lag 19202 tally_sink_consumer_lag)
    sink_lags+=("$l")
    lags+=("$l/$(lag 19203 tally_aggregate_consumer_lag)")
  done
  # Flat: the sink's lag at the end is within a second's worth of events of where it was at the
  # first sample; growing otherwise (the pipeline falls behind the offered load).
  verdict=flat
  if ((${#sink_lags[@]} >= 2)) && ((sink_lags[-1] > sink_lags[0] + 100000)); then verdict=GROWING; fi
  wait "$load"
  # The roles' work for this load ends when they caught up: count their CPU until then, and let
  # no backlog spill into the next measurement.
  drained=0
  while (($(lag 19202 tally_sink_consumer_lag) > 1000 || $(lag 19203 tally_aggregate_consumer_lag) > 1000)) && ((drained < 900)); do
    sleep 2
    drained=$((drained + 2))
  done
  i1=$(ticks "$ingest_pid"); s1=$(ticks "$sink_pid"); a1=$(ticks "$aggregate_pid")
  line=$(tail -1 "$work/load.txt")
  accepted=$(sed -E 's/.*accepted=([0-9]+).*/\1/' <<<"$line")
  rate=$(sed -E 's/.*\(([0-9]+) events\/s\).*/\1/' <<<"$line")
  perm() { awk -v d="$1" -v n="$accepted" -v hz="$hz" 'BEGIN{ if (n > 0) printf "%.1f", d/hz/(n/1e6); else print "-" }'; }
  row "pipeline, batches of $batch, $c clients, ${duration}s" \
    "**$rate events/s** accepted ($accepted); sink/aggregate lag every 10 s: ${lags[*]} ($verdict), caught up ${drained} s after the load stopped; CPU-s per million events (until caught up): ingest $(perm $((i1 - i0))), sink $(perm $((s1 - s0))), aggregate $(perm $((a1 - a0))); freshness (all runs so far) p50 $(quantile 19203 tally_aggregate_freshness_seconds 0.5), p99 $(quantile 19203 tally_aggregate_freshness_seconds 0.99)" \
    "bin/tally loadgen --target http://127.0.0.1:8080/v1/events --batch $batch --clients $c --duration ${duration}s --shape sdk --retries 0.01 (ingest, sink, aggregate running)"
done
row "peak RSS per role over the runs" "ingest $(hwm "$ingest_pid") MiB, sink $(hwm "$sink_pid") MiB, aggregate $(hwm "$aggregate_pid") MiB" "VmHWM in /proc/PID/status"
cleanup
trap - EXIT

# --- a month settled end to end by the settle worker ---
say "settle month: $accounts accounts × 8 services"
settle=$(TALLY_BENCH_ACCOUNTS=$accounts go test ./settle/worker -run '^$' -bench SettleMonth -benchtime 1x -timeout 30m | grep -E '^BenchmarkSettleMonth' || true)
row "settle worker, a month of $accounts accounts × 8 services end to end (usage in ClickHouse, bills on Kafka, snapshot)" \
  "$(awk '{for (i=1;i<=NF;i++) if ($i ~ /s\/settlement$|MiB-peak-RSS$/) printf "%s %s  ", $(i-1), $i}' <<<"$settle")" \
  "TALLY_BENCH_ACCOUNTS=$accounts go test ./settle/worker -run '^\$' -bench SettleMonth -benchtime 1x"

machine="$(nproc) cores ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), shared with Kafka, ClickHouse and the load generator"
table=$(
  echo
  echo "### make bench, $(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD)"
  echo
  echo "Machine: $machine. Command: \`make bench\` (BENCH_DURATION=$duration, BENCH_BATCHES=\"$batches\", BENCH_ACCOUNTS=$accounts)."
  echo
  echo "| what | result | command |"
  echo "|---|---|---|"
  printf '%s\n' "${rows[@]}"
)
echo "$table"
if [[ $out != "-" ]]; then
  [[ -f $out ]] && grep -q "^## make bench runs" "$out" || printf '\n## make bench runs\n\nEach run of `make bench` appends its table here; earlier runs stay for comparison.\n' >>"$out"
  echo "$table" >>"$out"
  say "appended to $out"
fi
