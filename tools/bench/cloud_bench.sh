#!/bin/sh
# cloud_bench.sh: meter-cloud's read path under load (docs/benchmarks.md, "Cloud").
#
#   tools/bench/cloud_bench.sh BUILD_DIR [RUN_DIR]
#
# Loads 10 meters x 1 year of 1-minute readings through the store API (cloud_bench; skipped
# when RUN_DIR already holds the store), starts meter-cloud on it (no broker needed: it keeps
# trying to connect), logs in, then measures with wrk (Debian package wrk): the usage of a
# year in day buckets, a year's power series (800 points), and the KPI endpoint with the
# KPI cache on (default) and off (rollup.kpi_cache_ms 0), rotating over the 10 meters.
# Prints p50/p99 latency, requests/s and meter-cloud's peak resident memory. Not a test.
# Environment: DURATION (s per run, default 10), CONNS (default 16), THREADS (default 2).
set -eu

BUILD=$(cd "${1:?usage: cloud_bench.sh BUILD_DIR [RUN_DIR]}" && pwd)
RUN=${2:-/tmp/meterlink-cloud-bench}
DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
THREADS=${THREADS:-2}
mkdir -p "$RUN"
command -v wrk >/dev/null || { echo "cloud_bench.sh: wrk is missing (apt-get install wrk)" >&2; exit 1; }

if [ ! -f "$RUN/cloud.db" ]; then
    "$BUILD/tools/bench/cloud_bench" "$RUN/cloud.db" 10 365
fi
du -h "$RUN/cloud.db" | awk '{print "store file: " $1}'

# the admin is made on the store's first start: keep its password with the store
if [ ! -s "$RUN/admin.pw" ]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$RUN/admin.pw")
fi
PASSWORD=$(cat "$RUN/admin.pw")
PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -f "$RUN/kpi.lua"
}
trap cleanup EXIT INT TERM

start_cloud() { # $1: kpi_cache_ms
    cat >"$RUN/cloud.json" <<EOC
{"mqtt": {"host": "127.0.0.1", "port": 1},
 "http": {"bind": "127.0.0.1", "port": 0, "port_file": "$RUN/http.port"},
 "store": {"path": "$RUN/cloud.db"},
 "auth": {"pbkdf2_iterations": 1000},
 "rollup": {"raw_days": 400, "m5_days": 400, "kpi_cache_ms": $1}}
EOC
    rm -f "$RUN/http.port"
    MLK_ADMIN_USER=bench MLK_ADMIN_PASSWORD=$PASSWORD \
        "$BUILD/cloud/meter-cloud" -d -f "$RUN/cloud.json" 2>"$RUN/cloud.log" &
    PID=$!
    for _ in $(seq 100); do
        [ -s "$RUN/http.port" ] && break
        sleep 0.1
    done
    PORT=$(cat "$RUN/http.port")
    BASE="http://127.0.0.1:$PORT"
    TOKEN=$(curl -sf -X POST -H 'Content-Type: application/json' \
        -d "{\"username\":\"bench\",\"password\":\"$PASSWORD\"}" "$BASE/api/v1/login" |
        sed 's/.*"token":"\([^"]*\)".*/\1/')
}

stop_cloud() {
    kill "$PID"
    wait "$PID" || true
    PID=
}

# peak VmRSS of meter-cloud while $@ runs
with_rss() {
    peak=0
    "$@" >"$RUN/wrk.out" &
    w=$!
    while kill -0 "$w" 2>/dev/null; do
        r=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
        [ "$r" -gt "$peak" ] && peak=$r
        sleep 0.2
    done
    wait "$w"
}

report() { # $1: name
    p50=$(awk '$1 == "50%" {print $2}' "$RUN/wrk.out")
    p99=$(awk '$1 == "99%" {print $2}' "$RUN/wrk.out")
    rps=$(awk '/^Requests\/sec/ {print $2}' "$RUN/wrk.out")
    errs=$(awk '/Non-2xx/ {print $5}' "$RUN/wrk.out")
    printf '| %s | %s | %s | %s | %s MB | %s |\n' "$1" "$p50" "$p99" "$rps" \
        "$((peak / 1024))" "${errs:-0}"
}

run() { # $1: name, $2: path or -s script
    name=$1
    shift
    if [ "$1" = "-s" ]; then
        with_rss wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$2" \
            -H "Authorization: Bearer $TOKEN" "$BASE/"
    else
        curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "$BASE$1" ||
            { echo "cloud_bench.sh: GET $1 failed" >&2; exit 1; }
        with_rss wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency \
            -H "Authorization: Bearer $TOKEN" "$BASE$1"
    fi
    report "$name"
}

cat >"$RUN/kpi.lua" <<'EOL'
-- KPI of the 10 meters in turn
local i = 0
request = function()
    i = i + 1
    return wrk.format("GET", string.format("/api/v1/meters/m%02d/kpi", i % 10))
end
EOL

YEAR_FROM=$(date -u -d '-365 days' +%Y-%m-%d)
echo "| request | p50 | p99 | requests/s | meter-cloud RSS (peak) | non-2xx |"
echo "|---|--:|--:|--:|--:|--:|"
start_cloud 1000
run "usage: a year in day buckets (m01)" "/api/v1/meters/m01/usage?period=day&from=$YEAR_FROM"
run "series: a year of power, 800 points (m01)" \
    "/api/v1/meters/m01/series?quantity=power&from=$YEAR_FROM&points=800"
run "series: a day of power, raw (m01)" "/api/v1/meters/m01/series?quantity=power"
run "KPI, one meter (m01), cache on" "/api/v1/meters/m01/kpi"
run "KPI, 10 meters in turn, cache on" -s "$RUN/kpi.lua"
run "KPI of the prepaid meter (m00), cache on" "/api/v1/meters/m00/kpi"
stop_cloud
start_cloud 0
run "KPI, one meter (m01), cache off" "/api/v1/meters/m01/kpi"
run "KPI, 10 meters in turn, cache off" -s "$RUN/kpi.lua"
stop_cloud
