#!/usr/bin/env bash
# `make run` on a fresh Debian machine without PostgreSQL or Redis, checked for real (`make test-fresh-machine`):
#
#   1. debootstrap a minimal Debian bookworm (Python 3.11, make, nothing else) into a temporary directory;
#   2. copy this working tree into it; install the virtualenv there (PyPI) and put the Debian packages of
#      PostgreSQL and Redis into its apt cache, without installing them (what a reachable mirror would serve);
#   3. in a network namespace of its own (only loopback, nothing listening: the host's PostgreSQL and Redis are
#      out of reach) and a PID namespace (everything it starts dies with it), run `make run` as root in the chroot
#      and wait until /readyz answers 200, then publish an event over REST and read it back.
#
# Needs root, debootstrap (installed with apt when missing) and network access to Debian's mirror and PyPI.
# Prints "FRESH MACHINE OK" at the end when every step passed; exits non-zero otherwise.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "fresh_machine: needs root (debootstrap, chroot, namespaces)"; exit 2; }
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null

ROOT=$(mktemp -d /var/tmp/er-fresh-machine.XXXXXX)
chmod 755 "$ROOT"  # apt downloads as the _apt user
cleanup() {
  for m in dev/pts dev proc sys; do umount -l "$ROOT/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$ROOT"
}
trap cleanup EXIT

echo "fresh_machine: debootstrap bookworm into $ROOT"
debootstrap --variant=minbase --include=python3,python3-venv,make,ca-certificates,procps \
  bookworm "$ROOT" http://deb.debian.org/debian >/dev/null
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# This machine reaches PyPI and Debian's mirror through an egress proxy with a CA of its own: the new root must
# trust it as the host does (what any machine behind that proxy is given, not part of the project).
cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/" 2>/dev/null || true
chroot "$ROOT" update-ca-certificates >/dev/null 2>&1
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$ROOT/etc/pip.conf"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
mount -t proc proc "$ROOT/proc"

echo "fresh_machine: copying the working tree"
mkdir -p "$ROOT/srv/eventrelay"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents -P {} "$ROOT/srv/eventrelay/" 2>/dev/null || true)
rm -f "$ROOT/srv/eventrelay/.env"

in_root() { chroot "$ROOT" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 bash -c "$1"; }

in_root 'command -v pg_ctlcluster psql redis-server redis-cli pg_isready' && { echo "fresh_machine: PostgreSQL or Redis is already in the new root"; exit 1; }
echo "fresh_machine: make install (PyPI) in the new root"
in_root 'cd /srv/eventrelay && make --no-print-directory install >/dev/null'
echo "fresh_machine: PostgreSQL and Redis packages into apt's cache, not installed"
in_root 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --download-only --no-install-recommends postgresql redis-server redis-tools >/dev/null'
umount -l "$ROOT/proc"

echo "fresh_machine: make run in a network namespace of its own"
unshare --net --pid --mount --fork bash -s "$ROOT" <<'INNER'
set -euo pipefail
ROOT=$1
ip link set lo up
mount -t proc proc "$ROOT/proc"
mount -t devpts devpts "$ROOT/dev/pts" 2>/dev/null || true
chroot "$ROOT" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 bash <<'RUN'
set -euo pipefail
cd /srv/eventrelay
(exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && { echo "fresh_machine: something answers on 5432 inside the namespace"; exit 1; }
make --no-print-directory run > /tmp/make-run.log 2>&1 &
ready=no
for _ in $(seq 240); do
  if .venv/bin/python -c 'import urllib.request,sys; sys.exit(0 if urllib.request.urlopen("http://127.0.0.1:9000/readyz", timeout=2).status == 200 else 1)' 2>/dev/null; then
    ready=yes; break
  fi
  sleep 1
done
cat /tmp/make-run.log | grep -v '^[0-9:]* \(web\|grpc\|worker\|beat\)\.1 ' | head -40
[ "$ready" = yes ] || { echo "fresh_machine: /readyz never answered 200"; tail -40 /tmp/make-run.log; exit 1; }
echo "fresh_machine: /readyz 200"
.venv/bin/python manage.py create_topic users >/dev/null
token=$(.venv/bin/python manage.py mint_token --topics users:123 --ttl 600 2>/dev/null | tail -n 1)
.venv/bin/python - "$token" <<'PY'
import json, sys, urllib.request
token = sys.argv[1]
def call(method, path, body=None):
    request = urllib.request.Request(f"http://127.0.0.1:9000{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status, json.loads(answer.read())
status, published = call("POST", "/api/v1/topics/users:123/events", {"name": "fresh.machine", "data": {"ok": True}})
assert status == 201, (status, published)
status, pulled = call("GET", "/api/v1/topics/users:123/events?offset=1")
names = [event["name"] for event in pulled["events"]]
assert names == ["fresh.machine"], pulled
print("fresh_machine: published over REST and pulled back:", names)
PY
grep -q "installing postgresql with apt" /tmp/make-run.log
grep -q "installing redis-server redis-tools with apt" /tmp/make-run.log
echo "FRESH MACHINE OK"
RUN
INNER
