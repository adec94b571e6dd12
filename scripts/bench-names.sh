#!/usr/bin/env bash
# Encrypted names against plain names (issue 13): `ls -lR` of the same tree of 2,000 files in 20
# directories on a volume with plain names and on one with encrypted names (the same 2,000 names,
# 20 of them longer than 159 bytes, so stored as long names), both mounted by this checkout, in
# alternating order. Before each timed listing the volume is remounted and the page, dentry and
# inode caches dropped, so every lookup and every name goes through the daemon.
# Prints the median per variant and the ratio encrypted / plain (1.2 is the target ceiling).
#
# Usage: scripts/bench-names.sh     Env: ROUNDS (default 7), BENCH_ROOT (default /tmp/darefs-bench-names),
#        DAREFS (default: this checkout's dist/src/cli/main.js), MOUNT_OPTS (extra mount options).
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "bench-names: run as root (drop_caches)" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
darefs=${DAREFS:-$here/dist/src/cli/main.js}
root=${BENCH_ROOT:-/tmp/darefs-bench-names}
rounds=${ROUNDS:-7}
cleanup() {
  local m
  for m in $(awk -v r="$root" '$2 ~ "^"r {print $2}' /proc/mounts); do umount -l "$m" 2> /dev/null || true; done
}
trap cleanup EXIT
cleanup
rm -rf "$root"; mkdir -p "$root"
printf 'bench names passphrase\n' > "$root/pass"

mount_variant() {  # NAME
  local d=$root/$1
  # shellcheck disable=SC2086  # options split on purpose
  node "$darefs" mount --passfile "$root/pass" ${MOUNT_OPTS:-} "$d/cipher" "$d/mnt" > /dev/null
}
umount_variant() {
  node "$darefs" umount "$root/$1/mnt" > /dev/null
}

for v in plain encrypted; do
  d=$root/$v
  mkdir -p "$d/cipher" "$d/mnt"
  node "$darefs" init -q --passfile "$root/pass" $([[ $v == encrypted ]] && echo --encrypt-names) "$d/cipher"
  mount_variant "$v"
  for ((i = 0; i < 20; i++)); do
    mkdir "$d/mnt/dir$i"
    for ((j = 0; j < 100; j++)); do
      if ((j == 0)); then name=$(printf 'long-%0170d' "$i"); else name="file-$j.txt"; fi
      printf 'file %d %d\n' "$i" "$j" > "$d/mnt/dir$i/$name"
    done
  done
  umount_variant "$v"
done

declare -A times
for ((r = 0; r < rounds; r++)); do
  order=(plain encrypted)
  ((r % 2)) && order=(encrypted plain)
  for v in "${order[@]}"; do
    mount_variant "$v"
    sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(date +%s.%N)
    n=$(ls -lR "$root/$v/mnt" | grep -c '^-')
    t1=$(date +%s.%N)
    umount_variant "$v"
    [[ $n == 2000 ]] || { echo "bench-names: $v listed $n files, not 2000" >&2; exit 1; }
    times[$v]+="$(echo "$t1 - $t0" | bc) "
  done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
p=$(echo "${times[plain]}" | median)
e=$(echo "${times[encrypted]}" | median)
echo "ls -lR of 2000 files, $rounds rounds, median seconds (all: plain ${times[plain]}| encrypted ${times[encrypted]})"
printf 'plain      %.4f s\nencrypted  %.4f s\nratio encrypted/plain  %.3f\n' "$p" "$e" "$(echo "$e / $p" | bc -l)"
