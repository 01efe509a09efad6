#!/usr/bin/env bash
# Starts a ClickHouse server for netverdict's tests and demo, with its data under
# ${NETVERDICT_CLICKHOUSE_DIR:-/tmp/netverdict-clickhouse}, HTTP on
# ${NETVERDICT_CLICKHOUSE_HTTP_PORT:-8123} (native protocol on
# ${NETVERDICT_CLICKHOUSE_TCP_PORT:-9000}, interserver on
# ${NETVERDICT_CLICKHOUSE_INTERSERVER_PORT:-9009}), and waits until it answers.
# Idempotent: an already answering server is left running. Needs Debian's
# clickhouse-server (scripts/install-deps.sh installs it).
set -euo pipefail

dir=${NETVERDICT_CLICKHOUSE_DIR:-/tmp/netverdict-clickhouse}
http_port=${NETVERDICT_CLICKHOUSE_HTTP_PORT:-8123}
tcp_port=${NETVERDICT_CLICKHOUSE_TCP_PORT:-9000}
interserver_port=${NETVERDICT_CLICKHOUSE_INTERSERVER_PORT:-9009}
url=http://127.0.0.1:$http_port/

if curl -fsS "$url" >/dev/null 2>&1; then
    echo "ClickHouse already answers on $url"
    exit 0
fi
command -v clickhouse-server >/dev/null || {
    echo "clickhouse-server is missing: run scripts/install-deps.sh (apt-get install clickhouse-server clickhouse-client)" >&2
    exit 1
}
mkdir -p "$dir"/{data,tmp,user_files,format_schemas,log}
sed -e "s#/var/lib/clickhouse/tmp/#$dir/tmp/#" \
    -e "s#/var/lib/clickhouse/user_files/#$dir/user_files/#" \
    -e "s#/var/lib/clickhouse/format_schemas/#$dir/format_schemas/#" \
    -e "s#<path>/var/lib/clickhouse/</path>#<path>$dir/data/</path>#" \
    -e "s#/var/log/clickhouse-server/#$dir/log/#g" \
    -e "s#<http_port>8123</http_port>#<http_port>$http_port</http_port>#" \
    -e "s#<tcp_port>9000</tcp_port>#<tcp_port>$tcp_port</tcp_port>#" \
    -e "s#<interserver_http_port>9009</interserver_http_port>#<interserver_http_port>$interserver_port</interserver_http_port>#" \
    -e "s#<listen_host>::1</listen_host>##" \
    /etc/clickhouse-server/config.xml > "$dir/config.xml"
cp /etc/clickhouse-server/users.xml "$dir/users.xml"
# The server runs as root here; ClickHouse 18.16 accepts that. It gets none of
# this script's file descriptors: a caller capturing our output (`$(...)`,
# Python's capture_output) sees it end when we exit, not when the server does.
# `exec` leaves no shell behind waiting for the server with our stdout open.
# Its process id goes to $dir/clickhouse-server.pid (setsid does not fork here:
# the subshell is no process group leader).
(cd "$dir" && exec setsid clickhouse-server --config-file="$dir/config.xml") \
    </dev/null >"$dir/log/stdout.log" 2>&1 &
echo $! >"$dir/clickhouse-server.pid"
for _ in $(seq 1 300); do
    if curl -fsS "$url" >/dev/null 2>&1; then
        echo "ClickHouse answers on $url (data in $dir)"
        exit 0
    fi
    sleep 0.1
done
echo "ClickHouse did not answer on $url within 30 s; its log:" >&2
tail -n 30 "$dir/log/clickhouse-server.err.log" "$dir/log/stdout.log" >&2 || true
exit 1
