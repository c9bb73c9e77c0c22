#!/usr/bin/env bash
# bench/run.sh — oauthrelay against Postfix, same machine, same run.
#
#   sudo bench/run.sh            (root: it installs Postfix and runs a private instance)
#
# What it does, in one invocation (about 3-5 minutes):
#   1. installs postfix from Debian if smtp-source is missing (debconf
#      preseeded to "No configuration"; the system's own Postfix is neither
#      configured nor started), builds oauthrelay and bench/loadgen;
#   2. starts a private Postfix instance (config and queue under the work
#      directory) on 127.0.0.1:10025, with its default queue durability
#      (cleanup fsyncs every queue file before smtpd answers 250) and
#      default_transport = discard, so its queue drains at once;
#   3. starts the Microsoft 365 emulator (`oauthrelay emulator -unlimited`)
#      and, for each phase, a fresh oauthrelay on 127.0.0.1:2525 (or
#      BENCH_RELAY_PORT) with its
#      spool in the work directory (same filesystem as Postfix's queue);
#   4. runs, alternating Postfix and oauthrelay:
#        accept   smtp-source -s 8 -l 4096 -m 5000, one message per
#                 connection, then many per connection (-d);
#        latency  bench/loadgen at a fixed offered load: DATA's dot → 250;
#      then, oauthrelay only:
#        drain    10,000 spooled messages, 20 mailboxes (2 apps), into the
#                 emulator with its limits lifted, twice: over SMTP AUTH
#                 (3 connections a mailbox), then over Microsoft Graph
#                 sendMail (transport = "graph", 4 requests a mailbox, the
#                 emulator's Graph listener as graph_url); for each, rate,
#                 CPU and peak RSS of the relay, upstream connections (TLS
#                 handshakes), token requests, delivered count, CPU profile;
#        drain2   the SMTP AUTH drain with [cluster] redis set: a fresh
#                 Debian redis-server (installed if missing) on a free loopback port (no
#                 persistence, its files in the work directory), first
#                 one relay (node a) with all 10,000 messages, to price
#                 Redis alone, then two relays (nodes a and b, each its own
#                 spool, SMTP port and /metrics on free loopback ports)
#                 with 5,000 each, spread over the same 20 mailboxes, so
#                 that they share every mailbox's 3 connections through
#                 leases; the clock runs from when the first relay is up until
#                 both spools are empty; rate, CPU of the relays and of
#                 redis-server, Redis round trips per message
#                 (oauthrelay_cluster_redis_round_trips_total summed over
#                 the relays, heartbeats included), waits for a budget the
#                 other node held, and whether a relay fell back;
#        memory   one 35 MB message end to end; 1,000 idle connections;
#   5. prints one table, and stops everything it started.
#
# During accept, oauthrelay's mailboxes keep Exchange Online's default pace
# (30 messages a minute each), so it delivers a handful of messages into the
# emulator; Postfix delivers everything to its discard transport.
#
# Environment: BENCH_DIR (work directory, default a new /var/tmp dir, kept
# for inspection), BENCH_N (messages per accept phase, default 5000),
# BENCH_RATE (latency offered load, default 200/s), BENCH_DRAIN_N
# (messages per drain, default 10000), BENCH_REPS (accept
# rounds, default 3; the table shows medians), BENCH_KEEP=1 (keep the work
# directory), BENCH_RELAY_PORT (the relay's port, default 2525; other
# programs on the machine must not use it meanwhile), BENCH_BASELINE_BIN (another oauthrelay binary, e.g. built from
# an older commit, run in the accept rounds too for a before/after).
# BENCH_PHASES (default all) runs only the phases named, comma-separated:
# accept, latency, drain (SMTP AUTH), graph-drain, drain2, memory; e.g.
# BENCH_PHASES=drain,drain2 (Postfix is only installed and set up for
# accept and latency) or BENCH_PHASES=latency,drain. The table shows
# the phases run.
# The baseline also runs the latency phase and the SMTP drain, for a
# before/after in one run; its drain needs that build's loadgen (the spool
# is filled directly, in the baseline's format): BENCH_BASELINE_LOADGEN, or
# BENCH_BASELINE_REV (a git revision of this repository, e.g. 7dfc8da) to
# build both from it (then BENCH_BASELINE_BIN need not be set).
set -euo pipefail
export LC_ALL=C

# Phases, as BENCH_PHASES names them; checked before anything starts.
ALL_PHASES="accept latency drain graph-drain drain2 memory"
PHASES=$(tr ' ' ',' <<<"${BENCH_PHASES:-all}")
for p in ${PHASES//,/ }; do
	if [ "$p" != all ] && [[ " $ALL_PHASES " != *" $p "* ]]; then
		echo "bench: BENCH_PHASES names \"$p\", which is no phase; use all or some of: ${ALL_PHASES// /,}" >&2
		exit 2
	fi
done
on() { [[ ",$PHASES," == *,all,* || ",$PHASES," == *",$1,"* ]]; } # phase
# Postfix and the first emulator serve only the phases that compare with Postfix.
postfix_phases() { on accept || on latency; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${BENCH_N:-5000}
RATE=${BENCH_RATE:-200}
DRAIN_N=${BENCH_DRAIN_N:-10000}
REPS=${BENCH_REPS:-3}
W=${BENCH_DIR:-$(mktemp -d /var/tmp/oauthrelay-bench.XXXXXX)}
mkdir -p "$W"
# mktemp makes the directory 0700; Postfix's daemons run as user postfix
# and must reach their queue inside it.
chmod 755 "$W"
RELAY_PORT=${BENCH_RELAY_PORT:-2525}
PF_PORT=10025
PIDS=()
PF_CONF=$W/postfix-etc
log() { printf '%s  %s\n' "$(date +%T)" "$*" >&2; }
# forget PID: a process that was stopped and reaped leaves the cleanup list,
# or cleanup could signal whatever process reuses its number.
forget() {
	local keep=() p
	for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

cleanup() {
	set +e
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	[ -f "$PF_CONF/main.cf" ] && postfix -c "$PF_CONF" stop >/dev/null 2>&1
	if [ "${BENCH_KEEP:-0}" != 1 ] && [ -z "${BENCH_DIR:-}" ]; then rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. tools ---------------------------------------------------------------
export PATH=$PATH:/usr/sbin:/sbin:/usr/local/go/bin
if postfix_phases && ! command -v smtp-source >/dev/null; then
	log "installing postfix (brings smtp-source and smtp-sink)"
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix >/dev/null
fi
if on drain2 && ! command -v redis-server >/dev/null; then
	log "installing redis-server (the relays of drain2 share their budgets through it)"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends redis-server >/dev/null
fi
command -v go >/dev/null || { echo "bench: Go is needed to build oauthrelay" >&2; exit 1; }
log "building oauthrelay and loadgen into $W"
(cd "$ROOT" && go build -o "$W/oauthrelay" ./cmd/oauthrelay && go build -o "$W/loadgen" ./bench/loadgen)
R=$W/oauthrelay
LG=$W/loadgen

# build_baseline rev: the baseline's oauthrelay and loadgen from a git
# revision, exported with git archive (no worktree left behind).
build_baseline() {
	local src=$W/base-src
	mkdir -p "$src"
	git -C "$ROOT" archive "$1" | tar -x -C "$src"
	(cd "$src" && go build -o "$W/oauthrelay-base" ./cmd/oauthrelay && go build -o "$W/loadgen-base" ./bench/loadgen)
	rm -rf "$src"
	BENCH_BASELINE_BIN=$W/oauthrelay-base
	BENCH_BASELINE_LOADGEN=$W/loadgen-base
}
if [ -n "${BENCH_BASELINE_REV:-}" ]; then
	log "building the baseline ($BENCH_BASELINE_REV) into $W"
	build_baseline "$BENCH_BASELINE_REV"
fi

wait_port() { # host port
	for _ in $(seq 1 200); do
		(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "bench: nothing listens on $1:$2" >&2
	return 1
}
kv() { # key "k=v k=v..." → v
	tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"
}

# --- 2. Postfix ---------------------------------------------------------------
if postfix_phases; then # (not indented, to keep the diff small)
log "configuring a private Postfix instance on 127.0.0.1:$PF_PORT"
mkdir -p "$PF_CONF" "$W/pf-queue" "$W/pf-data"
cp /etc/postfix/master.cf "$PF_CONF/master.cf"
cp /etc/postfix/postfix-files "$PF_CONF/" 2>/dev/null || true
[ -d /etc/postfix/postfix-files.d ] && cp -r /etc/postfix/postfix-files.d "$PF_CONF/"
cat >"$PF_CONF/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $W/pf-queue
data_directory = $W/pf-data
myhostname = bench.localdomain
mydomain = localdomain
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# Every recipient is remote; mail from mynetworks is relayed to the
# discard transport, so the queue empties as fast as qmgr runs.
default_transport = discard
relay_transport = discard
local_recipient_maps =
alias_maps =
alias_database =
maillog_file = $W/postfix.log
biff = no
smtpd_banner = \$myhostname ESMTP
EOF
# Only our listener; no chroot (the private instance has no chroot tree).
postconf -c "$PF_CONF" -MX smtp/inet >/dev/null
postconf -c "$PF_CONF" -M "127.0.0.1:$PF_PORT/inet=127.0.0.1:$PF_PORT inet n - n - - smtpd"
postconf -c "$PF_CONF" -F '*/*/chroot = n'
postfix -c "$PF_CONF" set-permissions >/dev/null 2>&1 || true
postfix -c "$PF_CONF" check 2>&1 | grep -v warning || true
if ! postfix -c "$PF_CONF" start >"$W/postfix-start.log" 2>&1; then
	log "Postfix did not start:"; cat "$W/postfix-start.log" >&2; exit 1
fi
wait_port 127.0.0.1 $PF_PORT
PF_MASTER=$(tr -d ' ' <"$W/pf-queue/pid/master.pid")
fi
pf_drained() {
	for _ in $(seq 1 600); do
		[ -z "$(find "$W/pf-queue/incoming" "$W/pf-queue/active" "$W/pf-queue/maildrop" -type f 2>/dev/null | head -1)" ] && return 0
		sleep 0.1
	done
	log "warning: Postfix's queue did not drain"
}

# --- 3. emulator and relay --------------------------------------------------
T1=11111111-1111-1111-1111-111111111111
C1=aaaaaaaa-1111-1111-1111-111111111111
T2=22222222-2222-2222-2222-222222222222
C2=bbbbbbbb-2222-2222-2222-222222222222
MBX_A=$(for i in $(seq 0 9); do printf ',mbx%d@bench.example' "$i"; done)
MBX_B=$(for i in $(seq 10 19); do printf ',mbx%d@bench.example' "$i"; done)
EMU_PID=
emu_start() { # name
	"$R" emulator -unlimited -ca-out "$W/emu-ca.pem" \
		-provision "$T1,$C1,bench-secret-1$MBX_A" -provision "$T2,$C2,bench-secret-2$MBX_B" \
		>"$W/$1.out" 2>"$W/$1.err" &
	EMU_PID=$!
	PIDS+=("$EMU_PID")
	for _ in $(seq 1 100); do grep -q '^running' "$W/$1.out" 2>/dev/null && break; sleep 0.05; done
	EMU_AUTH=$(awk '$1=="authority"{print $2}' "$W/$1.out")
	EMU_SMTP=$(awk '$1=="smtp"{print $2}' "$W/$1.out")
	EMU_GRAPH=$(awk '$1=="graph"{print $2}' "$W/$1.out")
	if [ -z "$EMU_SMTP" ]; then
		log "the emulator did not start; see $W/$1.err:"; cat "$W/$1.err" >&2; exit 1
	fi
}
emu_stop() {
	kill -TERM "$EMU_PID"
	wait "$EMU_PID" 2>/dev/null || true
	forget "$EMU_PID"
}
# emu_stats name → "tokens smtp_conns delivered graph_requests graph_conns"
# from the emulator's last line, "stopped: T token requests, C SMTP
# connections, D messages delivered (G by Graph), R Graph requests, H Graph
# connections, V HVE connections (time)".
emu_stats() {
	sed -n 's/^stopped: \([0-9]*\) token requests, \([0-9]*\) SMTP connections, \([0-9]*\) messages delivered ([0-9]* by Graph), \([0-9]*\) Graph requests, \([0-9]*\) Graph connections.*/\1 \2 \3 \4 \5/p' "$W/$1.out"
}
# emu_graph_statuses name → "202=9990 429=10": Graph answers by HTTP status
# (0 counts requests aborted without an answer).
emu_graph_statuses() {
	sed -n 's/^graph statuses: //p' "$W/$1.out"
}

RELAY_PID=
# RELAY_TRANSPORT is the mailboxes' transport for the next relay_start:
# "smtp" (the default; 3 connections a mailbox) or "graph" (sendMail to the
# emulator's Graph listener; 4 concurrent requests a mailbox, Graph's limit).
RELAY_TRANSPORT=smtp
relay_start() { # name per_minute spooldir binary [env...]
	local name=$1 perMin=$2 spool=$3 bin=$4
	shift 4
	local cfg=$W/$name.toml conns=3 graphURL=
	if [ "$RELAY_TRANSPORT" = graph ]; then conns=4; graphURL="graph_url = \"$EMU_GRAPH\""; fi
	{
		cat <<EOF
[listen]
address = "127.0.0.1:$RELAY_PORT"
hostname = "relay.bench"
max_message_size = "36MB"
max_connections = 2000
# Every benchmark client is 127.0.0.1: the per-address limits (default 200)
# would refuse the idle phase's 1,000 connections after the 200th.
max_connections_per_ip = 2000
max_connections_per_trusted_ip = 2000
[spool]
dir = "$spool"
[upstream]
address = "$EMU_SMTP"
$graphURL
ca_file = "$W/emu-ca.pem"
[log]
level = "info"
[[app]]
name = "a"
tenant_id = "$T1"
client_id = "$C1"
client_secret = "bench-secret-1"
authority = "$EMU_AUTH"
[[app]]
name = "b"
tenant_id = "$T2"
client_id = "$C2"
client_secret = "bench-secret-2"
authority = "$EMU_AUTH"
[[client]]
name = "bench"
networks = ["127.0.0.1/32"]
senders = ["*"]
EOF
		for i in $(seq 0 19); do
			app=a; [ "$i" -ge 10 ] && app=b
			printf '[[mailbox]]\naddress = "mbx%d@bench.example"\napp = "%s"\ntransport = "%s"\nmax_per_minute = %d\nmax_connections = %d\n' \
				"$i" "$app" "$RELAY_TRANSPORT" "$perMin" "$conns"
		done
		# RELAY_EXTRA: more tables for this relay ([metrics], [cluster]).
		printf '%s\n' "${RELAY_EXTRA:-}"
	} >"$cfg"
	if (exec 3<>"/dev/tcp/127.0.0.1/$RELAY_PORT") 2>/dev/null; then
		echo "bench: something else listens on 127.0.0.1:$RELAY_PORT; set BENCH_RELAY_PORT" >&2
		exit 1
	fi
	env "$@" "$bin" serve -config "$cfg" 2>"$W/$name.log" &
	RELAY_PID=$!
	PIDS+=("$RELAY_PID")
	wait_port 127.0.0.1 $RELAY_PORT
	# What answers must be this relay, not another program that took the port.
	for _ in $(seq 1 100); do grep -q 'oauthrelay listening' "$W/$name.log" && return 0; sleep 0.05; done
	echo "bench: the relay did not start; see $W/$name.log:" >&2
	cat "$W/$name.log" >&2
	exit 1
}
relay_stop() {
	kill -TERM "$RELAY_PID" 2>/dev/null || true
	wait "$RELAY_PID" 2>/dev/null || true
	forget "$RELAY_PID"
}

if postfix_phases; then
emu_start emu
log "emulator: authority $EMU_AUTH smtp $EMU_SMTP"
fi

# --- 4. the loads -------------------------------------------------------------
FROM=mbx0@bench.example
TO=rcpt@dest.example
RESULTS=$W/results
: >"$RESULTS"
rec() { echo "$1 $2" >>"$RESULTS"; } # key value
# med key: the median of the values recorded under key ("-" when none).
med() {
	awk -v k="$1" '$1==k{print $2}' "$RESULTS" | sort -g |
		awk '{a[NR]=$1} END{ if (NR==0) print "-"; else print a[int((NR+1)/2)] }'
}
# record sys phase "elapsed=.. cpu=.. peak_kb=.."
rec_accept() {
	rec "$1.$2.rate" "$(awk -v n="$N" -v e="$(kv elapsed "$3")" 'BEGIN{printf "%.0f", n/e}')"
	rec "$1.$2.cpu" "$(kv cpu "$3")"
	rec "$1.$2.mem" "$(awk -v k="$(kv peak_kb "$3")" 'BEGIN{printf "%.1f", k/1024}')"
}

accept_postfix() { # phase smtp-source-flags
	$LG latency -addr 127.0.0.1:$PF_PORT -rate 100 -duration 1s -from $FROM -to $TO >/dev/null # warm up
	pf_drained
	local out
	out=$($LG measure -pid "$PF_MASTER" -tree -- smtp-source -s 8 -l 4096 -m "$N" $2 -f $FROM -t $TO -M bench.localdomain 127.0.0.1:$PF_PORT)
	rec_accept pf "$1" "$out"
	pf_drained
	log "  postfix     $1: $out"
}
accept_relay() { # sys phase smtp-source-flags binary
	relay_start "relay-$2" 30 "$W/spool-$1-$2-$rep" "$4"
	$LG latency -addr 127.0.0.1:$RELAY_PORT -rate 100 -duration 1s -from $FROM -to $TO >/dev/null # warm up
	local out
	out=$($LG measure -pid "$RELAY_PID" -- smtp-source -s 8 -l 4096 -m "$N" $3 -f $FROM -t $TO -M bench.localdomain 127.0.0.1:$RELAY_PORT)
	rec_accept "$1" "$2" "$out"
	relay_stop
	rm -rf "$W/spool-$1-$2-$rep"
	log "  $(printf %-11s "$1") $2: $out"
}
latency() { # sys port
	local out
	out=$($LG latency -addr 127.0.0.1:"$2" -rate "$RATE" -duration 10s -from $FROM -to $TO)
	rec "$1.p50" "$(kv p50_ms "$out")"
	rec "$1.p99" "$(kv p99_ms "$out")"
	rec "$1.achieved" "$(kv achieved "$out")"
	log "  $(printf %-11s "$1") latency: $out"
}
# latency_baseline: the latency phase against the baseline build, if any.
latency_baseline() {
	[ -n "${BENCH_BASELINE_BIN:-}" ] || return 0
	relay_start relay-lat-base 30 "$W/spool-lat-base" "$BENCH_BASELINE_BIN"
	latency base $RELAY_PORT
	relay_stop
}
SYSTEMS="or"
[ -n "${BENCH_BASELINE_BIN:-}" ] && SYSTEMS="or base"
# Each phase is a function, run below when BENCH_PHASES names it (their
# bodies are not indented, to keep the diff small).
phase_accept() {
for rep in $(seq 1 "$REPS"); do
	log "accept, round $rep of $REPS: smtp-source -s 8 -l 4096 -m $N, one message per connection, then -d"
	for ph in conn keep; do
		flags=""; [ $ph = keep ] && flags=-d
		accept_postfix $ph "$flags"
		for sys in $SYSTEMS; do
			bin=$R; [ $sys = base ] && bin=$BENCH_BASELINE_BIN
			accept_relay $sys $ph "$flags" "$bin"
		done
	done
done
}
phase_latency() {
log "latency at $RATE msg/s offered, 16 connections, 10 s"
latency pf $PF_PORT
pf_drained
relay_start relay-lat 30 "$W/spool-lat" "$R"
latency or $RELAY_PORT
relay_stop
latency_baseline
}
if on accept; then phase_accept; fi
if on latency; then phase_latency; fi
if postfix_phases; then
postfix -c "$PF_CONF" stop >/dev/null 2>&1 || true
emu_stop
fi

# drain name transport [binary loadgen]: spool DRAIN_N messages for the 20
# mailboxes, start a fresh emulator and a relay whose mailboxes use
# transport, and time the spool's emptying. Records drain.<transport>.* for
# the table (drain.base.<transport>.* when another binary, and the loadgen
# that writes its spool format, are given); the
# emulator's output is $W/emu-<name>.out, the relay's log $W/relay-<name>.log,
# its CPU profile $W/<name>.pprof.
drain() {
	local name=$1 tr=$2 out pr bin=${3:-$R} lg=${4:-$LG} key=$2
	[ -n "${3:-}" ] && key=base.$2
	log "drain ($tr): spooling $DRAIN_N messages for 20 mailboxes"
	emu_start "emu-$name"
	$lg fill -spool "$W/spool-$name" -n "$DRAIN_N" -mailboxes 20 -domain bench.example >/dev/null
	RELAY_TRANSPORT=$tr relay_start "relay-$name" 1000000 "$W/spool-$name" "$bin" OAUTHRELAY_CPUPROFILE="$W/$name.pprof"
	if ! out=$($lg spoolwait -spool "$W/spool-$name" -timeout 4m); then
		log "warning: the $tr drain did not finish in 4 minutes"
		out="elapsed=-"
	fi
	pr=$($LG proc -pid "$RELAY_PID")
	kill -USR1 "$RELAY_PID"
	sleep 0.5
	relay_stop
	rec "drain.$key.emucpu" "$(kv cpu "$($LG proc -pid "$EMU_PID")")"
	emu_stop
	local tok conn deliv greq gconn
	read -r tok conn deliv greq gconn <<<"$(emu_stats "emu-$name")"
	if [ "$tr" = graph ]; then conn=$gconn; fi
	rec "drain.$key.rate" "$(awk -v n="$DRAIN_N" -v e="$(kv elapsed "$out")" 'BEGIN{ if (e+0>0) printf "%.0f", n/e; else print "-" }')"
	rec "drain.$key.cpu" "$(kv cpu "$pr")"
	rec "drain.$key.mem" "$(awk -v k="$(kv mem_kb "$pr")" 'BEGIN{printf "%.1f", k/1024}')"
	rec "drain.$key.tok" "$tok"
	rec "drain.$key.conn" "$conn"
	rec "drain.$key.deliv" "$deliv"
	rec "drain.$key.req" "$greq"
	rec "drain.$key.left" "$(find "$W/spool-$name"/{incoming,active,deferred,hold} -type f 2>/dev/null | wc -l)"
	rec "drain.$key.failed" "$(find "$W/spool-$name/failed" -type f 2>/dev/null | wc -l)"
	rec "drain.$key.warn" "$(grep -c 'level=WARN\|level=ERROR' "$W/relay-$name.log" || true)"
	go tool pprof -top -nodecount=25 "$bin" "$W/$name.pprof" >"$W/$name-top.txt" 2>/dev/null || true
	log "drain ($tr): $out $pr tokens=$tok conns=$conn delivered=$deliv graph_requests=$greq graph_statuses=$(emu_graph_statuses "emu-$name")"
}
# drain_baseline: the SMTP drain with the baseline build, when there is a
# loadgen that writes its spool.
drain_baseline() {
	[ -n "${BENCH_BASELINE_BIN:-}" ] || return 0
	if [ -z "${BENCH_BASELINE_LOADGEN:-}" ]; then
		log "no baseline drain: set BENCH_BASELINE_LOADGEN (a loadgen built with the baseline) or BENCH_BASELINE_REV"
		return 0
	fi
	drain base-drain smtp "$BENCH_BASELINE_BIN" "$BENCH_BASELINE_LOADGEN"
}
if on drain; then drain drain smtp; drain_baseline; fi
if on graph-drain; then drain graph-drain graph; fi

# --- drain2: the drain with Redis, one relay, then two ------------------------
# free_ports n: n distinct loopback ports nothing listens on, picked at
# random below Linux's ephemeral range (where outgoing connections take
# theirs) and never the relay's or Postfix's fixed port.
free_ports() {
	local got=" " p tries=0
	while [ "$(wc -w <<<"$got")" -lt "$1" ]; do
		tries=$((tries + 1))
		if [ $tries -gt 1000 ]; then echo "bench: found no free loopback port" >&2; return 1; fi
		p=$((20000 + RANDOM % 12000))
		if [[ "$got" == *" $p "* || $p = "$RELAY_PORT" || $p = "$PF_PORT" ]]; then continue; fi
		if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
		got="$got$p "
	done
	echo $got
}
# metric addr name: the sum of a metric's samples (every label set; 0 when
# it has none yet, as a counter vector without labels) on the relay's
# /metrics at addr, or "-" when the relay did not answer. Plain bash, no curl.
metric() {
	local body
	body=$( (exec 3<>"/dev/tcp/${1%:*}/${1##*:}" && printf 'GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n' "$1" >&3 && cat <&3) 2>/dev/null) || true
	if ! grep -q '^HTTP/1.. 200' <<<"$body"; then echo -; return; fi
	awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f", s }' <<<"$body"
}
# delivered_span log: "first last", the times (seconds since the epoch) of
# the first and the last delivery in a relay's log; empty when none.
delivered_span() {
	local t
	for t in $(awk '/msg=delivered/ { t = $1; sub(/^time=/, "", t); if (!f) f = t; l = t } END { if (f) print f, l }' "$1"); do
		date -d "$t" +%s.%N
	done | tr '\n' ' '
}
plus() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "-" || b == "-") print "-"; else print a + b }'; }
REDIS_PID=
REDIS_URL=
redis_start() { # name: a fresh redis-server, no persistence, files in $W/name
	local port
	port=$(free_ports 1)
	mkdir -p "$W/$1"
	redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$W/$1" >"$W/$1.log" 2>&1 &
	REDIS_PID=$!
	PIDS+=("$REDIS_PID")
	if ! wait_port 127.0.0.1 "$port"; then
		log "redis-server did not start; see $W/$1.log:"; cat "$W/$1.log" >&2; exit 1
	fi
	REDIS_URL="redis://127.0.0.1:$port/0"
}
redis_stop() {
	kill -TERM "$REDIS_PID" 2>/dev/null || true
	wait "$REDIS_PID" 2>/dev/null || true
	forget "$REDIS_PID"
}

# drain_cluster name nodes: the SMTP AUTH drain of DRAIN_N messages by
# `nodes` relays (1 or 2: nodes a, b) that share one fresh redis-server
# through [cluster] redis. The messages are split between the relays' own
# spools, each share spread over all 20 mailboxes (max_connections 3, as in
# the one-node drain), so two relays take turns with every mailbox's
# connections through leases (the table shows how long both delivered at
# once, and each node's count). The clock starts when the first relay is up
# (as the one-node drain's does: it delivers from then) and stops when
# every spool is empty. Records drain2.<nodes>.* for the table; node a's
# CPU profile is $W/<name>.pprof.
drain_cluster() {
	local name=$1 nodes=$2 i n node maddr t0='' t1 pr st=ok tok conn deliv greq gconn
	local cpu=0 mem=0 trips=0 waits=0 seen=- fb=0 warn=0 left=0 failed=0 split='' lo=0 hi=9999999999
	local -a ports=() pids=() maddrs=() spools=() logs=() span=()
	log "drain with Redis, $nodes relay(s): spooling $DRAIN_N messages for 20 mailboxes"
	emu_start "emu-$name"
	redis_start "redis-$name"
	for i in $(seq 1 "$nodes"); do
		n=$((DRAIN_N / nodes))
		if [ "$i" -le $((DRAIN_N % nodes)) ]; then n=$((n + 1)); fi
		spools+=("$W/spool-$name-$i")
		$LG fill -spool "$W/spool-$name-$i" -n "$n" -mailboxes 20 -domain bench.example >/dev/null
	done
	read -r -a ports <<<"$(free_ports $((2 * nodes)))"
	for i in $(seq 1 "$nodes"); do
		node=$(cut -d' ' -f"$i" <<<"a b")
		maddr=127.0.0.1:${ports[2 * i - 1]}
		maddrs+=("$maddr")
		logs+=("$W/relay-$name-$node.log")
		RELAY_PORT=${ports[2 * i - 2]} RELAY_EXTRA=$(printf '[metrics]\naddress = "%s"\n[cluster]\nredis = "%s"\nnode = "%s"' "$maddr" "$REDIS_URL" "$node") \
			relay_start "relay-$name-$node" 1000000 "${spools[i - 1]}" "$R" OAUTHRELAY_CPUPROFILE="$W/$name-$node.pprof"
		pids+=("$RELAY_PID")
		if [ -z "$t0" ]; then t0=$(date +%s.%N); fi
	done
	for i in "${!spools[@]}"; do
		if ! $LG spoolwait -spool "${spools[i]}" -timeout 4m >/dev/null; then st=timeout; fi
	done
	t1=$(date +%s.%N)
	[ $st = ok ] || log "warning: the drain with Redis ($nodes relays) did not finish in 4 minutes"
	seen=$(metric "${maddrs[0]}" oauthrelay_cluster_nodes)
	for i in "${!pids[@]}"; do
		pr=$($LG proc -pid "${pids[i]}")
		cpu=$(plus "$cpu" "$(kv cpu "$pr")")
		mem=$(awk -v a="$mem" -v b="$(kv mem_kb "$pr")" 'BEGIN{ print (b > a ? b : a) }')
		trips=$(plus "$trips" "$(metric "${maddrs[i]}" oauthrelay_cluster_redis_round_trips_total)")
		waits=$(plus "$waits" "$(metric "${maddrs[i]}" oauthrelay_cluster_waits_total)")
		kill -USR1 "${pids[i]}"
	done
	sleep 0.5 # the profiles are written
	for i in "${!pids[@]}"; do
		RELAY_PID=${pids[i]} relay_stop
		fb=$((fb + $(grep -c 'budgets fallback' "${logs[i]}" || true)))
		warn=$((warn + $(grep -c 'level=WARN\|level=ERROR' "${logs[i]}" || true)))
		left=$((left + $(find "${spools[i]}"/{incoming,active,deferred,hold} -type f 2>/dev/null | wc -l)))
		failed=$((failed + $(find "${spools[i]}/failed" -type f 2>/dev/null | wc -l)))
		split=$split${split:+/}$(grep -c 'msg=delivered' "${logs[i]}" || true)
		# lo..hi: the time every relay was delivering (its first to its last delivery).
		read -r -a span <<<"$(delivered_span "${logs[i]}")"
		if [ ${#span[@]} = 2 ]; then
			lo=$(awk -v a="$lo" -v b="${span[0]}" 'BEGIN{ print (b > a ? b : a) }')
			hi=$(awk -v a="$hi" -v b="${span[1]}" 'BEGIN{ print (b < a ? b : a) }')
		fi
	done
	rec "drain2.$nodes.split" "$split"
	if [ "$nodes" -gt 1 ]; then
		rec "drain2.$nodes.overlap" "$(awk -v a="$lo" -v b="$hi" 'BEGIN{ printf "%.1f", (b > a ? b - a : 0) }')"
	fi
	rec "drain2.$nodes.rediscpu" "$(kv cpu "$($LG proc -pid "$REDIS_PID")")"
	redis_stop
	rec "drain2.$nodes.emucpu" "$(kv cpu "$($LG proc -pid "$EMU_PID")")"
	emu_stop
	read -r tok conn deliv greq gconn <<<"$(emu_stats "emu-$name")"
	rec "drain2.$nodes.rate" "$(awk -v n="$DRAIN_N" -v a="$t0" -v b="$t1" -v st=$st 'BEGIN{ if (st == "ok") printf "%.0f", n/(b-a); else print "-" }')"
	rec "drain2.$nodes.cpu" "$cpu"
	rec "drain2.$nodes.mem" "$(awk -v k="$mem" 'BEGIN{printf "%.1f", k/1024}')"
	rec "drain2.$nodes.tok" "$tok"
	rec "drain2.$nodes.conn" "$conn"
	rec "drain2.$nodes.deliv" "$deliv"
	rec "drain2.$nodes.left" "$left"
	rec "drain2.$nodes.failed" "$failed"
	rec "drain2.$nodes.trips" "$trips"
	rec "drain2.$nodes.tpm" "$(awk -v t="$trips" -v d="$deliv" 'BEGIN{ if (t != "-" && d > 0) printf "%.1f", t/d; else print "-" }')"
	rec "drain2.$nodes.waits" "$waits"
	rec "drain2.$nodes.seen" "$seen"
	rec "drain2.$nodes.fb" "$fb"
	rec "drain2.$nodes.warn" "$warn"
	go tool pprof -top -nodecount=25 "$R" "$W/$name-a.pprof" >"$W/$name-top.txt" 2>/dev/null || true
	log "drain with Redis, $nodes relay(s): $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "elapsed=%.3f", b-a}') cpu=$cpu delivered=$deliv conns=$conn tokens=$tok redis_round_trips=$trips waits=$waits nodes_seen=$seen fallback_lines=$fb"
}
phase_drain2() {
	drain_cluster drain-redis1 1
	drain_cluster drain-redis2 2
}
if on drain2; then phase_drain2; fi

phase_memory() {
log "memory: one 35 MB message end to end"
emu_start emu-mem
relay_start relay-big 1000000 "$W/spool-big" "$R"
BIG=$($LG big -addr 127.0.0.1:$RELAY_PORT -size 35000000 -from $FROM -to $TO)
$LG spoolwait -spool "$W/spool-big" -timeout 2m >/dev/null
BIG_KB=$($LG proc -pid "$RELAY_PID")
relay_stop
log "big: $BIG $BIG_KB"

log "memory: 1,000 idle connections"
relay_start relay-idle 30 "$W/spool-idle" "$R"
mkfifo "$W/idle.in"
$LG idle -addr 127.0.0.1:$RELAY_PORT -n 1000 -hold 60s <"$W/idle.in" >"$W/idle.out" &
IDLE_PID=$!
PIDS+=("$IDLE_PID")
exec 4>"$W/idle.in"
for _ in $(seq 1 300); do grep -q '^open=' "$W/idle.out" && break; sleep 0.1; done
grep -q '^open=1000$' "$W/idle.out" || { echo "bench: the idle phase did not open 1,000 connections (see above)" >&2; exit 1; }
sleep 1
IDLE_KB=$($LG proc -pid "$RELAY_PID")
exec 4>&-
wait "$IDLE_PID" || true
relay_stop
emu_stop emu-mem
log "idle: $(cat "$W/idle.out") $IDLE_KB"
}
if on memory; then phase_memory; fi

# --- 5. the table -------------------------------------------------------------
# The baseline's rows; ratios are this build's over the baseline's.
table_latency_baseline() {
	[ -n "${BENCH_BASELINE_BIN:-}" ] || return 0
	row "  baseline build: p50 ms" "" "$(med base.p50)" "$(ratio "$(med or.p50)" "$(med base.p50)")"
	row "  baseline build: p99 ms" "" "$(med base.p99)" "$(ratio "$(med or.p99)" "$(med base.p99)")"
}
table_drain_baseline() {
	[ -n "$(med drain.base.smtp.rate | tr -d -)" ] || return 0
	local cpm base_cpm
	cpm=$(awk -v c="$(med drain.smtp.cpu)" -v n="$DRAIN_N" 'BEGIN{ if (c!="-") printf "%.3f", c*1000/n; else print "-" }')
	base_cpm=$(awk -v c="$(med drain.base.smtp.cpu)" -v n="$DRAIN_N" 'BEGIN{ if (c!="-") printf "%.3f", c*1000/n; else print "-" }')
	echo "drain over SMTP AUTH, this build against the baseline build (ratio: this / baseline)"
	row "" "baseline" "this build" "ratio"
	row "  messages/s" "$(med drain.base.smtp.rate)" "$(med drain.smtp.rate)" "$(ratio "$(med drain.smtp.rate)" "$(med drain.base.smtp.rate)")"
	row "  relay CPU seconds" "$(med drain.base.smtp.cpu)" "$(med drain.smtp.cpu)" "$(ratio "$(med drain.smtp.cpu)" "$(med drain.base.smtp.cpu)")"
	row "  relay CPU ms per message" "$base_cpm" "$cpm" "$(ratio "$cpm" "$base_cpm")"
	row "  relay peak RSS (VmHWM), MB" "$(med drain.base.smtp.mem)" "$(med drain.smtp.mem)" ""
	row "  delivered (emulator's count)" "$(med drain.base.smtp.deliv)" "$(med drain.smtp.deliv)" ""
	row "  left in the spool (not delivered)" "$(med drain.base.smtp.left)" "$(med drain.smtp.left)" ""
}
mb() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a!="-" && b>0) printf "%.2fx", a/b; else print "-" }'; }
row() { printf '%-36s %12s %12s %9s\n' "$@"; }
echo
echo "oauthrelay vs Postfix $(postconf -d -h mail_version 2>/dev/null): $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GB", $2/1048576}' /proc/meminfo) RAM, Linux $(uname -r), spool and queue on $(df -T "$W" | awk 'NR==2{print $2}'); median of $REPS rounds"
echo
# Each section shows when its phase ran (not indented, to keep the diff small).
if postfix_phases; then row "" "Postfix" "oauthrelay" "ratio"; fi
if on accept; then
for ph in conn keep; do
	if [ $ph = conn ]; then echo "accept, 1 message per connection"; else echo "accept, many per connection (-d)"; fi
	row "  messages/s" "$(med pf.$ph.rate)" "$(med or.$ph.rate)" "$(ratio "$(med or.$ph.rate)" "$(med pf.$ph.rate)")"
	row "  CPU seconds for $N messages" "$(med pf.$ph.cpu)" "$(med or.$ph.cpu)" "$(ratio "$(med or.$ph.cpu)" "$(med pf.$ph.cpu)")"
	row "  peak memory, MB (*)" "$(med pf.$ph.mem)" "$(med or.$ph.mem)" "$(ratio "$(med or.$ph.mem)" "$(med pf.$ph.mem)")"
	if [ -n "${BENCH_BASELINE_BIN:-}" ]; then
		row "  baseline build: messages/s" "" "$(med base.$ph.rate)" ""
		row "  baseline build: CPU seconds" "" "$(med base.$ph.cpu)" ""
	fi
done
fi
if on latency; then
echo "latency, DATA's dot to 250, $RATE msg/s offered"
row "  p50 ms" "$(med pf.p50)" "$(med or.p50)" "$(ratio "$(med or.p50)" "$(med pf.p50)")"
row "  p99 ms" "$(med pf.p99)" "$(med or.p99)" "$(ratio "$(med or.p99)" "$(med pf.p99)")"
row "  achieved messages/s" "$(med pf.achieved)" "$(med or.achieved)" ""
table_latency_baseline
fi
if on drain || on graph-drain; then
echo "drain, $DRAIN_N messages, 20 mailboxes, 2 apps, into the emulator"
row "" "SMTP AUTH" "Graph" ""
d() { row "  $1" "$(med "drain.smtp.$2")" "$(med "drain.graph.$2")" ""; }
d "messages/s" rate
d "delivered (emulator's count)" deliv
d "left in the spool (not delivered)" left
d "failed (bounced)" failed
d "token requests (one per app: 2)" tok
d "connections (TLS handshakes)" conn
row "  messages per connection" \
	"$(awk -v d="$(med drain.smtp.deliv)" -v c="$(med drain.smtp.conn)" 'BEGIN{ if (c>0) printf "%.0f", d/c; else print "-" }')" \
	"(see below)" ""
row "  Graph requests" "" "$(med drain.graph.req)" ""
d "relay CPU seconds" cpu
d "emulator CPU seconds (same 2 cores)" emucpu
d "relay peak RSS (VmHWM), MB" mem
d "relay log lines at WARN/ERROR" warn
table_drain_baseline
fi
if on graph-drain; then
echo "  Graph answers by HTTP status: $(emu_graph_statuses emu-graph-drain)"
echo "  Graph connections: $(sed -n 's/^graph connections: //p' "$W/emu-graph-drain.out")"
fi
if on drain2; then
echo "drain with Redis ([cluster] redis), SMTP AUTH, $DRAIN_N messages, 20 mailboxes of 3 connections"
echo "  (two nodes: $((DRAIN_N / 2)) messages in each relay's spool; the relays share each mailbox's connections)"
row3() { printf '%-44s %10s %13s %14s\n' "$@"; }
row3 "" "1 node" "1 node+Redis" "2 nodes+Redis"
d3() { row3 "  $1" "$(med "drain.smtp.$2")" "$(med "drain2.1.$2")" "$(med "drain2.2.$2")"; }
per_msg() { # key scale: med(drain*.key) * scale / delivered, for each column
	local k
	for k in drain.smtp drain2.1 drain2.2; do
		awk -v v="$(med "$k.$1")" -v d="$(med "$k.deliv")" -v s="$2" 'BEGIN{ if (v != "-" && d > 0) printf "%.2f\n", v*s/d; else print "-" }'
	done
}
d3 "messages/s" rate
d3 "delivered (emulator's count)" deliv
d3 "left in the spools (not delivered)" left
d3 "failed (bounced)" failed
d3 "token requests" tok
d3 "connections (TLS handshakes)" conn
d3 "relay CPU seconds (both relays)" cpu
# shellcheck disable=SC2046 # one word per column
row3 "  relay CPU ms per message" $(per_msg cpu 1000)
d3 "redis-server CPU seconds" rediscpu
d3 "emulator CPU seconds (same 2 cores)" emucpu
d3 "relay peak RSS (VmHWM, largest relay), MB" mem
d3 "Redis round trips per message" tpm
d3 "Redis round trips (heartbeats included)" trips
d3 "waits for a budget another node held" waits
d3 "delivered by node a/b (relay logs)" split
d3 "seconds all nodes delivered at once" overlap
d3 "relays seen alive (node a's view)" seen
d3 "log lines 'budgets fallback' (want 0)" fb
d3 "relay log lines at WARN/ERROR" warn
fi
if on memory; then
echo "memory, oauthrelay peak RSS"
row "  one 35 MB message end to end, MB" "" "$(mb "$(kv mem_kb "$BIG_KB")")" "(<64)"
row "  1,000 idle connections, MB" "" "$(mb "$(kv mem_kb "$IDLE_KB")")" "(<150)"
fi
echo
if postfix_phases; then
echo "(*) oauthrelay: VmHWM of its one process. Postfix: the sum of Pss (shared pages"
echo "    divided among sharers) over master and all its daemons, sampled every 100 ms."
echo "    CPU: utime+stime; for Postfix, of master, its live daemons and the ones it reaped."
echo
fi
for p in drain:SMTP graph-drain:Graph "drain-redis2:two-node (node a's)"; do
	[ -f "$W/${p%%:*}-top.txt" ] || continue # its phase did not run
	echo "Relay CPU profile during the ${p#*:} drain (go tool pprof -top), top functions:"
	grep -m1 '^Duration' "$W/${p%%:*}-top.txt" || true
	sed -n '/flat%/,$p' "$W/${p%%:*}-top.txt" | head -21
	echo
done
if [ -f "$W/base-drain-top.txt" ]; then
	echo "Baseline build's CPU profile during the SMTP drain (go tool pprof -top), top functions:"
	grep -m1 '^Duration' "$W/base-drain-top.txt" || true
	sed -n '/flat%/,$p' "$W/base-drain-top.txt" | head -21
	echo
fi
echo
echo "work directory: $W"
