#!/usr/bin/env bash
# fsync-heavy rows, darefs builds side by side in one run (ratios are what to read):
#   sqlite_inserts: N inserts into a fresh sqlite3 database, each its own transaction (journal
#                   mode DELETE, synchronous FULL: several fsyncs per insert)
#   git_commit:     `git add -A && git commit` of N small files (git fsyncs its objects)
#
# Usage: scripts/bench-fsync.sh LABEL=DAREFS_CHECKOUT[:MOUNT-OPTIONS] ...
#   e.g. scripts/bench-fsync.sh before=/work/old after=/work/main after-fn=/work/main:--transport=fuse-native
#   (MOUNT-OPTIONS: comma separated, '=' inside an option becomes a space)
# Env: ROUNDS (default 3, rotated order), N (default 1000), BENCH_ROOT (default /tmp/darefs-bench-fsync).
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "bench-fsync: run as root" >&2; exit 2; }
command -v sqlite3 > /dev/null && command -v git > /dev/null || { echo "bench-fsync: needs sqlite3 and git" >&2; exit 2; }
root=${BENCH_ROOT:-/tmp/darefs-bench-fsync}
rounds=${ROUNDS:-3}
n=${N:-1000}
variants=("$@")
((${#variants[@]})) || { echo "usage: scripts/bench-fsync.sh LABEL=CHECKOUT[:OPTIONS] ..." >&2; exit 2; }
mkdir -p "$root"
results=$root/results-$(date -u +%Y%m%dT%H%M%SZ).tsv
cleanup() {
  local m
  for m in $(awk -v r="$root" '$2 ~ "^"r {print $2}' /proc/mounts); do umount -l "$m" 2> /dev/null || true; done
}
trap cleanup EXIT

run_variant() {  # LABEL CHECKOUT OPTIONS
  local label=$1 checkout=$2 opts=$3 d=$root/$1 pid t0 t1 i
  rm -rf "$d"; mkdir -p "$d/cipher" "$d/mnt"
  printf 'bench fsync passphrase\n' > "$d/pass"
  node "$checkout/dist/src/cli/main.js" init -q --passfile "$d/pass" "$d/cipher"
  # shellcheck disable=SC2086  # options split on purpose
  node "$checkout/dist/src/cli/main.js" mount -f --passfile "$d/pass" ${opts//,/ } "$d/cipher" "$d/mnt" > "$d/log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do mountpoint -q "$d/mnt" && break; sleep 0.1; done
  t0=$(date +%s.%N)
  { echo 'create table t(k integer primary key, v text);'; for ((i = 0; i < n; i++)); do echo "insert into t(v) values('row $i');"; done; } | sqlite3 "$d/mnt/db.sqlite"
  t1=$(date +%s.%N)
  printf '%s\tsqlite_inserts\t%s\n' "$label" "$(echo "$t1 - $t0" | bc)" >> "$results"
  mkdir "$d/mnt/repo"
  for ((i = 0; i < n; i++)); do printf 'file %d\n' "$i" > "$d/mnt/repo/f$i"; done
  git -C "$d/mnt/repo" init -q
  t0=$(date +%s.%N)
  git -C "$d/mnt/repo" -c user.name=b -c user.email=b@x -c core.fsync=all add -A
  git -C "$d/mnt/repo" -c user.name=b -c user.email=b@x -c core.fsync=all commit -q -m bench
  t1=$(date +%s.%N)
  printf '%s\tgit_commit\t%s\n' "$label" "$(echo "$t1 - $t0" | bc)" >> "$results"
  kill -TERM "$pid"
  for _ in $(seq 300); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
  mountpoint -q "$d/mnt" && umount -l "$d/mnt" || true
}

for ((r = 0; r < rounds; r++)); do
  for ((i = 0; i < ${#variants[@]}; i++)); do
    v=${variants[$(((i + r) % ${#variants[@]}))]}
    label=${v%%=*}
    spec=${v#*=}
    checkout=${spec%%:*}
    opts=""
    [[ $spec == *:* ]] && opts=${spec#*:}
    opts=${opts//=/ }
    echo "### round $((r + 1)) $label" >&2
    run_variant "$label" "$checkout" "$opts"
  done
done

python3 - "$results" "${variants[@]%%=*}" << 'PY'
import statistics, sys
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1])]
labels = sys.argv[2:]
val = {}
for label, metric, v in rows:
    val.setdefault((label, metric), []).append(float(v))
base = labels[0]
print('| metric (s, median) | ' + ' | '.join(labels) + ' |')
print('|---|' + '---|' * len(labels))
for m in ('sqlite_inserts', 'git_commit'):
    cells = []
    for l in labels:
        v = statistics.median(val.get((l, m), [float('nan')]))
        b = statistics.median(val.get((base, m), [float('nan')]))
        cells.append('%.2f%s' % (v, '' if l == base else ' (%.2f× %s)' % (b / v, base)))
    print(f'| {m} | ' + ' | '.join(cells) + ' |')
PY
echo "raw: $results" >&2
