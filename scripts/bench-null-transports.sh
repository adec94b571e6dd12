#!/usr/bin/env bash
# The null filesystem (scripts/nullfs.ts) on both transports, alternating in the same minutes:
# what each transport costs per request, without darefs's own work. fio on the 1 GiB file `f`:
#   randread_4k   4 KiB random read, depth 1, O_DIRECT
#   seqwrite_1m   1 MiB sequential write, O_DIRECT
#   seqread_1m    1 MiB sequential read, O_DIRECT
#   randwrite_4k  4 KiB random write, depth 1, O_DIRECT
# (page-aligned buffers: an unaligned one splits each direct request in two or more).
# Prints the median per row and transport, the ratio kernel / fuse-native, µs per request for the
# 4 KiB rows, and the daemon's peak RSS during each row.
#
# Usage (root, after npm run build): scripts/bench-null-transports.sh
# Env: ROUNDS (default 3), RUNTIME seconds per fio job (default 5), TESTS (default all four),
#      TRANSPORTS (default "kernel fuse-native"), BENCH_ROOT (default /tmp/darefs-bench-null).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
root=${BENCH_ROOT:-/tmp/darefs-bench-null}
rounds=${ROUNDS:-3}
runtime=${RUNTIME:-5}
read -r -a tests <<< "${TESTS:-randread_4k seqwrite_1m seqread_1m randwrite_4k}"
read -r -a transports <<< "${TRANSPORTS:-kernel fuse-native}"
[[ $(id -u) == 0 ]] || { echo "bench-null-transports: run as root" >&2; exit 2; }
command -v fio > /dev/null || { echo "bench-null-transports: fio is not installed (apt-get install fio)" >&2; exit 2; }
nullfs=$repo/dist/scripts/nullfs.js
[[ -f $nullfs ]] || { echo "bench-null-transports: $nullfs missing: npm run build" >&2; exit 2; }

mkdir -p "$root"
results=$root/results-$(date -u +%Y%m%dT%H%M%SZ).tsv
mnt=$root/mnt
pid=

cleanup() {
  [[ -n $pid ]] && kill -TERM "$pid" 2> /dev/null || true
  sleep 0.2
  mountpoint -q "$mnt" && umount -l "$mnt" 2> /dev/null || true
  [[ -n $pid ]] && kill -KILL "$pid" 2> /dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fio_args() {  # TEST
  local common=(--name=t --filename="$mnt/f" --direct=1 --iomem_align=4096 --ioengine=psync --time_based --runtime="$runtime" --size=1G --output-format=json)
  case $1 in
    randread_4k) echo "${common[@]} --rw=randread --bs=4k" ;;
    randwrite_4k) echo "${common[@]} --rw=randwrite --bs=4k" ;;
    seqread_1m) echo "${common[@]} --rw=read --bs=1M" ;;
    seqwrite_1m) echo "${common[@]} --rw=write --bs=1M" ;;
  esac
}

for ((r = 0; r < rounds; r++)); do
  n=${#transports[@]}
  for ((i = 0; i < n; i++)); do
    tr=${transports[$(((i + r) % n))]}
    mkdir -p "$mnt"
    node "$nullfs" --transport "$tr" "$mnt" > "$root/out-$tr" 2>&1 &
    pid=$!
    for _ in $(seq 300); do mountpoint -q "$mnt" && break; sleep 0.1; done
    mountpoint -q "$mnt" || { cat "$root/out-$tr" >&2; exit 1; }
    for t in "${tests[@]}"; do
      echo 5 > "/proc/$pid/clear_refs"  # resets VmHWM: the peak of this test alone
      # shellcheck disable=SC2046
      json=$(fio $(fio_args "$t"))
      python3 -c '
import json, sys
j = json.loads(sys.stdin.read())["jobs"][0]
d = j["read"] if j["read"]["io_bytes"] else j["write"]
hwm = [int(l.split()[1]) for l in open("/proc/%s/status" % sys.argv[4]) if l.startswith("VmHWM")][0]
print("%s\t%s\t%s\t%.1f\t%.1f\t%d" % (sys.argv[1], sys.argv[2], sys.argv[3], d["iops"], d["bw_bytes"] / 1e6, hwm))
' "$r" "$tr" "$t" "$pid" <<< "$json" >> "$results"
      tail -1 "$results" >&2
    done
    kill -TERM "$pid"
    wait "$pid" 2> /dev/null || true
    pid=
    mountpoint -q "$mnt" && umount -l "$mnt"
  done
done

python3 - "$results" << 'PY'
import statistics, sys
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1])]
iops, mbs, rss = {}, {}, {}
for r, tr, t, a, b, hwm in rows:
    iops.setdefault((tr, t), []).append(float(a))
    mbs.setdefault((tr, t), []).append(float(b))
    rss.setdefault((tr, t), []).append(int(hwm))
trs = sorted({k[0] for k in iops}, key=lambda s: s != 'kernel')
tests = list(dict.fromkeys(k[1] for k in iops))
med = statistics.median
print('| row | ' + ' | '.join(trs) + (' | kernel / fuse-native |' if len(trs) == 2 else ' |'))
print('|---|' + '---|' * (len(trs) + (1 if len(trs) == 2 else 0)))
for t in tests:
    cells, vals = [], []
    for tr in trs:
        if t.endswith('_4k'):
            v = med(iops[(tr, t)]); vals.append(v)
            cells.append('%.0f IOPS (%.1f µs/req), %.0f MiB' % (v, 1e6 / v, max(rss[(tr, t)]) / 1024))
        else:
            v = med(mbs[(tr, t)]); vals.append(v)
            cells.append('%.0f MB/s, %.0f MiB' % (v, max(rss[(tr, t)]) / 1024))
    ratio = ' | %.2f×' % (vals[0] / vals[1]) if len(vals) == 2 else ''
    print(f'| {t} | ' + ' | '.join(cells) + ratio + ' |')
n = len(next(iter(iops.values())))
print(f'\n{n} rounds, medians; MiB: the daemon\'s peak RSS during that row (largest of the rounds); raw: {sys.argv[1]}')
PY
