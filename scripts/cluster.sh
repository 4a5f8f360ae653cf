# shellcheck shell=bash
# The cluster of scripts/services.sh (sourced by it, with its helpers): Apache ZooKeeper (one
# node, ClickHouse 18.16's replication needs it), ClickHouse as two shards of two replicas each
# (cluster "shukei"), and three Apache Kafka brokers in KRaft mode (each broker and controller),
# every one on loopback, every one its own process with its own pid file so a test can stop or
# kill any of them.
#
#   scripts/services.sh up --cluster       start what is missing, wait until all answer
#   scripts/services.sh down --cluster     stop what this script started
#   scripts/services.sh status --cluster
#   scripts/services.sh stop-node NODE     stop one node (SIGTERM; its data is kept)
#   scripts/services.sh start-node NODE    start it again with the same data, wait until it answers
#
# Nodes: zookeeper, ch-s1r1, ch-s1r2, ch-s2r1, ch-s2r2, kafka-1, kafka-2, kafka-3.
# Ports (each overridable): ZooKeeper 12181; ClickHouse native 19100-19103, http 18200-18203,
# interserver 19110-19113; Kafka brokers 19192-19194, controllers 19195-19197.

ZK_VERSION=${SHUKEI_ZOOKEEPER_VERSION:-3.9.5}
ZK_PORT=${SHUKEI_ZOOKEEPER_PORT:-12181}
CLUSTER_CH_TCP_BASE=${SHUKEI_CLUSTER_CLICKHOUSE_PORT:-19100}
CLUSTER_CH_HTTP_BASE=${SHUKEI_CLUSTER_CLICKHOUSE_HTTP_PORT:-18200}
CLUSTER_CH_INTERSERVER_BASE=${SHUKEI_CLUSTER_CLICKHOUSE_INTERSERVER_PORT:-19110}
CLUSTER_KAFKA_BASE=${SHUKEI_CLUSTER_KAFKA_PORT:-19192}
CLUSTER_KAFKA_CONTROLLER_BASE=${SHUKEI_CLUSTER_KAFKA_CONTROLLER_PORT:-19195}
CLUSTER_KAFKA_HEAP=${SHUKEI_CLUSTER_KAFKA_HEAP:-384m}
CLUSTER_CH_NODES="ch-s1r1 ch-s1r2 ch-s2r1 ch-s2r2"
CLUSTER_KAFKA_NODES="kafka-1 kafka-2 kafka-3"

cluster_dir() { echo "$STATE/cluster"; }

# --- ZooKeeper -------------------------------------------------------------------------------

zk_libs() { echo "$CACHE/zookeeper-$ZK_VERSION/libs"; }

fetch_zookeeper() {
  local dir; dir=$(zk_libs)
  [ -f "$dir/.complete" ] && return 0
  log "fetching Apache ZooKeeper $ZK_VERSION jars from Maven Central into $dir"
  local work; work=$(mktemp -d)
  cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.shukei</groupId><artifactId>zookeeper-server</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.zookeeper</groupId><artifactId>zookeeper</artifactId><version>$ZK_VERSION</version></dependency>
    <!-- The server needs two of ZooKeeper's "provided" dependencies: Dropwizard's metrics and
         snappy (its snapshots); and its logging a binding for slf4j 2, or it is silent. -->
    <dependency><groupId>io.dropwizard.metrics</groupId><artifactId>metrics-core</artifactId><version>4.2.40</version></dependency>
    <dependency><groupId>org.xerial.snappy</groupId><artifactId>snappy-java</artifactId><version>1.1.10.12</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>2.0.13</version></dependency>
  </dependencies>
</project>
POM
  rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
  (cd "$work" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dir.tmp") \
    || die "mvn could not fetch org.apache.zookeeper:zookeeper:$ZK_VERSION"
  rm -rf "$work" "$dir"; mv "$dir.tmp" "$dir"; touch "$dir/.complete"
}

# zk_ok: the server serves requests (ruok answers imok even when it does not).
zk_ok() { (exec 3<>"/dev/tcp/127.0.0.1/$ZK_PORT" && printf stat >&3 && timeout 2 cat <&3) 2>/dev/null | grep -q '^Mode: standalone'; }

start_zookeeper() {
  local d; d=$(cluster_dir)/zookeeper
  if pid_alive "$d/pid"; then log "zookeeper already running (pid $(cat "$d/pid"))"; return 0; fi
  port_open "$ZK_PORT" && die "port $ZK_PORT is taken by a process this script did not start; set SHUKEI_ZOOKEEPER_PORT"
  fetch_zookeeper
  mkdir -p "$d/data" "$d/logs"
  cat >"$d/zoo.cfg" <<CFG
# Written by scripts/services.sh: one ZooKeeper node on loopback for ClickHouse's replication.
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$d/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=200
admin.enableServer=false
4lw.commands.whitelist=ruok,stat
autopurge.purgeInterval=1
CFG
  log "starting zookeeper $ZK_VERSION on 127.0.0.1:$ZK_PORT"
  nohup java -Xms64m -Xmx256m -Djava.awt.headless=true -Dzookeeper.4lw.commands.whitelist='ruok,stat' \
    -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
    -cp "$(zk_libs)/*" org.apache.zookeeper.server.ZooKeeperServerMain "$d/zoo.cfg" \
    >>"$d/logs/server.log" 2>&1 </dev/null &
  echo $! >"$d/pid"
}

# --- ClickHouse: two shards of two replicas ---------------------------------------------------

# ch_node_index ch-s2r1 → 2 (the node's place in CLUSTER_CH_NODES, from 0): its ports' offset.
ch_node_index() {
  local i=0 n
  for n in $CLUSTER_CH_NODES; do [ "$n" = "$1" ] && { echo $i; return 0; }; i=$((i + 1)); done
  die "no ClickHouse node $1 (nodes: $CLUSTER_CH_NODES)"
}
ch_node_port() { echo $((CLUSTER_CH_TCP_BASE + $(ch_node_index "$1"))); }

cluster_ch_base() {
  # As ch_dir: the server runs as the clickhouse user, which must reach its data directory.
  local d; d="$(cluster_dir)/clickhouse"
  if [ "$(id -u)" -eq 0 ] && id clickhouse >/dev/null 2>&1; then
    mkdir -p "$d"; chown clickhouse: "$d" "$(cluster_dir)"
    if ! runuser -u clickhouse -- test -w "$d" 2>/dev/null; then
      d="${TMPDIR:-/tmp}/shukei-services-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)/cluster-clickhouse"
    fi
  fi
  echo "$d"
}

cluster_ch_state() { cat "$(cluster_dir)/clickhouse.dir" 2>/dev/null || echo "$(cluster_dir)/clickhouse"; }

# cluster_password NAME: the generated password NAME (admin: the administrator `default`;
# internal: the user a node logs in as on another, CLUSTER_USER), made once per cluster
# directory and kept there (mode 600) for the tests and the administrator.
cluster_password() {
  local f; f="$(cluster_dir)/$1.password"
  if [ ! -s "$f" ]; then
    mkdir -p "$(cluster_dir)"
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f.tmp") && mv "$f.tmp" "$f"
  fi
  cat "$f"
}

sha256_hex() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# The user a node logs in as when it sends another node a query (a Distributed table's):
# ClickHouse 18.16 cannot pass the initial user on, so this user's rights bound what any such
# query reads. Read-only, allowed no database of its own: 'shukei migrate' grants it the
# databases that hold sharded tables (its <db>-cluster.xml in users.d), nothing else.
CLUSTER_USER=${SHUKEI_CLUSTER_CLICKHOUSE_USER:-shukei_cluster}

write_cluster_user() {
  cat >"$1" <<XML
<?xml version="1.0"?>
<!-- Written by scripts/cluster.sh: the cluster's internal user (remote_servers names it). -->
<yandex>
    <profiles>
        <shukei_cluster_internal>
            <readonly>2</readonly>
        </shukei_cluster_internal>
    </profiles>
    <users>
        <$CLUSTER_USER>
            <password_sha256_hex>$(sha256_hex "$(cluster_password internal)")</password_sha256_hex>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>shukei_cluster_internal</profile>
            <quota>default</quota>
            <allow_databases><system>system</system></allow_databases>
        </$CLUSTER_USER>
    </users>
</yandex>
XML
}

# The cluster as every node sees it: remote_servers and ZooKeeper. No distributed DDL queue:
# 'shukei migrate' runs each statement on the nodes it belongs on, and the queue's worker would
# run any user's ON CLUSTER statement as the server (a CREATE … AS SELECT of any database).
# A node logs in on another as CLUSTER_USER, never as the administrator: remote() naming no
# user (which logs in as `default`) then fails for want of the administrator's password.
cluster_xml() {
  local shard replica port internal; internal=$(cluster_password internal)
  echo "    <remote_servers>"
  echo "        <shukei>"
  for shard in 1 2; do
    echo "            <shard>"
    echo "                <internal_replication>true</internal_replication>"
    for replica in 1 2; do
      port=$(ch_node_port "ch-s${shard}r${replica}")
      echo "                <replica><host>127.0.0.1</host><port>$port</port><user>$CLUSTER_USER</user><password>$internal</password></replica>"
    done
    echo "            </shard>"
  done
  echo "        </shukei>"
  echo "    </remote_servers>"
  echo "    <zookeeper><node><host>127.0.0.1</host><port>$ZK_PORT</port></node><session_timeout_ms>10000</session_timeout_ms></zookeeper>"
  # Replicas fetch parts from each other over the interserver port: without credentials it hands
  # any replicated part to any HTTP request, url() from a role's query included.
  echo "    <interserver_http_credentials><user>shukei_interserver</user><password>$(cluster_password interserver)</password></interserver_http_credentials>"
}

write_cluster_ch_config() {
  local node=$1 d=$2 i; i=$(ch_node_index "$node")
  local shard=${node#ch-s}; shard=${shard%r*}
  local replica=${node#*r}
  local extra
  extra="    <macros>
        <cluster>shukei</cluster>
        <shard>$shard</shard>
        <replica>r$replica</replica>
    </macros>
$(cluster_xml)"
  write_ch_server_config "$d" "node $node of the ClickHouse cluster \"shukei\" (2 shards x 2 replicas), loopback" \
    $((CLUSTER_CH_TCP_BASE + i)) $((CLUSTER_CH_HTTP_BASE + i)) $((CLUSTER_CH_INTERSERVER_BASE + i)) 134217728 268435456 "$extra"
  write_ch_users "$d/users.xml" "$(sha256_hex "$(cluster_password admin)")"
  write_cluster_user "$d/users.d/shukei-cluster-user.xml"
}

start_cluster_ch() {
  local node=$1 base d; base=$(cluster_ch_state); d="$base/$node"
  if pid_alive "$d/pid"; then log "$node already running (pid $(cat "$d/pid"))"; return 0; fi
  local port; port=$(ch_node_port "$node")
  port_open "$port" && die "port $port is taken by a process this script did not start; set SHUKEI_CLUSTER_CLICKHOUSE_PORT"
  write_cluster_ch_config "$node" "$d"
  local bin; bin=$(ch_server_bin) || die "clickhouse-server is not installed"
  log "starting clickhouse $node on 127.0.0.1:$port"
  rm -f "$d/pid"
  if [ "$(id -u)" -eq 0 ] && id clickhouse >/dev/null 2>&1; then
    chown -R clickhouse: "$d"
    runuser -u clickhouse -- "$bin" --config-file="$d/config.xml" --pid-file="$d/pid" --daemon
  else
    "$bin" --config-file="$d/config.xml" --pid-file="$d/pid" --daemon
  fi
}

# replace_cluster_ch NODE: the node's disk is lost and a new server takes its place, the way
# ClickHouse recovers a replica after a complete data loss (docs/CLUSTER.md, "Replacing a
# replica"): stop it, delete its data, copy the table definitions (metadata/, whose macros are
# unexpanded) and Shukei's users files from the other replica of its shard, set
# flags/force_restore_data, start it: every replicated table fetches its parts from the others.
replace_cluster_ch() {
  local node=$1 base peer; base=$(cluster_ch_state)
  case "$node" in
    ch-s1r1) peer=ch-s1r2 ;; ch-s1r2) peer=ch-s1r1 ;;
    ch-s2r1) peer=ch-s2r2 ;; ch-s2r2) peer=ch-s2r1 ;;
    *) die "no ClickHouse node $node (nodes: $CLUSTER_CH_NODES)" ;;
  esac
  pid_alive "$base/$peer/pid" || die "$peer, the other replica of $node's shard, is not running: nothing to restore from"
  stop_pid "$node" "$base/$node/pid"
  rm -rf "${base:?}/$node/data"
  mkdir -p "$base/$node/data/metadata" "$base/$node/data/flags"
  local f
  for f in "$base/$peer/data/metadata"/*; do
    case "$(basename "$f")" in system|system.sql) continue ;; esac
    cp -a "$f" "$base/$node/data/metadata/"
  done
  for f in "$base/$peer/users.d"/*; do [ -e "$f" ] && cp -a "$f" "$base/$node/users.d/"; done
  touch "$base/$node/data/flags/force_restore_data"
  log "$node: data deleted; table definitions copied from $peer, force_restore_data set"
  start_cluster_ch "$node"
}

# --- Kafka: three brokers, each also a controller ----------------------------------------------

kafka_node_index() {
  local i=0 n
  for n in $CLUSTER_KAFKA_NODES; do [ "$n" = "$1" ] && { echo $i; return 0; }; i=$((i + 1)); done
  die "no Kafka node $1 (nodes: $CLUSTER_KAFKA_NODES)"
}

cluster_kafka_brokers() {
  local i out=""
  for i in 0 1 2; do out="$out${out:+,}127.0.0.1:$((CLUSTER_KAFKA_BASE + i))"; done
  echo "$out"
}

write_cluster_kafka_config() {
  local node=$1 d=$2 i; i=$(kafka_node_index "$node")
  local voters="" j
  for j in 0 1 2; do voters="$voters${voters:+,}$((j + 1))@127.0.0.1:$((CLUSTER_KAFKA_CONTROLLER_BASE + j))"; done
  mkdir -p "$d/data" "$d/logs"
  cat >"$d/server.properties" <<PROPS
# Written by scripts/services.sh: broker and controller $((i + 1)) of three, loopback only.
process.roles=broker,controller
node.id=$((i + 1))
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$((CLUSTER_KAFKA_BASE + i)),CONTROLLER://127.0.0.1:$((CLUSTER_KAFKA_CONTROLLER_BASE + i))
advertised.listeners=PLAINTEXT://127.0.0.1:$((CLUSTER_KAFKA_BASE + i))
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$d/data
num.partitions=6
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
log.retention.hours=168
log.segment.bytes=67108864
PROPS
  # The single broker's logging: warnings, and the line that says the server started.
  local single; single=$(kafka_dir)
  if [ -f "$single/log4j2.yaml" ]; then cp "$single/log4j2.yaml" "$d/log4j2.yaml"; else
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
  fi
}

start_cluster_kafka() {
  local node=$1 d; d="$(cluster_dir)/$node"
  if pid_alive "$d/pid"; then log "$node already running (pid $(cat "$d/pid"))"; return 0; fi
  local i port; i=$(kafka_node_index "$node"); port=$((CLUSTER_KAFKA_BASE + i))
  port_open "$port" && die "port $port is taken by a process this script did not start; set SHUKEI_CLUSTER_KAFKA_PORT"
  fetch_kafka
  write_cluster_kafka_config "$node" "$d"
  local cp; cp="$(kafka_libs)/*"
  if [ ! -f "$d/data/meta.properties" ]; then
    # One cluster id for the three, chosen by the first node formatted.
    local idfile; idfile="$(cluster_dir)/kafka.cluster-id"
    [ -f "$idfile" ] || java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1 >"$idfile"
    java -Xmx256m -cp "$cp" kafka.tools.StorageTool format -t "$(cat "$idfile")" -c "$d/server.properties" >"$d/logs/format.log" 2>&1 \
      || { cat "$d/logs/format.log" >&2; die "kafka storage format of $node failed"; }
  fi
  log "starting kafka $node on 127.0.0.1:$port"
  nohup java -Xms128m -Xmx"$CLUSTER_KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$d/log4j2.yaml" -cp "$cp" kafka.Kafka "$d/server.properties" \
    >>"$d/logs/server.log" 2>&1 </dev/null &
  echo $! >"$d/pid"
}

# --- waiting, stopping, status -----------------------------------------------------------------

node_pidfile() {
  case "$1" in
    zookeeper) echo "$(cluster_dir)/zookeeper/pid" ;;
    ch-*) ch_node_index "$1" >/dev/null; echo "$(cluster_ch_state)/$1/pid" ;;
    kafka-*) kafka_node_index "$1" >/dev/null; echo "$(cluster_dir)/$1/pid" ;;
    *) die "no node $1 (nodes: zookeeper $CLUSTER_CH_NODES $CLUSTER_KAFKA_NODES)" ;;
  esac
}

# node_ready NODE: it answers (ClickHouse: a query; Kafka: its log says it started since the
# given line count, and its port is open; ZooKeeper: ruok).
node_ready() {
  case "$1" in
    zookeeper) zk_ok ;;
    ch-*) clickhouse-client --host 127.0.0.1 --port "$(ch_node_port "$1")" --password "$(cluster_password admin)" -q 'SELECT 1' >/dev/null 2>&1 ;;
    kafka-*)
      local log; log="$(cluster_dir)/$1/logs/server.log"
      [ "$(grep -c 'Kafka Server started' "$log" 2>/dev/null || true)" -gt "${2:-0}" ] \
        && port_open $((CLUSTER_KAFKA_BASE + $(kafka_node_index "$1"))) ;;
  esac
}

wait_nodes() {
  local deadline=$(( $(date +%s) + WAIT_SECONDS )) node pending
  while :; do
    pending=""
    for node in "$@"; do
      node_ready "$node" "$(cat "$(cluster_dir)/.started-$node" 2>/dev/null || echo 0)" || pending="$pending $node"
    done
    [ -z "$pending" ] && return 0
    for node in $pending; do
      # ClickHouse writes its pid file after it daemonised: no file yet is still starting.
      local pidfile; pidfile=$(node_pidfile "$node")
      [ -f "$pidfile" ] && ! pid_alive "$pidfile" && { node_log "$node" >&2; die "$node exited during start-up"; }
    done
    [ "$(date +%s)" -lt "$deadline" ] || { for node in $pending; do node_log "$node" >&2; done; die "did not answer within ${WAIT_SECONDS}s:$pending"; }
    sleep 0.5
  done
}

node_log() {
  case "$1" in
    zookeeper) tail -n 30 "$(cluster_dir)/zookeeper/logs/server.log" 2>/dev/null || true ;;
    ch-*) tail -n 30 "$(cluster_ch_state)/$1/log/server.err.log" 2>/dev/null || true ;;
    kafka-*) tail -n 30 "$(cluster_dir)/$1/logs/server.log" 2>/dev/null || true ;;
  esac
}

start_node() {
  local node=$1
  # A Kafka node's log may already say it started: remember how often, to wait for a new line
  # (none if it runs already).
  case "$node" in kafka-*)
    local seen=0
    pid_alive "$(node_pidfile "$node")" || seen=$(grep -c 'Kafka Server started' "$(cluster_dir)/$node/logs/server.log" 2>/dev/null || true)
    echo "${seen:-0}" >"$(cluster_dir)/.started-$node" ;;
  esac
  case "$node" in
    zookeeper) start_zookeeper ;;
    ch-*) start_cluster_ch "$node" ;;
    kafka-*) start_cluster_kafka "$node" ;;
    *) node_pidfile "$node" >/dev/null ;;
  esac
}

cluster_up() {
  mkdir -p "$(cluster_dir)"
  install_packages
  local base; base=$(cluster_ch_base); echo "$base" >"$(cluster_dir)/clickhouse.dir"
  local node
  start_node zookeeper
  wait_nodes zookeeper
  for node in $CLUSTER_CH_NODES $CLUSTER_KAFKA_NODES; do start_node "$node"; done
  wait_nodes $CLUSTER_CH_NODES $CLUSTER_KAFKA_NODES
  cluster_status
}

cluster_down() {
  local node pidfile
  # The brokers stop together: the last controller left alone waits for a quorum to shut down.
  for node in $CLUSTER_KAFKA_NODES; do
    pidfile=$(node_pidfile "$node")
    pid_alive "$pidfile" && kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  done
  for node in $CLUSTER_KAFKA_NODES $CLUSTER_CH_NODES zookeeper; do stop_pid "$node" "$(node_pidfile "$node")"; done
}

cluster_status() {
  local rc=0 node pidfile where
  for node in zookeeper $CLUSTER_CH_NODES $CLUSTER_KAFKA_NODES; do
    pidfile=$(node_pidfile "$node")
    case "$node" in
      zookeeper) where="127.0.0.1:$ZK_PORT (Apache ZooKeeper $ZK_VERSION)" ;;
      ch-*) where="127.0.0.1:$(ch_node_port "$node") native (cluster shukei, shard ${node:4:1}, replica r${node:6:1})" ;;
      kafka-*) where="127.0.0.1:$((CLUSTER_KAFKA_BASE + $(kafka_node_index "$node"))) (Apache Kafka $KAFKA_VERSION, KRaft, 3 voters)" ;;
    esac
    if pid_alive "$pidfile"; then printf '%-11s running  pid %-7s %s\n' "$node" "$(cat "$pidfile")" "$where"
    else printf '%-11s stopped\n' "$node"; rc=1; fi
  done
  echo "brokers: $(cluster_kafka_brokers)"
  echo "clickhouse administrator: default, password in $(cluster_dir)/admin.password"
  return $rc
}
