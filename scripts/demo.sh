#!/bin/bash
# The livesnap demo (`make demo`): boots the built-in guest (2 vCPUs, 1 GiB,
# a 512 MiB working set being rewritten), takes a live snapshot while it
# runs, restores it lazily into a new VM, checks the file and the guest's
# continuity, and prints a short report. Needs root; runs on KVM when
# /dev/kvm is there, else on TCG (DEMO_ACCEL: auto, kvm or tcg); leaves
# nothing behind; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
LIVESNAP=$BUILD/cli/livesnap
SNAPTOOL=$BUILD/tests/snap/ls-snaptool
CPUS=${DEMO_CPUS:-2}
MEM=${DEMO_MEM:-1G}
WS_MIB=${DEMO_WS_MIB:-256} # per vCPU
RUN_S=${DEMO_RUN_S:-3}
# Passed to both VMs: auto lets livesnap take KVM if it can, TCG if not.
ACCEL=${DEMO_ACCEL:-auto}
# The waits below only bound a hang; an emulated vCPU (TCG, which auto may
# pick) boots slower, so it gets 3x as long.
SLOW=3
[ "$ACCEL" = kvm ] && SLOW=1

die() {
	echo "demo: $*" >&2
	exit 1
}

[ -x "$LIVESNAP" ] || die "$LIVESNAP is missing: run 'make' first"
[ -x "$SNAPTOOL" ] || die "$SNAPTOOL is missing: run 'make' first"
command -v python3 >/dev/null || die "python3 is missing"

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/livesnap-demo.XXXXXX")
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# qmp SOCKET COMMAND [JSON-ARGS]: prints the command's "return" as JSON
# (the project's QMP client, tests/pylib/lsqmp.py).
qmp() {
	PYTHONPATH=tests/pylib python3 - "$@" <<'EOF'
import json, sys
from lsqmp import QMP, QMPError
path, cmd = sys.argv[1], sys.argv[2]
args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
q = QMP(path)
try:
    print(json.dumps(q.cmd(cmd, args)))
except QMPError as e:
    sys.exit("demo: %s: %s" % (cmd, e.desc))
finally:
    q.close()
EOF
}

# json EXPR: evaluates a Python expression over the JSON on stdin (as j).
json() {
	python3 -c "import json, sys; j = json.load(sys.stdin); print($1)"
}

# start NAME ARGS...: runs a VM in the background; waits for its socket.
start() {
	local name=$1
	shift
	"$LIVESNAP" run --accel "$ACCEL" --qmp "$WORK/$name.qmp" \
		--console "$WORK/$name.console" "$@" 2>"$WORK/$name.stderr" &
	PIDS+=($!)
	for _ in $(seq $((300 * SLOW))); do
		[ -S "$WORK/$name.qmp" ] && return 0
		kill -0 "$!" 2>/dev/null || break
		sleep 0.1
	done
	cat "$WORK/$name.stderr" >&2
	die "VM $name did not start"
}

# stop NAME: quits a VM over QMP and waits for its process.
stop() {
	qmp "$WORK/$1.qmp" quit >/dev/null
	wait "${PIDS[-1]}" || die "VM $1 exited with an error"
	unset 'PIDS[-1]'
}

# gens NAME: the vCPUs' generations and error counts, "g0 g1 ... / errors".
gens() {
	qmp "$WORK/$1.qmp" query-livesnap-guest |
		json '" ".join(str(c["generation"]) for c in j["cpus"]) + " (page errors: " + str(sum(c["errors"] for c in j["cpus"])) + ")"'
}

# wait_workload NAME: until every vCPU's workload has written a page.
wait_workload() {
	for _ in $(seq $((600 * SLOW))); do
		if qmp "$WORK/$1.qmp" query-livesnap-guest |
			json 'j["ready"] and all(c.get("generation", 0) > 0 for c in j["cpus"])' |
			grep -q True; then
			return 0
		fi
		sleep 0.1
	done
	die "the guest's workload in $1 did not start"
}

echo "== boot: $CPUS vCPUs, $MEM RAM, each vCPU rewriting $WS_MIB MiB (--accel $ACCEL)"
start vm1 --cpus "$CPUS" --mem "$MEM" --cmdline "ls.ws_mib=$WS_MIB ls.print_s=1"
wait_workload vm1
sleep "$RUN_S"
echo "   per-vCPU generations before the snapshot: $(gens vm1)"

echo "== live snapshot (the guest keeps running)"
SNAP=$WORK/demo.snap
"$LIVESNAP" snapshot --socket "$WORK/vm1.qmp" "$SNAP"
MIG=$(qmp "$WORK/vm1.qmp" query-migrate)
echo "   per-vCPU generations after the snapshot:  $(gens vm1)"
stop vm1

echo "== verify the file and every guest page in it"
"$LIVESNAP" verify "$SNAP"
CHECK=$("$SNAPTOOL" check-guest "$SNAP") || die "guest pages in $SNAP: $CHECK"
SNAP_GENS=$(echo "$CHECK" | json '" ".join(str(c["generation"]) for c in j["cpus"])')
echo "   $(echo "$CHECK" | json '"%d workload pages whole (%d written, %d never touched)" % (j["pages"] - j["excused"], j["written"], j["zero"])')"

echo "== restore lazily into a new VM"
start vm2 --restore "$SNAP" --restore-mode lazy
wait_workload vm2
RESTORED=$(gens vm2)
sleep 2
AFTER=$(gens vm2)
RESTORE=$(qmp "$WORK/vm2.qmp" query-livesnap-restore)
# Continuity: each vCPU resumed from its snapshotted generation and went on.
python3 - "$SNAP_GENS" "$RESTORED" "$AFTER" <<'EOF' || die "the restored guest did not continue from the snapshot"
import sys
snap = [int(x) for x in sys.argv[1].split()]
# gens prints "G0 G1 ... (page errors: E)"
first, errs1 = sys.argv[2].rstrip(")").split(" (page errors: ")
later, errs2 = sys.argv[3].rstrip(")").split(" (page errors: ")
first = [int(x) for x in first.split()]
later = [int(x) for x in later.split()]
ok = all(f >= s for f, s in zip(first, snap)) and \
     all(l > f for l, f in zip(later, first)) and errs2.strip() == "0"
for i, (s, f, l) in enumerate(zip(snap, first, later)):
    print("   vCPU %d: generation %d in the snapshot, %d just after restore, "
          "%d two seconds later" % (i, s, f, l))
print("   page errors seen by the restored guest: %s" % errs2.strip())
sys.exit(0 if ok else 1)
EOF
grep -q "livesnap-guest: cpu 0 writes=" "$WORK/vm2.console" ||
	die "the restored guest's console is silent"
stop vm2

echo
echo "== report"
python3 - "$MIG" "$RESTORE" "$(stat -c %s "$SNAP")" "$(du -k "$SNAP" | cut -f1)" <<'EOF'
import json, sys
m, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
size, used_k = int(sys.argv[3]), int(sys.argv[4])
x, ram = m["x-livesnap"], m["ram"]
secs = x["total-ns"] / 1e9
def ms(ns):
    return "%.0f us" % (ns / 1e3) if ns < 1e6 else "%.1f ms" % (ns / 1e6)
print("  pause (vCPUs stopped to resumed)   %s" % ms(x["downtime-ns"]))
print("  snapshot, migrate to file complete %.2f s" % secs)
g = x.get("guest")
if g:
    print("  guest's worst write in that time   %s%s" % (
        ms(g["max-write-ns"]),
        "" if g["all-intervals-seen"] else " (last 2 s seen)"))
print("  vCPU write-fault stall p50/p99/max %s / %s / %s (%d faults)" % (
    ms(x["stall-p50-ns"]), ms(x["stall-p99-ns"]), ms(x["stall-max-ns"]),
    x["faults"]))
print("  snapshot rate                      %d MiB of RAM in %.2f s: "
      "%.0f MB/s scanned, %.0f MB/s written" % (
          ram["total"] >> 20, secs, ram["total"] / secs / 1e6,
          ram["transferred"] / secs / 1e6))
print("  snapshot file                      %d MiB written, %d MiB "
      "apparent (zero pages are holes)" % (used_k >> 10, size >> 20))
print("  restore (lazy): start to running   %s; all %d pages in after %s "
      "(%d served on demand)" % (
          ms(r["restore-time-ns"]), r.get("pages-total", 0),
          ms(r.get("lazy-elapsed-ns", 0)), r.get("faults", 0)))
EOF
echo "demo: OK"
