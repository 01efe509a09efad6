#!/usr/bin/env bash
# Starts a ClickHouse cluster on this machine for netverdict's cluster test and
# benchmark: one ZooKeeper (Debian's `zookeeper` package) and 2 shards x 2
# replicas, four clickhouse-server processes, each with its own ports and data
# directory under ${NETVERDICT_CLUSTER_DIR:-/tmp/netverdict-clickhouse-cluster},
# in the cluster `${NETVERDICT_CLUSTER_NAME:-netverdict}` (macros {shard} = 1|2,
# {replica} = r1|r2, distributed DDL on), and `<name>_one_shard` (shard 1
# alone). Waits until every server answers.
#
# Ports from ${NETVERDICT_CLUSTER_PORT_BASE:-19100} (B): ZooKeeper's clientPort is
# B; server s<shard>r<replica> (number n = 2*(shard-1)+replica, 1..4) has HTTP
# on B+10n+1, native TCP on B+10n+2 and interserver HTTP on B+10n+3. It never
# touches the shared server on 8123. Prints one line per server:
# `server <name> shard <s> replica <r> http <port> tcp <port> pid <pid>`.
# Each process's id is in <dir>/<name>/pid; scripts/stop-clickhouse-cluster.sh
# stops them all (and `stop-clickhouse-cluster.sh <dir> <name>` one of them).
# Needs clickhouse-server and zookeeper (scripts/install-deps.sh installs both).
set -euo pipefail

dir=${NETVERDICT_CLUSTER_DIR:-/tmp/netverdict-clickhouse-cluster}
cluster=${NETVERDICT_CLUSTER_NAME:-netverdict}
base=${NETVERDICT_CLUSTER_PORT_BASE:-19100}
zk_port=$base

command -v clickhouse-server >/dev/null || {
    echo "clickhouse-server is missing: run scripts/install-deps.sh (apt-get install clickhouse-server clickhouse-client)" >&2
    exit 1
}
[ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null || {
    echo "ZooKeeper is missing: run scripts/install-deps.sh (apt-get install zookeeper)" >&2
    exit 1
}
mkdir -p "$dir"

# Waits up to $2 tenths of a second for the command "$1" to succeed.
wait_for() {
    for _ in $(seq 1 "$2"); do
        if eval "$1" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

# ZooKeeper: standalone, its own data dir and client port, no admin server.
zk=$dir/zookeeper
mkdir -p "$zk/data" "$zk/log"
cat >"$zk/zoo.cfg" <<EOF
tickTime=500
initLimit=10
syncLimit=5
dataDir=$zk/data
clientPort=$zk_port
clientPortAddress=127.0.0.1
admin.enableServer=false
maxClientCnxns=200
4lw.commands.whitelist=stat
EOF
# Serving sessions, not only listening (`ruok` answers before that; a
# ClickHouse 18.16 server whose first ZooKeeper handshake fails keeps a broken
# distributed DDL worker, and crashes on its next ON CLUSTER query).
zk_ok() { echo stat | timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$zk_port; cat >&3; cat <&3" 2>/dev/null | grep -q '^Mode: standalone'; }
if ! zk_ok; then
    # The server gets none of our file descriptors (see start-clickhouse.sh).
    (cd "$zk" && exec setsid java -Xmx256m -Dzookeeper.log.dir="$zk/log" \
        -Dzookeeper.root.logger=INFO,CONSOLE \
        -cp "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar" \
        org.apache.zookeeper.server.quorum.QuorumPeerMain "$zk/zoo.cfg") \
        </dev/null >"$zk/log/stdout.log" 2>&1 &
    echo $! >"$zk/pid"
    if ! wait_for zk_ok 600; then
        echo "ZooKeeper did not answer on 127.0.0.1:$zk_port within 60 s; its log:" >&2
        tail -n 30 "$zk/log/stdout.log" >&2 || true
        exit 1
    fi
fi
echo "zookeeper port $zk_port pid $(cat "$zk/pid" 2>/dev/null || echo '?')"

# The cluster's servers, as `name shard replica http tcp interserver`.
servers=()
for shard in 1 2; do
    for replica in 1 2; do
        n=$((2 * (shard - 1) + replica))
        servers+=("s${shard}r${replica} $shard $replica $((base + 10 * n + 1)) $((base + 10 * n + 2)) $((base + 10 * n + 3))")
    done
done

# The cluster, and `<cluster>_one_shard` (shard 1's two replicas alone: the
# benchmark's one-shard figure).
remote_servers=""
one_shard=""
for shard in 1 2; do
    remote_servers+="<shard><internal_replication>true</internal_replication>"
    for s in "${servers[@]}"; do
        read -r _ sh _ _ tcp _ <<<"$s"
        [ "$sh" = "$shard" ] && remote_servers+="<replica><host>127.0.0.1</host><port>$tcp</port></replica>"
        [ "$sh" = 1 ] && [ "$shard" = 1 ] && one_shard+="<replica><host>127.0.0.1</host><port>$tcp</port></replica>"
    done
    remote_servers+="</shard>"
done
one_shard="<shard><internal_replication>true</internal_replication>$one_shard</shard>"

for s in "${servers[@]}"; do
    read -r name shard replica http tcp interserver <<<"$s"
    d=$dir/$name
    mkdir -p "$d"/{data,tmp,user_files,format_schemas,log}
    # What the main config includes (include_from): ZooKeeper, macros, the cluster.
    cat >"$d/cluster.xml" <<EOF
<yandex>
  <zookeeper-servers><node><host>127.0.0.1</host><port>$zk_port</port></node></zookeeper-servers>
  <macros><shard>$shard</shard><replica>r$replica</replica><cluster>$cluster</cluster></macros>
  <clickhouse_remote_servers><$cluster>$remote_servers</$cluster><${cluster}_one_shard>$one_shard</${cluster}_one_shard></clickhouse_remote_servers>
</yandex>
EOF
    sed -e "s#/var/lib/clickhouse/tmp/#$d/tmp/#" \
        -e "s#/var/lib/clickhouse/user_files/#$d/user_files/#" \
        -e "s#/var/lib/clickhouse/format_schemas/#$d/format_schemas/#" \
        -e "s#<path>/var/lib/clickhouse/</path>#<path>$d/data/</path>#" \
        -e "s#/var/log/clickhouse-server/#$d/log/#g" \
        -e "s#<http_port>8123</http_port>#<http_port>$http</http_port>#" \
        -e "s#<tcp_port>9000</tcp_port>#<tcp_port>$tcp</tcp_port>#" \
        -e "s#<interserver_http_port>9009</interserver_http_port>#<interserver_http_port>$interserver</interserver_http_port><interserver_http_host>127.0.0.1</interserver_http_host>#" \
        -e "s#<listen_host>::1</listen_host>##" \
        -e "s#</yandex>#<include_from>$d/cluster.xml</include_from></yandex>#" \
        /etc/clickhouse-server/config.xml >"$d/config.xml"
    cp /etc/clickhouse-server/users.xml "$d/users.xml"
    if curl -fsS "http://127.0.0.1:$http/" >/dev/null 2>&1; then
        continue
    fi
    (cd "$d" && exec setsid clickhouse-server --config-file="$d/config.xml") \
        </dev/null >"$d/log/stdout.log" 2>&1 &
    echo $! >"$d/pid"
done

for s in "${servers[@]}"; do
    read -r name shard replica http tcp _ <<<"$s"
    if ! wait_for "curl -fsS http://127.0.0.1:$http/" 300; then
        echo "ClickHouse $name did not answer on 127.0.0.1:$http within 30 s; its log:" >&2
        tail -n 30 "$dir/$name/log/clickhouse-server.err.log" "$dir/$name/log/stdout.log" >&2 || true
        exit 1
    fi
    echo "server $name shard $shard replica $replica http $http tcp $tcp pid $(cat "$dir/$name/pid")"
done
# Every server sees ZooKeeper (replicated tables and ON CLUSTER need it).
for s in "${servers[@]}"; do
    read -r name _ _ http _ _ <<<"$s"
    if ! wait_for "curl -fsS --data-binary 'SELECT count() FROM system.zookeeper WHERE path = '\''/'\''' http://127.0.0.1:$http/" 300; then
        echo "ClickHouse $name does not reach ZooKeeper on 127.0.0.1:$zk_port" >&2
        exit 1
    fi
done
echo "cluster $cluster ready (data in $dir)"
