#!/usr/bin/env bash
# Starts the real services Shukei's tests and demo need — Apache Kafka (KRaft, combined
# broker+controller) and ClickHouse — on loopback, from packages, without Docker.
#
#   scripts/services.sh up      install what is missing, start both, wait until they answer
#   scripts/services.sh down    stop what this script started (by pid file), nothing else
#   scripts/services.sh status  say what runs and where
#   scripts/services.sh restart-clickhouse
#                               stop the ClickHouse server this script started (by pid file) and
#                               start it again with the same config, wait until it answers
#   scripts/services.sh restart-kafka
#                               the same for the Kafka broker (its log and topics are kept)
#   scripts/services.sh up|down|status --cluster
#                               the same for the cluster instead: ZooKeeper, ClickHouse as two
#                               shards of two replicas, three Kafka brokers (scripts/cluster.sh,
#                               with stop-node, kill-node (SIGKILL) and start-node for one of them,
#                               and replace-node for a ClickHouse node whose disk is lost)
#
# Data and logs live under $SHUKEI_SERVICES_DIR (default: .services/ in the checkout, ignored
# by git). Kafka's jars are cached outside the checkout in $SHUKEI_CACHE_DIR (default
# ~/.cache/shukei) so a new clone does not fetch them again.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${SHUKEI_SERVICES_DIR:-$ROOT/.services}
CACHE=${SHUKEI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shukei}

KAFKA_VERSION=${SHUKEI_KAFKA_VERSION:-4.1.2}
KAFKA_PORT=${SHUKEI_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${SHUKEI_KAFKA_CONTROLLER_PORT:-19093}
KAFKA_HEAP=${SHUKEI_KAFKA_HEAP:-512m}
CH_TCP_PORT=${SHUKEI_CLICKHOUSE_PORT:-19000}
CH_HTTP_PORT=${SHUKEI_CLICKHOUSE_HTTP_PORT:-18123}
CH_INTERSERVER_PORT=${SHUKEI_CLICKHOUSE_INTERSERVER_PORT:-19009}
WAIT_SECONDS=${SHUKEI_SERVICES_WAIT:-90}

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root to run: $* (install it by hand or run as root)"; fi
}

apt_updated=0
apt_install() {
  # Debian's lists may be empty on a new machine: update once, then install.
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    as_root apt-get update -qq >/dev/null
    apt_updated=1
  fi
  log "installing: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ch_server_bin() {
  for b in /usr/bin/clickhouse-server /usr/sbin/clickhouse-server "$(command -v clickhouse-server 2>/dev/null || true)"; do
    [ -n "$b" ] && [ -x "$b" ] && { echo "$b"; return 0; }
  done
  return 1
}

install_packages() {
  local missing=()
  ch_server_bin >/dev/null || missing+=(clickhouse-server)
  command -v clickhouse-client >/dev/null || missing+=(clickhouse-client)
  command -v java >/dev/null || missing+=(default-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v chromium >/dev/null || missing+=(chromium) # the web page's browser test (query/web_test.go)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

# --- Kafka -----------------------------------------------------------------------------------

kafka_libs() { echo "$CACHE/kafka-$KAFKA_VERSION/libs"; }

fetch_kafka() {
  local dir; dir=$(kafka_libs)
  [ -f "$dir/.complete" ] && return 0
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $dir"
  local work; work=$(mktemp -d)
  cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.shukei</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- Kafka logs through slf4j 1.x; without a binding the broker is silent. -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.25.3</version></dependency>
  </dependencies>
</project>
POM
  rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
  (cd "$work" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dir.tmp") \
    || die "mvn could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
  rm -rf "$work" "$dir"; mv "$dir.tmp" "$dir"; touch "$dir/.complete"
}

kafka_dir() { echo "$STATE/kafka"; }

write_kafka_config() {
  local d; d=$(kafka_dir)
  mkdir -p "$d/data" "$d/logs"
  cat >"$d/server.properties" <<PROPS
# Written by scripts/services.sh: one node, broker and controller, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$d/data
num.partitions=6
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
log.retention.hours=168
log.segment.bytes=67108864
PROPS
  cat >"$d/log4j2.yaml" <<'LOG'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
LOG
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_kafka() {
  local d; d=$(kafka_dir)
  if pid_alive "$d/pid"; then log "kafka already running (pid $(cat "$d/pid"))"; return 0; fi
  port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is taken by a process this script did not start; set SHUKEI_KAFKA_PORT"
  fetch_kafka
  write_kafka_config
  local cp; cp="$(kafka_libs)/*"
  if [ ! -f "$d/data/meta.properties" ]; then
    local id; id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
    java -Xmx256m -cp "$cp" kafka.tools.StorageTool format -t "$id" -c "$d/server.properties" >"$d/logs/format.log" 2>&1 \
      || { cat "$d/logs/format.log" >&2; die "kafka storage format failed"; }
  fi
  log "starting kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT"
  nohup java -Xms128m -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$d/log4j2.yaml" -cp "$cp" kafka.Kafka "$d/server.properties" \
    >>"$d/logs/server.log" 2>&1 </dev/null &
  echo $! >"$d/pid"
}

# --- ClickHouse ------------------------------------------------------------------------------

ch_dir() {
  # The server runs as the clickhouse user, which must be able to reach its data directory.
  local d="$STATE/clickhouse"
  if [ "$(id -u)" -eq 0 ] && id clickhouse >/dev/null 2>&1; then
    mkdir -p "$d"
    chown clickhouse: "$d"
    if ! runuser -u clickhouse -- test -w "$d" 2>/dev/null; then
      # A checkout under a private home directory: fall back to a temp folder of our own.
      d="${TMPDIR:-/tmp}/shukei-services-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)/clickhouse"
    fi
  fi
  echo "$d"
}

# write_ch_server_config DIR WHAT TCP HTTP INTERSERVER UNCOMPRESSED_CACHE MARK_CACHE EXTRA_XML:
# a server's config.xml, the single server's and each cluster node's (scripts/cluster.sh).
write_ch_server_config() {
  local d=$1 what=$2 tcp=$3 http=$4 interserver=$5 uncompressed=$6 marks=$7 extra=$8
  mkdir -p "$d/data" "$d/tmp" "$d/user_files" "$d/format_schemas" "$d/log" "$d/users.d"
  cat >"$d/config.xml" <<XML
<?xml version="1.0"?>
<!-- Written by scripts/services.sh: $what. -->
<yandex>
    <logger>
        <level>warning</level>
        <log>$d/log/server.log</log>
        <errorlog>$d/log/server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>$tcp</tcp_port>
    <http_port>$http</http_port>
    <interserver_http_port>$interserver</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>$uncompressed</uncompressed_cache_size>
    <mark_cache_size>$marks</mark_cache_size>
    <path>$d/data/</path>
    <tmp_path>$d/tmp/</tmp_path>
    <user_files_path>$d/user_files/</user_files_path>
    <format_schema_path>$d/format_schemas/</format_schema_path>
    <users_config>$d/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
$extra
</yandex>
XML
}

write_ch_config() {
  local d=$1
  write_ch_server_config "$d" "one ClickHouse server on loopback for Shukei" \
    "$CH_TCP_PORT" "$CH_HTTP_PORT" "$CH_INTERSERVER_PORT" 268435456 536870912 ""
  write_ch_users "$d/users.xml"
}

# write_ch_users FILE: the server's users.xml. users.d/ next to it (merged into it by the
# server) receives the per-purpose read-only users and the roles' users that 'shukei migrate'
# writes.
# write_ch_users FILE [PASSWORD_SHA256]: the server's own users file, its administrator
# `default` (no password on the single server, which only loopback reaches; the cluster's gets
# one, see scripts/cluster.sh).
write_ch_users() {
  local password="<password></password>"
  [ -n "${2:-}" ] && password="<password_sha256_hex>$2</password_sha256_hex>"
  cat >"$1" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
            <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>
        </default>
        <readonly>
            <readonly>1</readonly>
        </readonly>
    </profiles>
    <users>
        <default>
            $password
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
XML
}

start_clickhouse() {
  local d; d=$(ch_dir)
  if pid_alive "$d/pid"; then log "clickhouse already running (pid $(cat "$d/pid"))"; return 0; fi
  port_open "$CH_TCP_PORT" && die "port $CH_TCP_PORT is taken by a process this script did not start; set SHUKEI_CLICKHOUSE_PORT"
  write_ch_config "$d"
  local bin; bin=$(ch_server_bin) || die "clickhouse-server is not installed"
  log "starting clickhouse on 127.0.0.1:$CH_TCP_PORT (native), $CH_HTTP_PORT (http); data in $d"
  rm -f "$d/pid"
  if [ "$(id -u)" -eq 0 ] && id clickhouse >/dev/null 2>&1; then
    chown -R clickhouse: "$d"
    runuser -u clickhouse -- "$bin" --config-file="$d/config.xml" --pid-file="$d/pid" --daemon
  else
    "$bin" --config-file="$d/config.xml" --pid-file="$d/pid" --daemon
  fi
  echo "$d" >"$STATE/clickhouse.dir"
}

# --- waiting, stopping, status ---------------------------------------------------------------

# shellcheck source=scripts/cluster.sh
. "$ROOT/scripts/cluster.sh"

wait_ready() {
  # wait_ready clickhouse waits for ClickHouse alone (Kafka is left as it is).
  local deadline=$(( $(date +%s) + WAIT_SECONDS ))
  local ch_ok=0 kafka_ok=0
  [ "${1:-}" = clickhouse ] && kafka_ok=1
  while [ "$(date +%s)" -lt "$deadline" ]; do
    [ $ch_ok -eq 1 ] || { clickhouse-client --host 127.0.0.1 --port "$CH_TCP_PORT" -q 'SELECT 1' >/dev/null 2>&1 && ch_ok=1; }
    [ $kafka_ok -eq 1 ] || { grep -q 'Kafka Server started' "$(kafka_dir)/logs/server.log" 2>/dev/null && port_open "$KAFKA_PORT" && kafka_ok=1; }
    [ $ch_ok -eq 1 ] && [ $kafka_ok -eq 1 ] && return 0
    [ "${1:-}" = clickhouse ] || pid_alive "$(kafka_dir)/pid" || { tail -n 30 "$(kafka_dir)/logs/server.log" >&2 || true; die "kafka exited during start-up"; }
    sleep 0.5
  done
  [ $ch_ok -eq 1 ] || { tail -n 30 "$(ch_dir)/log/server.err.log" >&2 2>/dev/null || true; die "clickhouse did not answer within ${WAIT_SECONDS}s"; }
  tail -n 30 "$(kafka_dir)/logs/server.log" >&2 || true
  die "kafka did not answer within ${WAIT_SECONDS}s"
}

stop_pid() {
  local name=$1 pidfile=$2
  if ! pid_alive "$pidfile"; then rm -f "$pidfile"; log "$name not running"; return 0; fi
  local pid; pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && { log "$name did not stop in 30s, killing"; kill -KILL "$pid" 2>/dev/null || true; }
  rm -f "$pidfile"
  log "$name stopped"
}

ch_state_dir() { cat "$STATE/clickhouse.dir" 2>/dev/null || echo "$STATE/clickhouse"; }

cmd_status() {
  local rc=0
  if pid_alive "$(kafka_dir)/pid"; then echo "kafka       running  pid $(cat "$(kafka_dir)/pid")  127.0.0.1:$KAFKA_PORT  (Apache Kafka $KAFKA_VERSION, KRaft)"
  else echo "kafka       stopped"; rc=1; fi
  if pid_alive "$(ch_state_dir)/pid"; then echo "clickhouse  running  pid $(cat "$(ch_state_dir)/pid")  127.0.0.1:$CH_TCP_PORT native, 127.0.0.1:$CH_HTTP_PORT http"
  else echo "clickhouse  stopped"; rc=1; fi
  return $rc
}

case "${1:-} ${2:-}" in
  "up --cluster") cluster_up ;;
  "down --cluster") cluster_down ;;
  "status --cluster") cluster_status ;;
  "stop-node "?*) stop_pid "$2" "$(node_pidfile "$2")" ;;
  "replace-node "?*)
    [ -f "$(cluster_dir)/clickhouse.dir" ] || die "the cluster was never started here; use 'up --cluster'"
    replace_cluster_ch "$2"
    wait_nodes "$2"
    ;;
  "kill-node "?*)
    # A crash: SIGKILL, no shutdown (start-node brings it back with its data).
    pidfile=$(node_pidfile "$2")
    if pid_alive "$pidfile"; then kill -KILL "$(cat "$pidfile")"; rm -f "$pidfile"; log "$2 killed"; else log "$2 not running"; fi
    ;;
  "start-node "?*)
    [ -f "$(cluster_dir)/clickhouse.dir" ] || die "the cluster was never started here; use 'up --cluster'"
    start_node "$2"
    wait_nodes "$2"
    ;;
  "up "*)
    mkdir -p "$STATE"
    install_packages
    start_clickhouse
    start_kafka
    wait_ready
    cmd_status
    ;;
  "down "*)
    stop_pid kafka "$(kafka_dir)/pid"
    stop_pid clickhouse "$(ch_state_dir)/pid"
    ;;
  "restart-clickhouse "*)
    # Same data directory and config as the running server: the one recorded at start.
    ch_dir_now=$(ch_state_dir)
    pid_alive "$ch_dir_now/pid" || die "clickhouse is not running under this script (no live pid in $ch_dir_now/pid); use 'up'"
    stop_pid clickhouse "$ch_dir_now/pid"
    ch_dir() { echo "$ch_dir_now"; }
    start_clickhouse
    wait_ready clickhouse
    cmd_status || true
    ;;
  "restart-kafka "*)
    pid_alive "$(kafka_dir)/pid" || die "kafka is not running under this script (no live pid in $(kafka_dir)/pid); use 'up'"
    stop_pid kafka "$(kafka_dir)/pid"
    # The old server.log already says 'Kafka Server started': wait for a new line saying so.
    kafka_log="$(kafka_dir)/logs/server.log"
    started_before=$(grep -c 'Kafka Server started' "$kafka_log" 2>/dev/null || true)
    start_kafka
    deadline=$(( $(date +%s) + WAIT_SECONDS ))
    until [ "$(grep -c 'Kafka Server started' "$kafka_log" 2>/dev/null || true)" -gt "${started_before:-0}" ] && port_open "$KAFKA_PORT"; do
      pid_alive "$(kafka_dir)/pid" || { tail -n 30 "$kafka_log" >&2 || true; die "kafka exited during start-up"; }
      [ "$(date +%s)" -lt "$deadline" ] || { tail -n 30 "$kafka_log" >&2 || true; die "kafka did not answer within ${WAIT_SECONDS}s"; }
      sleep 0.5
    done
    cmd_status || true
    ;;
  "status "*) cmd_status ;;
  *) echo "usage: $0 up|down|status [--cluster] | restart-clickhouse | restart-kafka | stop-node NODE | kill-node NODE | start-node NODE | replace-node NODE" >&2; exit 2 ;;
esac
