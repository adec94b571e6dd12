#!/bin/sh
# Unmount a darefs (FUSE) mount from a shell.
#   scripts/umount.sh [-l|--lazy] MOUNTPOINT
# Uses fusermount3/fusermount -u when installed (works for non-root users), else umount (root).
# A stale mount ("Transport endpoint is not connected") unmounts the same way. When the mount is
# busy, lists what holds it (fuser -vm, or a /proc scan) and exits 2; --lazy detaches it anyway.
set -u

usage() {
	echo "usage: $0 [-l|--lazy] MOUNTPOINT" >&2
	exit 64
}

lazy=0
mnt=
while [ $# -gt 0 ]; do
	case "$1" in
	-l | --lazy) lazy=1 ;;
	-h | --help) usage ;;
	--) shift; [ $# -eq 1 ] || usage; mnt=$1 ;;
	-*) usage ;;
	*) [ -z "$mnt" ] || usage; mnt=$1 ;;
	esac
	shift
done
[ -n "$mnt" ] || usage

# Canonical path without stat-ing the mount point itself (it may hang): parent + base name.
case "$mnt" in /*) ;; *) mnt="$(pwd)/$mnt" ;; esac
mnt=${mnt%/}
parent=$(dirname -- "$mnt")
parent=$(cd -- "$parent" 2>/dev/null && pwd -P) || parent=$(dirname -- "$mnt")
mnt="${parent%/}/$(basename -- "$mnt")"

# Is it a mount point? Compare against mountinfo's field 5, whose spaces etc. are \ooo escaped.
mounted() {
	awk -v want="$1" '
		function unesc(s,   out, i, c) {
			out = ""
			for (i = 1; i <= length(s); i++) {
				c = substr(s, i, 1)
				if (c == "\\" && substr(s, i + 1, 3) ~ /^[0-7][0-7][0-7]$/) {
					out = out sprintf("%c", (substr(s, i + 1, 1) * 64) + (substr(s, i + 2, 1) * 8) + substr(s, i + 3, 1))
					i += 3
				} else out = out c
			}
			return out
		}
		unesc($5) == want { found = 1 }
		END { exit !found }' /proc/self/mountinfo
}

if ! mounted "$mnt"; then
	echo "$mnt is not mounted" >&2
	exit 1
fi

try() {
	out=$("$@" 2>&1) && return 0
	printf '%s\n' "$out" >&2
	return 1
}

unmount() {
	if command -v fusermount3 >/dev/null 2>&1; then
		if [ $lazy -eq 1 ]; then try fusermount3 -u -z "$mnt"; else try fusermount3 -u "$mnt"; fi && return 0
	elif command -v fusermount >/dev/null 2>&1; then
		if [ $lazy -eq 1 ]; then try fusermount -u -z "$mnt"; else try fusermount -u "$mnt"; fi && return 0
	fi
	mounted "$mnt" || return 0
	if [ $lazy -eq 1 ]; then try umount -l "$mnt"; else try umount "$mnt"; fi
}

out=
unmount
if ! mounted "$mnt"; then
	exit 0
fi

case "$out" in
*[Bb]usy*)
	echo "$mnt is busy; held by:" >&2
	# fuser -m stats the mount point: bound it in time in case the filesystem hangs.
	listed=
	if command -v fuser >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1; then
		# (processes we may not inspect, e.g. in a sandbox, are noise here)
		listed=$(timeout -s KILL 5 fuser -vm "$mnt" 2>&1 | grep -v '^Cannot stat') || listed=
	fi
	if [ -n "$listed" ]; then
		printf '%s\n' "$listed" | sed 's/^/  /' >&2
	else
		for p in /proc/[0-9]*; do
			pid=${p#/proc/}
			hit=
			for l in "$p/cwd" "$p/root" "$p/exe" "$p"/fd/*; do
				t=$(readlink "$l" 2>/dev/null) || continue
				case "$t" in "$mnt" | "$mnt"/*) hit=yes; break ;; esac
			done
			[ -n "$hit" ] && echo "  pid $pid ($(cat "$p/comm" 2>/dev/null))" >&2
		done
	fi
	echo "close those, or run: $0 --lazy '$mnt'" >&2
	exit 2
	;;
esac
echo "could not unmount $mnt" >&2
exit 1
