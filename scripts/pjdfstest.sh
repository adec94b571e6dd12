#!/usr/bin/env bash
# POSIX conformance of a darefs mount with pjdfstest (outside CI: root only, several minutes).
#
# Usage: scripts/pjdfstest.sh [--transport kernel|fuse-native|gocryptfs] [--out FILE]
#                             [--timeout SECONDS] [--total-timeout SECONDS] [--mount-arg ARG]...
#                             [--init-arg ARG]...
#                             [TEST...]
#   --transport  how darefs serves the mount (default kernel); 'gocryptfs' runs the suite on a
#                gocryptfs mount instead, as the reference on this machine
#   --out        results file (default $PJD_ROOT/results-TRANSPORT.txt): counts, then every
#                failing file with its failing subtest numbers, then each 'not ok' line; prove's
#                whole output and the daemon log are kept beside it (FILE.prove.log, FILE.daemon.log)
#   --timeout    seconds one .t file may take before it is killed (default 300)
#   --total-timeout  seconds the whole run may take (default 3600; a whole run takes ~4 minutes)
#   --mount-arg  one more argument for 'darefs mount' (e.g. --writeback-cache); repeatable
#   --init-arg   one more argument for 'darefs init' (e.g. --encrypt-names); repeatable
#   TEST         .t files or directories relative to pjdfstest's tests/ (e.g. rename/00.t, link);
#                default: all of them
# Env: PJD_CACHE (default /var/cache/darefs-pjdfstest): where pjdfstest is built, once;
#      PJD_GIT: a git dir of pjd/pjdfstest to build from (default: the first of
#      /work/.mirror/pjd+pjdfstest/repo, else a clone of https://github.com/pjd/pjdfstest);
#      PJD_ROOT (default /tmp/darefs-pjdfstest); PJD_IMAGE_MB (default 3072).
#
# The cipher directory sits on a loop-mounted ext4 image of PJD_IMAGE_MB so that a runaway write
# fills that image, not the machine's disk. 3 GiB because open/25.t writes one byte past 2 GiB and
# a sealed file has no holes: its 2 GiB of zeros take 2 GiB of disk (the sparse image file only
# takes what is written). The mount is --allow-other because pjdfstest switches
# to other uids for its permission tests; it runs from inside the mount because it tests the cwd.
# Whatever happens, the mount is unmounted, the daemon stopped and the loop device detached.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
transport=kernel
out=
per_file_timeout=300
total_timeout=3600
mount_args=()
init_args=()
tests=()
while (($#)); do
  case $1 in
    --transport) transport=${2:?--transport needs a value}; shift 2 ;;
    --transport=*) transport=${1#*=}; shift ;;
    --out) out=${2:?--out needs a file}; shift 2 ;;
    --out=*) out=${1#*=}; shift ;;
    --timeout) per_file_timeout=${2:?--timeout needs seconds}; shift 2 ;;
    --timeout=*) per_file_timeout=${1#*=}; shift ;;
    --total-timeout) total_timeout=${2:?--total-timeout needs seconds}; shift 2 ;;
    --total-timeout=*) total_timeout=${1#*=}; shift ;;
    --mount-arg) mount_args+=("${2:?--mount-arg needs a value}"); shift 2 ;;
    --mount-arg=*) mount_args+=("${1#*=}"); shift ;;
    --init-arg) init_args+=("${2:?--init-arg needs a value}"); shift 2 ;;
    --init-arg=*) init_args+=("${1#*=}"); shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) echo "pjdfstest.sh: unknown option $1" >&2; exit 2 ;;
    *) tests+=("$1"); shift ;;
  esac
done
case $transport in
  kernel | fuse-native | gocryptfs) ;;
  *) echo "pjdfstest.sh: --transport must be kernel, fuse-native or gocryptfs, not '$transport'" >&2; exit 2 ;;
esac
if [[ $transport == gocryptfs ]] && ((${#mount_args[@]} + ${#init_args[@]})); then echo "pjdfstest.sh: --mount-arg and --init-arg are for darefs, not gocryptfs" >&2; exit 2; fi
[[ $per_file_timeout =~ ^[1-9][0-9]*$ ]] || { echo "pjdfstest.sh: --timeout must be a whole number of seconds" >&2; exit 2; }
[[ $total_timeout =~ ^[1-9][0-9]*$ ]] || { echo "pjdfstest.sh: --total-timeout must be a whole number of seconds" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "pjdfstest.sh: run as root (pjdfstest changes owners and uids)" >&2; exit 2; }

cache=${PJD_CACHE:-/var/cache/darefs-pjdfstest}
root=${PJD_ROOT:-/tmp/darefs-pjdfstest}
image_mb=${PJD_IMAGE_MB:-3072}
out=${out:-$root/results-$transport.txt}
work=$root/work-$transport
lower=$work/lower
mnt=$work/mnt
img=$work/ext4.img
log=$work/daemon.log
prove_log=$work/prove.log

need=()
command -v prove > /dev/null || need+=(perl)
command -v autoreconf > /dev/null || need+=(autoconf)
command -v automake > /dev/null || need+=(automake)
command -v cc > /dev/null || need+=(build-essential)
[[ -e /usr/include/openssl/evp.h ]] || need+=(libssl-dev)
command -v mkfs.ext4 > /dev/null || need+=(e2fsprogs)
if [[ $transport == gocryptfs ]]; then
  command -v gocryptfs > /dev/null || need+=(gocryptfs)
  command -v fusermount3 > /dev/null || need+=(fuse3)
fi
if ((${#need[@]})); then
  echo "pjdfstest.sh: installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
fi

# Build pjdfstest once; the tests find the binary in the directory above tests/.
pjd=$cache/pjdfstest
if [[ ! -x $pjd/pjdfstest ]]; then
  git_dir=${PJD_GIT:-}
  if [[ -z $git_dir && -d /work/.mirror/pjd+pjdfstest/repo ]]; then git_dir=/work/.mirror/pjd+pjdfstest/repo; fi
  rm -rf "$pjd.tmp"
  mkdir -p "$pjd.tmp"
  if [[ -n $git_dir ]]; then
    git --git-dir="$git_dir" archive HEAD | tar -x -C "$pjd.tmp"
  else
    git clone -q --depth 1 https://github.com/pjd/pjdfstest "$pjd.tmp"
  fi
  echo "pjdfstest.sh: building pjdfstest in $pjd" >&2
  (cd "$pjd.tmp" && autoreconf -ifs > build.log 2>&1 && ./configure >> build.log 2>&1 && make pjdfstest >> build.log 2>&1) ||
    { echo "pjdfstest.sh: pjdfstest did not build; see $pjd.tmp/build.log" >&2; exit 1; }
  rm -rf "$pjd"
  mv "$pjd.tmp" "$pjd"
fi

if [[ $transport != gocryptfs ]]; then
  (cd "$repo" && npm run build > /dev/null)
fi

daemon_pid=
loopdev=
# From /proc/mounts, not mountpoint(1): a FUSE mount whose daemon is gone answers ENOTCONN to the
# stat mountpoint makes, and would be left mounted.
mounted() { awk -v d="$1" '$2 == d { found = 1 } END { exit !found }' /proc/mounts; }
cleanup() {
  set +e
  cd /
  if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2> /dev/null; then
    kill -TERM "$daemon_pid"
    for _ in $(seq 100); do kill -0 "$daemon_pid" 2> /dev/null || break; sleep 0.1; done
    kill -KILL "$daemon_pid" 2> /dev/null
  fi
  if mounted "$mnt"; then umount "$mnt" 2> /dev/null || umount -l "$mnt"; fi
  if mounted "$lower"; then umount "$lower" 2> /dev/null || umount -l "$lower"; fi
  [[ -n $loopdev ]] && losetup -d "$loopdev" 2> /dev/null
  [[ -f $prove_log ]] && cp "$prove_log" "$out.prove.log"
  [[ -f $log ]] && cp "$log" "$out.daemon.log"
  # Never through a mount that is somehow still there.
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# A run killed hard last time leaves its mounts and loop device: clear them first.
if [[ -d $work ]]; then
  if mounted "$mnt"; then umount -l "$mnt"; fi
  if mounted "$lower"; then umount -l "$lower"; fi
  for dev in $(losetup -j "$img" -O NAME -n 2> /dev/null); do losetup -d "$dev"; done
  rm -rf --one-file-system "$work"
fi
mkdir -p "$work" "$lower" "$mnt" "$(dirname "$out")"
chmod 0755 "$root" "$work" "$mnt"

truncate -s "${image_mb}M" "$img"
mkfs.ext4 -q -F "$img"
loopdev=$(losetup -f --show "$img")
mount "$loopdev" "$lower"

# The password goes through a file of mode 0600, never argv.
(umask 077 && printf 'pjdfstest passphrase\n' > "$work/pass")
wait_mounted() {
  for _ in $(seq 300); do
    mountpoint -q "$mnt" && return 0
    kill -0 "$daemon_pid" 2> /dev/null || break
    sleep 0.1
  done
  echo "pjdfstest.sh: $mnt did not mount; daemon log:" >&2
  cat "$log" >&2
  return 1
}
if [[ $transport == gocryptfs ]]; then
  mkdir "$lower/cipher"
  gocryptfs -q -init -passfile "$work/pass" "$lower/cipher" > /dev/null
  gocryptfs -fg -q -allow_other -passfile "$work/pass" "$lower/cipher" "$mnt" > "$log" 2>&1 &
  daemon_pid=$!
else
  node "$repo/dist/src/cli/main.js" init -q "${init_args[@]}" --passfile "$work/pass" "$lower/cipher"
  node "$repo/dist/src/cli/main.js" mount -f --allow-other --transport "$transport" "${mount_args[@]}" \
    --passfile "$work/pass" "$lower/cipher" "$mnt" > "$log" 2>&1 &
  daemon_pid=$!
fi
wait_mounted
rm -f "$work/pass"
# pjdfstest's other uids must reach the directory they test in.
chmod 0755 "$mnt"

targets=()
if ((${#tests[@]})); then
  for t in "${tests[@]}"; do
    [[ -e $pjd/tests/$t ]] || { echo "pjdfstest.sh: no test $t under $pjd/tests" >&2; exit 2; }
    targets+=("$pjd/tests/$t")
  done
else
  targets=("$pjd/tests")
fi

echo "pjdfstest.sh: running pjdfstest on $transport ($(date -u +%T)); log in $prove_log" >&2
# Each .t file runs under timeout: a hung operation fails that file (Wstat 124/137), not the run;
# the whole run has a deadline too (then the summary says prove did not finish).
set +e
(cd "$mnt" && timeout -k 30 "$total_timeout" prove -r -v --timer --exec "timeout -k 10 $per_file_timeout /bin/sh" "${targets[@]}") > "$prove_log" 2>&1
prove_rc=$?
set -e
alive=yes
kill -0 "$daemon_pid" 2> /dev/null || alive="no (it exited during the run: see the daemon log)"

# The summary: prove's report, with names relative to tests/ and the 'not ok' lines of each file.
python3 - "$prove_log" "$pjd/tests/" "$transport${mount_args[*]:+ ${mount_args[*]}}" "$alive" > "$out" << 'PY'
import re, sys
log, prefix, transport, alive = sys.argv[1:]
lines = open(log, errors='replace').read().splitlines()
rel = lambda p: p[len(prefix):] if p.startswith(prefix) else p
total = None
for l in lines:
    m = re.match(r'Files=(\d+), Tests=(\d+)', l)
    if m:
        total = (int(m.group(1)), int(m.group(2)))
# prove's report lists every file with something to say: failures, a bad plan, a non-zero exit
# (a timeout: 124 or 137 in the wait status), or only TODO tests that passed (not a failure).
report = {}          # file -> [wstat, failed count, failed list, other problems]
cur = None
field = None
in_report = False
for l in lines:
    if l.startswith('Test Summary Report'):
        in_report = True
        continue
    if not in_report or l.startswith('---'):
        continue
    if l.startswith('Files='):
        break
    m = re.match(r'^(\S+\.t)\s+\(Wstat: (\d+).*?Tests: (\d+) Failed: (\d+)\)', l)
    if m:
        cur = rel(m.group(1))
        report[cur] = [int(m.group(2)), int(m.group(4)), '', []]
        field = None
        continue
    if cur is None:
        continue
    m = re.match(r'^  (\S[^:]*):\s*(.*)$', l)
    if m:
        field = m.group(1)
        if field in ('Failed test', 'Failed tests'):
            report[cur][2] = m.group(2).strip()
        elif field != 'TODO passed':
            report[cur][3].append(l.strip())
    elif l.startswith('    ') and field in ('Failed test', 'Failed tests'):
        report[cur][2] += ', ' + l.strip()
    elif l.startswith('    ') and field != 'TODO passed' and l.strip():
        report[cur][3].append(l.strip())
failed = {f: v for f, v in report.items() if v[0] or v[1] or v[3]}
# 'not ok' lines per file, from the verbose part of the log.
notok = {}
cur = None
for l in lines:
    m = re.match(r'^(?:\[[\d:]+\] )?(\S+\.t) \.\.', l)
    if m:
        cur = rel(m.group(1))
        continue
    if cur and l.startswith('not ok') and '# TODO' not in l:
        notok.setdefault(cur, []).append(l)
failed_subtests = sum(v[1] for v in failed.values())
print(f'pjdfstest on darefs --transport {transport}' if transport != 'gocryptfs' else 'pjdfstest on gocryptfs')
if total:
    print(f'files: {len(failed)} of {total[0]} failed')
    print(f'subtests: {failed_subtests} of {total[1]} failed')
    # A file cut short (timeout, crash) does not count what it never ran.
    unrun = sum(int(m.group(1)) - int(m.group(2)) for v in failed.values() for o in v[3]
                for m in [re.search(r'planned (\d+) tests but ran (\d+)', o)] if m)
    if unrun:
        print(f'subtests planned but never run: {unrun}')
else:
    print('files: prove did not finish (no Files= line): see the prove log')
print(f'daemon alive at the end: {alive}')
print()
for f in sorted(failed):
    wstat, n, lst, other = failed[f]
    extra = f' wstat {wstat}' if wstat else ''
    print(f'{f}: {n} failed{extra}: {lst}'.rstrip(': '))
    for o in other:
        print(f'    {o}')
print()
for f in sorted(notok):
    for l in notok[f]:
        # symlink/03's 1 KiB paths: whole in the prove log.
        print(f'{f}: {l if len(l) <= 400 else l[:400] + " ..."}')
PY
cat "$out"
echo "pjdfstest.sh: results in $out (prove exit $prove_rc)" >&2
