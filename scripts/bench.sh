#!/usr/bin/env bash
# Benchmark darefs next to its peers with the shared harness (../shared/bench), in one run so the
# figures can be read as ratios on this shared, noisy machine.
#
# Usage: scripts/bench.sh [PEER...]      (default: gocryptfs darefs nullfs)
#   PEER: darefs | gocryptfs | nullfs | plain | any other name run-peers.sh knows
# Env:  BENCH_ROOT (default /tmp/darefs-bench), SHARED_BENCH (default ../shared/bench beside the
#       repo), and every FSBENCH_* setting of fsbench.sh (e.g. FSBENCH_SEQ_MB=256 for a quick run).
#       DAREFS_MOUNT_OPTS: extra `darefs mount` options, e.g. --no-journal.
# What the crash-safety journal costs (run both, compare the darefs rows):
#   FSBENCH_TESTS="seq_write rand_write_4k" scripts/bench.sh darefs
#   FSBENCH_TESTS="seq_write rand_write_4k" DAREFS_MOUNT_OPTS=--no-journal scripts/bench.sh darefs
# Needs root (fsbench drops caches). Installs fio, jq and gocryptfs from Debian when missing.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bench=${SHARED_BENCH:-$(cd "$repo/.." && pwd)/shared/bench}
export BENCH_ROOT=${BENCH_ROOT:-/tmp/darefs-bench}
peers=("$@")
[[ ${#peers[@]} -gt 0 ]] || peers=(gocryptfs darefs nullfs)

[[ $(id -u) == 0 ]] || { echo "bench: run as root (the harness drops the page cache)" >&2; exit 2; }
[[ -x $bench/run-peers.sh ]] || { echo "bench: no harness at $bench (set SHARED_BENCH)" >&2; exit 2; }
[[ -f $repo/dist/src/cli/main.js ]] || (cd "$repo" && npm run build)

missing=()
command -v fio > /dev/null || missing+=(fio)
command -v jq > /dev/null || missing+=(jq)
command -v mountpoint > /dev/null || missing+=(util-linux)
for p in "${peers[@]}"; do
  [[ $p != gocryptfs ]] && continue
  command -v gocryptfs > /dev/null || missing+=(gocryptfs)
  # go-fuse mounts through fusermount even as root (darefs does not need it).
  command -v fusermount > /dev/null || command -v fusermount3 > /dev/null || missing+=(fuse3)
done
if ((${#missing[@]})); then
  echo "bench: installing ${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi

mkdir -p "$BENCH_ROOT"
# peers.sh runs "$DAREFS_DIR/node_modules/.bin/darefs": point it at this checkout's build.
shim=$BENCH_ROOT/darefs-shim
mkdir -p "$shim/node_modules/.bin"
# A wrapper, not a symlink, so that DAREFS_MOUNT_OPTS reach `mount`; exec keeps the PID the
# harness records as the daemon's. (rm first: writing through an old symlink would hit main.js.)
rm -f "$shim/node_modules/.bin/darefs"
printf '%s\n' '#!/usr/bin/env bash' \
  "node=$(command -v node) main=$repo/dist/src/cli/main.js" \
  'if [[ ${1:-} == mount ]]; then shift; exec "$node" "$main" mount ${DAREFS_MOUNT_OPTS:-} "$@"; fi' \
  'exec "$node" "$main" "$@"' > "$shim/node_modules/.bin/darefs"
chmod +x "$shim/node_modules/.bin/darefs" "$repo/dist/src/cli/main.js"
export DAREFS_MOUNT_OPTS=${DAREFS_MOUNT_OPTS:-}
echo "bench: darefs mount options: ${DAREFS_MOUNT_OPTS:-none (journal on)}" >&2
export DAREFS_DIR=$shim
# nullfs (the fuse-native bound): the harness's nullfs.js with this checkout's fuse-native.
export NULLFS_DIR=$BENCH_ROOT/nullfs-src
mkdir -p "$NULLFS_DIR/libx"
cp "$bench/nullfs.js" "$NULLFS_DIR/"
ln -sfn "$repo/node_modules" "$NULLFS_DIR/node_modules"
ln -sfn "$repo/node_modules/fuse-native/build/Release/libfuse.so" "$NULLFS_DIR/libx/libfuse.so.2"

run=$(date -u +%Y%m%dT%H%M%SZ)
export FSBENCH_RUN=$run FSBENCH_JSON=$BENCH_ROOT/results-$run.jsonl
cleanup() {  # a peer whose daemon could not unmount itself (nullfs.js needs fusermount) leaves its mount
  local m
  for m in $(awk -v r="$BENCH_ROOT" '$2 ~ "^"r {print $2}' /proc/mounts); do umount -l "$m" 2> /dev/null || true; done
}
trap cleanup EXIT
"$bench/run-peers.sh" "${peers[@]}"

labels=$(IFS=,; echo "${peers[*]}")
python3 "$bench/summarize.py" --labels "$labels" "$FSBENCH_JSON"
echo
python3 - "$FSBENCH_JSON" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
val = {}
for r in rows:
    if r['value'] is not None:
        val.setdefault((r['label'], r['metric']), []).append(r['value'])
med = {k: statistics.median(v) for k, v in val.items()}
lower_is_better = {'s', 'ms', 'us', 'bytes', 'MiB'}
units = {r['metric']: r['unit'] for r in rows}
print('| metric | darefs | gocryptfs | darefs / gocryptfs (higher is better) | darefs / nullfs |')
print('|---|---|---|---|---|')
for m in sorted({m for (_, m) in med}):
    d, g, n = med.get(('darefs', m)), med.get(('gocryptfs', m)), med.get(('nullfs', m))
    if d is None:
        continue
    def ratio(base):
        if base is None or not d or not base:
            return '-'
        return '%.2f' % ((base / d) if units.get(m) in lower_is_better else (d / base))
    print(f'| {m} ({units.get(m)}) | {d:g} | {g if g is not None else "-"} | {ratio(g)} | {ratio(n)} |')
PY
echo "raw results: $FSBENCH_JSON" >&2
