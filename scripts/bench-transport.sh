#!/usr/bin/env bash
# The FUSE transports side by side, in one run (ratios are what to read: the machine is shared):
# gocryptfs, the null filesystem on each transport, and darefs on each transport, through the
# shared harness (../shared/bench/fsbench.sh).
#
# Usage: scripts/bench-transport.sh [VARIANT...]
#   VARIANT: gocryptfs | null-fuse-native | null-kernel | null-kernel-wb
#            | darefs-fuse-native | darefs-kernel | darefs-kernel-wb
#   default: all of them. '-wb' adds --writeback-cache.
# Env: BENCH_ROOT (default /tmp/darefs-bench-transport), SHARED_BENCH, every FSBENCH_* setting
#      (e.g. FSBENCH_TESTS="rand_read_4k rand_write_4k" FSBENCH_FIO_MB=64 for a quick run),
#      ROUNDS (default 1): the whole list again, in rotated order, to see the spread.
# Needs root. Prints one table: every metric per variant, and each variant's ratio to gocryptfs
# (higher is better); µs per request of the null filesystems from their 4 KiB random read row.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bench=${SHARED_BENCH:-$(cd "$repo/.." && pwd)/shared/bench}
root=${BENCH_ROOT:-/tmp/darefs-bench-transport}
export BENCH_ROOT=$root
variants=("$@")
[[ ${#variants[@]} -gt 0 ]] || variants=(gocryptfs null-fuse-native null-kernel null-kernel-wb darefs-fuse-native darefs-kernel darefs-kernel-wb)
rounds=${ROUNDS:-1}

[[ $(id -u) == 0 ]] || { echo "bench-transport: run as root (the harness drops the page cache)" >&2; exit 2; }
[[ -x $bench/fsbench.sh ]] || { echo "bench-transport: no harness at $bench (set SHARED_BENCH)" >&2; exit 2; }
(cd "$repo" && npm run build > /dev/null)
missing=()
command -v fio > /dev/null || missing+=(fio)
command -v jq > /dev/null || missing+=(jq)
command -v gocryptfs > /dev/null || missing+=(gocryptfs)
command -v fusermount3 > /dev/null || missing+=(fuse3)
if ((${#missing[@]})); then
  echo "bench-transport: installing ${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi

node=$(command -v node)
main=$repo/dist/src/cli/main.js
nullfs=$repo/dist/scripts/nullfs.js
mkdir -p "$root"
run=$(date -u +%Y%m%dT%H%M%SZ)
export FSBENCH_RUN=$run FSBENCH_JSON=$root/results-$run.jsonl

cleanup() {
  local m
  for m in $(awk -v r="$root" '$2 ~ "^"r {print $2}' /proc/mounts); do umount -l "$m" 2> /dev/null || true; done
}
trap cleanup EXIT

# wait_mounted DIR: until DIR is a mount point (30 s).
wait_mounted() {
  for _ in $(seq 300); do mountpoint -q "$1" && return 0; sleep 0.1; done
  echo "bench-transport: $1 did not mount" >&2
  return 1
}

# stop_pid PID DIR: SIGTERM (the daemons unmount themselves), then make sure.
stop_pid() {
  kill -TERM "$1" 2> /dev/null || true
  for _ in $(seq 300); do kill -0 "$1" 2> /dev/null || break; sleep 0.1; done
  mountpoint -q "$2" && umount -l "$2" 2> /dev/null || true
}

run_null() {  # LABEL ARGS...
  local label=$1 d=$root/$1 pid
  shift
  rm -rf "$d"; mkdir -p "$d/mnt"
  "$node" "$nullfs" "$@" "$d/mnt" > "$d/out" 2>&1 &
  pid=$!
  echo "$pid" > "$d/pid"
  wait_mounted "$d/mnt" || { cat "$d/out" >&2; return 1; }
  FSBENCH_PIDFILE=$d/pid "$bench/fsbench.sh" "$label" "$d/mnt" || echo "### $label: some tests failed" >&2
  stop_pid "$pid" "$d/mnt"
}

run_darefs() {  # LABEL MOUNT-OPTIONS...
  local label=$1 d=$root/$1
  shift
  rm -rf "$d"; mkdir -p "$d/cipher" "$d/mnt"
  printf 'bench transport passphrase\n' > "$d/pass"
  "$node" "$main" init -q --passfile "$d/pass" "$d/cipher"
  # The remount script the harness runs before every read test (cold daemon caches).
  cat > "$d/mount.sh" << EOF
#!/usr/bin/env bash
set -e
if [[ -s $d/pid ]] && kill -0 \$(cat $d/pid) 2> /dev/null; then
  kill -TERM \$(cat $d/pid)
  for _ in \$(seq 300); do kill -0 \$(cat $d/pid) 2> /dev/null || break; sleep 0.1; done
fi
"$node" "$main" mount -f --passfile "$d/pass" $* "$d/cipher" "$d/mnt" >> "$d/log" 2>&1 &
echo \$! > "$d/pid"
for _ in \$(seq 300); do mountpoint -q "$d/mnt" && exit 0; sleep 0.1; done
exit 1
EOF
  chmod +x "$d/mount.sh"
  "$d/mount.sh"
  FSBENCH_PIDFILE=$d/pid FSBENCH_REMOUNT=$d/mount.sh FSBENCH_CIPHER_DIR=$d/cipher \
    "$bench/fsbench.sh" "$label" "$d/mnt" || echo "### $label: some tests failed" >&2
  stop_pid "$(cat "$d/pid")" "$d/mnt"
}

run_variant() {
  case $1 in
    gocryptfs) "$bench/run-peers.sh" gocryptfs ;;
    null-fuse-native) run_null "$1" --transport fuse-native ;;
    null-kernel) run_null "$1" --transport kernel ;;
    null-kernel-wb) run_null "$1" --transport kernel --writeback-cache ;;
    darefs-fuse-native) run_darefs "$1" --transport fuse-native ;;
    darefs-kernel) run_darefs "$1" --transport kernel ;;
    darefs-kernel-wb) run_darefs "$1" --transport kernel --writeback-cache ;;
    *) echo "bench-transport: unknown variant $1" >&2; return 2 ;;
  esac
}

for ((r = 0; r < rounds; r++)); do
  n=${#variants[@]}
  for ((i = 0; i < n; i++)); do
    v=${variants[$(((i + r) % n))]}
    echo "### round $((r + 1)): $v $(date -u +%T)" >&2
    set +e; (set -e; run_variant "$v"); rc=$?; set -e
    ((rc == 0)) || echo "### $v failed (exit $rc)" >&2
  done
done

labels=$(IFS=,; echo "${variants[*]}")
python3 - "$FSBENCH_JSON" "$labels" << 'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
labels = sys.argv[2].split(',')
val, units = {}, {}
for r in rows:
    units[r['metric']] = r['unit']
    if r['value'] is not None:
        val.setdefault((r['label'], r['metric']), []).append(r['value'])
med = {k: statistics.median(v) for k, v in val.items()}
lower = {'s', 'ms', 'us', 'bytes', 'MiB'}
metrics = sorted({m for (_, m) in med})
print('| metric | ' + ' | '.join(labels) + ' |')
print('|---|' + '---|' * len(labels))
for m in metrics:
    base = med.get(('gocryptfs', m))
    cells = []
    for l in labels:
        v = med.get((l, m))
        if v is None:
            cells.append('-')
            continue
        ratio = ''
        if base and v and l != 'gocryptfs':
            ratio = ' (%.2f×)' % ((base / v) if units[m] in lower else (v / base))
        cells.append('%g%s' % (v, ratio))
    print(f'| {m} ({units[m]}) | ' + ' | '.join(cells) + ' |')
print()
for l in labels:
    if l.startswith('null-') and (l, 'rand_read_4k_iops') in med:
        print(f'{l}: {1e6 / med[(l, "rand_read_4k_iops")]:.1f} µs per 4 KiB read request (1 / IOPS, depth 1)')
PY
echo "raw results: $FSBENCH_JSON" >&2
