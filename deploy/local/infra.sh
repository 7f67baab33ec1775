#!/usr/bin/env bash
# Local Kafka (KRaft, one node) and ClickHouse (chDB engine behind chlaunch) without Docker.
#
#   infra.sh up      install if needed, start what is not running, wait until both answer
#   infra.sh down    stop exactly the processes this script started (by pid)
#   infra.sh status  say what runs where
#   infra.sh cluster-up / cluster-down   a three-node Kafka cluster beside them (see cluster_up)
#
# Downloads are cached in $TALLY_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/tally), so a fresh
# clone on the same machine does not download again. Data, logs and pid files live in
# $TALLY_STATE (default <repo>/.state), which git ignores.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${TALLY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tally}
state=${TALLY_STATE:-$repo/.state}
kafka_port=${TALLY_KAFKA_PORT:-9092}
kafka_controller_port=${TALLY_KAFKA_CONTROLLER_PORT:-9093}
ch_tcp_port=${TALLY_CLICKHOUSE_TCP_PORT:-9000}
ch_http_port=${TALLY_CLICKHOUSE_HTTP_PORT:-8123}
kafka_heap=${TALLY_KAFKA_HEAP:-768m}

kafka_libs="$cache/kafka-$KAFKA_VERSION/libs"
chdb_dir="$cache/chdb-$CHDB_VERSION"
chdb_lib="$chdb_dir/libchdb.so"
chlaunch="$state/bin/chlaunch"

log() { printf 'infra: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# pid_alive FILE: the pid in FILE names a live process.
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# kafka_jar_set names what deploy/local/kafka/pom.xml fetches: change it with the pom, so a cache
# filled by an older pom is fetched again.
kafka_jar_set=broker+tools
install_kafka() {
  [ -f "$kafka_libs/.complete-$kafka_jar_set" ] && return 0
  command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install maven) and Java 17"
  log "fetching Apache Kafka $KAFKA_VERSION jars into $kafka_libs"
  rm -rf "$kafka_libs"; mkdir -p "$kafka_libs"
  mvn -q -B -Dstyle.color=never -f "$here/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$kafka_libs" >&2 \
    || die "maven could not fetch kafka $KAFKA_VERSION"
  touch "$kafka_libs/.complete-$kafka_jar_set"
}

install_chdb() {
  if [ ! -f "$chdb_dir/.complete" ]; then
    command -v npm >/dev/null || die "npm not found: install Node.js and npm"
    log "fetching $CHDB_NPM_PACKAGE@$CHDB_VERSION (ClickHouse engine, ~180 MB) into $chdb_dir"
    rm -rf "$chdb_dir"; mkdir -p "$chdb_dir/pack"
    (cd "$chdb_dir/pack" && npm pack --silent "$CHDB_NPM_PACKAGE@$CHDB_VERSION" >/dev/null) \
      || die "npm could not fetch $CHDB_NPM_PACKAGE@$CHDB_VERSION"
    tar -xzf "$chdb_dir"/pack/*.tgz -C "$chdb_dir" --strip-components=1 package/libchdb.so
    rm -rf "$chdb_dir/pack"
    touch "$chdb_dir/.complete"
  fi
  mkdir -p "$state/bin"
  if [ ! -x "$chlaunch" ] || [ "$here/chlaunch.c" -nt "$chlaunch" ]; then
    gcc -O2 -Wall -o "$chlaunch" "$here/chlaunch.c" -ldl || die "could not compile chlaunch (is gcc installed?)"
  fi
}

# start_kafka_node DIR PORT CONTROLLER_PORT NODE_ID VOTERS REPLICATION MIN_ISR CLUSTER_ID HEAP:
# one KRaft node (broker and controller) on DIR, formatted on first start, pid in DIR/pid.
start_kafka_node() {
  local dir=$1 port=$2 cport=$3 node=$4 voters=$5 rep=$6 minisr=$7 cluster_id=$8 heap=$9
  if pid_alive "$dir/pid"; then log "kafka node $node already running (pid $(cat "$dir/pid"))"; return 0; fi
  port_busy "$port" && die "port $port is taken by a process this script did not start; stop it or choose other ports (TALLY_KAFKA_PORT, TALLY_KAFKA_CLUSTER_PORT)"
  install_kafka
  mkdir -p "$dir"
  sed -e "s#@STATE@#$dir#g; s#@CONTROLLER_PORT@#$cport#g; s#@PORT@#$port#g; s#@NODE_ID@#$node#g; s#@VOTERS@#$voters#g" \
    -e "s#@REPLICATION@#$rep#g; s#@MIN_ISR@#$minisr#g" \
    "$here/kafka/server.properties.tmpl" > "$dir/server.properties"
  local java_opts=(-cp "$kafka_libs/*" "-Dlog4j2.configurationFile=$here/kafka/log4j2.yaml")
  if [ ! -f "$dir/kafka-data/meta.properties" ]; then
    java "${java_opts[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
      > "$dir/format.log" 2>&1 || die "kafka storage format failed, see $dir/format.log"
  fi
  log "starting kafka $KAFKA_VERSION node $node on 127.0.0.1:$port (log: $dir/kafka.log)"
  nohup java -Xms128m "-Xmx$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    "${java_opts[@]}" kafka.Kafka "$dir/server.properties" >> "$dir/kafka.log" 2>&1 < /dev/null &
  echo $! > "$dir/pid"
}

random_cluster_id() {
  install_kafka
  java -cp "$kafka_libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1
}

start_kafka() {
  local dir="$state/kafka" id=""
  [ -f "$dir/kafka-data/meta.properties" ] || pid_alive "$dir/pid" || id=$(random_cluster_id)
  start_kafka_node "$dir" "$kafka_port" "$kafka_controller_port" 1 "1@127.0.0.1:$kafka_controller_port" 1 1 "$id" "$kafka_heap"
}

# The three-node cluster (cluster-up): nodes 1-3, broker ports $cluster_port+0..2, controller
# ports $cluster_port+100..102, replication factor 3 and min.insync.replicas 2 by default. It runs
# beside the single node, for trying Tally on replicated topics by hand; the tests start their own
# (internal/testinfra.StartCluster).
cluster_port=${TALLY_KAFKA_CLUSTER_PORT:-19092}
cluster_heap=${TALLY_KAFKA_CLUSTER_HEAP:-384m}
cluster_nodes() { echo 1 2 3; }
cluster_brokers() { local n out=""; for n in $(cluster_nodes); do out+="${out:+,}127.0.0.1:$((cluster_port + n - 1))"; done; echo "$out"; }

cluster_up() {
  local n voters="" id=""
  for n in $(cluster_nodes); do voters+="${voters:+,}$n@127.0.0.1:$((cluster_port + 99 + n))"; done
  [ -f "$state/kafka-cluster/node-1/kafka-data/meta.properties" ] || id=$(random_cluster_id)
  for n in $(cluster_nodes); do
    start_kafka_node "$state/kafka-cluster/node-$n" "$((cluster_port + n - 1))" "$((cluster_port + 99 + n))" "$n" "$voters" 3 2 "$id" "$cluster_heap"
  done
  local tally=${TALLY_BIN:-$repo/bin/tally} deadline=$((SECONDS + ${TALLY_UP_TIMEOUT:-180}))
  until cluster_answers "$tally"; do
    for n in $(cluster_nodes); do
      pid_alive "$state/kafka-cluster/node-$n/pid" || die "kafka node $n exited during start; see $state/kafka-cluster/node-$n/kafka.log"
    done
    [ $SECONDS -lt $deadline ] || die "the cluster did not answer within ${TALLY_UP_TIMEOUT:-180}s; see the logs in $state/kafka-cluster"
    sleep 1
  done
  log "ready: a three-node Kafka cluster at $(cluster_brokers); try: bin/tally migrate --kafka-brokers $(cluster_brokers) --replication-factor 3 --min-insync-replicas 2 --skip-clickhouse"
}

# cluster_answers TALLY: every node answers for itself (a ping of the list stops at the first).
cluster_answers() {
  local n
  for n in $(cluster_nodes); do
    "$1" check --quiet --skip-clickhouse --kafka-brokers "127.0.0.1:$((cluster_port + n - 1))" 2>/dev/null || return 1
  done
}

# cluster_down stops the nodes in parallel: stopped one after another, the last one waits for a
# controller quorum that is gone and has to be killed.
cluster_down() {
  local n
  for n in $(cluster_nodes); do
    [ -f "$state/kafka-cluster/node-$n/pid" ] && stop_one "kafka-cluster/node-$n" &
  done
  wait
  return 0
}

start_clickhouse() {
  local dir="$state/clickhouse" pidf="$state/clickhouse/pid"
  if pid_alive "$pidf"; then log "clickhouse already running (pid $(cat "$pidf"))"; return 0; fi
  port_busy "$ch_tcp_port" && die "port $ch_tcp_port is taken by a process this script did not start; stop it or set TALLY_CLICKHOUSE_TCP_PORT"
  install_chdb
  mkdir -p "$dir/data"
  log "starting clickhouse (chDB $CHDB_VERSION) native 127.0.0.1:$ch_tcp_port http 127.0.0.1:$ch_http_port (log: $dir/clickhouse.log)"
  nohup "$chlaunch" "$chdb_lib" "$dir/data" "$ch_tcp_port" "$ch_http_port" 127.0.0.1 \
    "--logger.log=$dir/server.log" --logger.level=warning \
    >> "$dir/clickhouse.log" 2>&1 < /dev/null &
  echo $! > "$pidf"
}

# wait_ready: both services answer for real (tally check: kafka-go metadata, ClickHouse /ping and
# SELECT 1 over the native protocol). The tally binary is built by the Makefile before `up`.
wait_ready() {
  local tally=${TALLY_BIN:-$repo/bin/tally} deadline=$((SECONDS + ${TALLY_UP_TIMEOUT:-180}))
  [ -x "$tally" ] || die "$tally not built; run 'make up' (it builds it first)"
  until "$tally" check --quiet \
      --kafka-brokers "127.0.0.1:$kafka_port" \
      --clickhouse-addr "127.0.0.1:$ch_tcp_port" --clickhouse-http "http://127.0.0.1:$ch_http_port" 2>/dev/null; do
    pid_alive "$state/kafka/pid" || die "kafka exited during start; last lines of $state/kafka/kafka.log:
$(tail -n 20 "$state/kafka/kafka.log" 2>/dev/null)"
    pid_alive "$state/clickhouse/pid" || die "clickhouse exited during start; last lines of its logs:
$(tail -n 20 "$state/clickhouse/clickhouse.log" "$state/clickhouse/server.log" 2>/dev/null)"
    [ $SECONDS -lt $deadline ] || die "services not ready after ${TALLY_UP_TIMEOUT:-180}s; see logs in $state"
    sleep 1
  done
  log "ready: kafka 127.0.0.1:$kafka_port, clickhouse native 127.0.0.1:$ch_tcp_port http 127.0.0.1:$ch_http_port"
}

stop_one() {
  local name=$1 pidf="$state/$1/pid"
  if ! pid_alive "$pidf"; then rm -f "$pidf"; log "$name not running"; return 0; fi
  local pid; pid=$(cat "$pidf")
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "$name did not stop in 30s; killing"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pidf"
}

status() {
  local rc=0
  for name in kafka clickhouse; do
    if pid_alive "$state/$name/pid"; then
      printf '%-11s running  pid %-8s' "$name" "$(cat "$state/$name/pid")"
    else
      printf '%-11s stopped  %-12s' "$name" ""; rc=3
    fi
    case $name in
      kafka) printf 'kafka://127.0.0.1:%s  (Kafka %s)\n' "$kafka_port" "$KAFKA_VERSION" ;;
      clickhouse) printf 'native 127.0.0.1:%s http 127.0.0.1:%s  (chDB %s)\n' "$ch_tcp_port" "$ch_http_port" "$CHDB_VERSION" ;;
    esac
  done
  printf 'state %s\ncache %s\n' "$state" "$cache"
  return $rc
}

case ${1:-} in
  up) mkdir -p "$state"; start_kafka; start_clickhouse; wait_ready ;;
  down) stop_one kafka; stop_one clickhouse; cluster_down ;;
  status) status ;;
  install) install_kafka; install_chdb ;;
  cluster-up) mkdir -p "$state"; cluster_up ;;
  cluster-down) cluster_down ;;
  *) echo "usage: $0 up|down|status|install|cluster-up|cluster-down" >&2; exit 2 ;;
esac
