#!/usr/bin/env bash
# Deployment checks, image area: deploy/Dockerfile (hadolint; scratch base, numeric
# non-root user, bootstrap entrypoint, HEALTHCHECK, crt-static; its Rust builds the
# locked dependencies) and deploy/compose.yaml (docker-compose config; its node configs
# and the reference configs pass --check). With JANTAR_DEPLOY_CHECKS_STATIC=1 (the
# default in CI) also the static build as the Dockerfile does it, those binaries in an
# image-like root (scripts/check-image-root), then the image's runtime stage built with
# podman and run alone, by role and as deploy/compose.yaml (a second full build:
# several minutes).
#
# Needs: root (namespaces; the podman checks are skipped, exit 77, without them); apt
# python3-venv, binutils, curl, iproute2, prometheus, podman, runc, netavark,
# aardvark-dns, iptables, busybox-static (installed when missing); hadolint and
# docker-compose from scripts/ansible-venv (made here); the workspace's debug binaries
# (built here). Environment: see lib.sh.
#
#   .ci/checks/image.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

section "setup"
setup_packages python3-venv binutils curl iproute2 prometheus podman runc netavark \
  aardvark-dns iptables busybox-static
setup_build
setup_venv
tools "hadolint $(hadolint --version | awk "{print \$NF}"); $(docker-compose version | sed -n 1p)" \
  "$(podman --version); $(runc --version | sed -n 1p)"

section "docker (the files; the image built from the runtime stage and run with podman)"
dockerfile_facts() {
  local f=deploy/Dockerfile
  grep -Eq '^FROM scratch$' "$f"
  grep -Eq '^USER [1-9][0-9]*:[1-9][0-9]*$' "$f"
  grep -Eq '^ENTRYPOINT \["/usr/local/bin/jantar-bootstrap"\]$' "$f"
  grep -Eq 'CMD \["/usr/local/bin/jantar-bootstrap", "healthcheck"\]' "$f"
  grep -q 'target-feature=+crt-static' "$f"
  echo "scratch base, numeric non-root user, bootstrap entrypoint, healthcheck, crt-static"
}
# The build image's Rust must build every locked dependency.
rust_version() {
  local want have
  have=$(sed -n 's/^ARG RUST_VERSION=//p' deploy/Dockerfile)
  want=$(cargo metadata --format-version 1 --locked --filter-platform x86_64-unknown-linux-gnu 2>/dev/null | python3 -c '
import json, sys
pkgs = json.load(sys.stdin)["packages"]
vs = [tuple(int(x) for x in p["rust_version"].split(".")[:2]) for p in pkgs if p.get("rust_version")]
print("%d.%d" % max(vs))')
  echo "Dockerfile RUST_VERSION $have, highest rust-version in the dependency graph $want"
  python3 -c "import sys; a=tuple(map(int,'$have'.split('.')[:2])); b=tuple(map(int,'$want'.split('.')[:2])); sys.exit(a < b)"
}
compose_config() {
  docker-compose -f deploy/compose.yaml config -q
  docker-compose -f deploy/compose.yaml --profile monitoring config -q
  docker-compose -f deploy/compose.yaml --profile monitoring config --services
}
# The compose configs load, and name the demo key's peer id.
compose_node_configs() {
  local tmp=$work/compose-key id
  rm -rf "$tmp"
  mkdir -p "$tmp"
  install -m 0600 deploy/compose/demo-bootstrap.key "$tmp/identity.key"
  id=$("$bins/jantar-bootstrap" --data-dir "$tmp" id 2>/dev/null | sed -n 1p)
  echo "demo bootstrap key: $id"
  "$bins/jantar-bootstrap" -c deploy/compose/bootstrap.cfg --check
  "$bins/jantar-relay" -c deploy/compose/relay.cfg --check
  "$bins/jantar-peer" -c deploy/compose/alice.cfg --check
  "$bins/jantar-peer" -c deploy/compose/bob.cfg --check
  for f in relay alice bob; do grep -q "/p2p/$id\"" "deploy/compose/$f.cfg"; done
  for role in bootstrap relay peer; do "$bins/jantar-$role" -c "deploy/config/$role.cfg" --check; done
}
static_dir=$work/static-target/x86_64-unknown-linux-gnu/debug
static_build() {
  local b
  RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$work/static-target \
    cargo build --locked --target x86_64-unknown-linux-gnu -p jantar-bootstrap -p jantar-relay -p jantar-peer
  for b in bootstrap relay peer; do
    if readelf -l "$static_dir/jantar-$b" | grep -q 'Requesting program interpreter'; then
      echo "jantar-$b is dynamically linked"
      return 1
    fi
    if readelf -d "$static_dir/jantar-$b" | grep -q NEEDED; then
      echo "jantar-$b needs shared libraries"
      return 1
    fi
    echo "jantar-$b: statically linked"
  done
  python3 scripts/check-node-contract "$static_dir"
}

# The image itself, built and run by a container engine: podman (Debian 12's 4.3,
# rootful), from the static binaries above. No registry can be reached here, so the
# Dockerfile's build stage (FROM rust:...-bookworm, running cargo) cannot run. Its
# runtime stage is built instead, taken unchanged from the last FROM to the end of
# deploy/Dockerfile, with the stage name `build` bound by --build-context to a directory
# holding what the build stage leaves behind: /out/bin with the three static binaries
# (mode 0755, as its `install -m 0755`), an empty /out/data and the CA bundle.
# Every podman command runs in fresh network and mount namespaces (in_netns) with its
# config, storage, state and networks under $pod, so neither the host's firewall and
# sysctls (netavark's bridge, NAT rules, ip_forward) nor its container storage are
# touched, and nothing can leave the machine.
pod=$work/podman
podman_env() {
  export CONTAINERS_CONF=$pod/containers.conf CONTAINERS_STORAGE_CONF=$pod/storage.conf
}
# in_netns FUNCTION ARGS...: FUNCTION in new network (loopback up) and mount namespaces.
in_netns() {
  if ! unshare --net --mount true 2>/dev/null; then
    echo "cannot create namespaces here (needs root); skipped"
    return 77
  fi
  unshare --net --mount --propagation private \
    bash -c 'set -euo pipefail; ip link set lo up; "$@"' in_netns "$@"
}
# A fresh podman root. runc, not crun: crun 1.8 refuses the hybrid cgroup layout that
# some hosts (this one) have. The ulimits: podman 4.3 asks for 1048576 open files and
# processes, which fails without CAP_SYS_RESOURCE, and lowers its own process limit to
# 32768, so it is given the hard limits it can pass on. No systemd here: podman cannot
# schedule health checks (no timers); they are run with `podman healthcheck run`.
podman_reset() {
  local nofile nproc
  nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
  if [ "$nofile" = unlimited ] || [ "$nofile" -gt 1048576 ]; then nofile=1048576; fi
  if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
  rm -rf "$pod"
  mkdir -p "$pod/storage" "$pod/run" "$pod/tmp" "$pod/networks"
  cat >"$pod/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$pod/storage"
runroot = "$pod/run"
EOF
  cat >"$pod/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$pod/events.log"
tmp_dir = "$pod/tmp"
[network]
network_config_dir = "$pod/networks"
EOF
}
# Whatever happens, no container outlives the namespaces of the check that started it.
podman_cleanup() { podman rm -f -a -t 0 >/dev/null 2>&1 || true; }
# wait_healthy CONTAINER: the image's HEALTHCHECK command, run in the container the way
# the engine's scheduler runs it, until it passes (30 s at most).
wait_healthy() {
  local _
  for _ in $(seq 1 60); do
    if podman healthcheck run "$1" >/dev/null 2>&1; then
      [ "$(podman inspect --format '{{.State.Health.Status}}' "$1")" = healthy ]
      echo "$1: healthy"
      return 0
    fi
    sleep 0.5
  done
  echo "$1: HEALTHCHECK never passed"
  podman logs "$1" 2>&1 | tail -n 20
  return 1
}
# stop_clean CONTAINER: `podman stop` (SIGTERM, then SIGKILL after 10 s) ends it well
# within the grace period with exit code 0.
stop_clean() {
  local t0 code
  t0=$(date +%s%N)
  podman stop -t 10 "$1" >/dev/null
  code=$(podman inspect --format '{{.State.ExitCode}}' "$1")
  echo "$1: stopped in $((($(date +%s%N) - t0) / 1000000)) ms, exit $code"
  [ "$code" = 0 ]
  [ $(($(date +%s%N) - t0)) -lt 9000000000 ]
}

image_build() {
  podman_env
  podman_reset
  local df=deploy/Dockerfile ctx=$pod/build-stage file=$pod/Containerfile first m role got
  first=$(grep -n '^FROM ' "$df" | tail -n 1 | cut -d: -f1)
  [ "$(sed -n "${first}p" "$df")" = "FROM scratch" ]
  grep -Eq '^FROM rust:\$\{RUST_VERSION\}-bookworm AS build$' "$df"
  tail -n "+$first" "$df" >"$file"
  # Copied from the build stage only, and only what the stand-in holds (the real build
  # stage creates /out/bin and /out/data; the rust image has the CA bundle).
  if grep -E '^(COPY|ADD)' "$file" | grep -v -- '--from=build '; then
    echo "the runtime stage copies from something else than the build stage"
    return 1
  fi
  grep -q 'mkdir -p /out/bin /out/data' "$df"
  mkdir -p "$ctx/out/bin" "$ctx/out/data" "$ctx/etc/ssl/certs" "$pod/empty-context"
  for role in bootstrap relay peer; do install -m 0755 "$static_dir/jantar-$role" "$ctx/out/bin/"; done
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/etc/ssl/certs/"
  echo "runtime stage: lines $first-$(wc -l <"$df") of $df, unchanged"
  podman build --format docker --pull=never --build-context build="$ctx" -f "$file" \
    -t localhost/jantar:latest "$pod/empty-context"
  rm -rf "$ctx"
  # Compose's image: jantar:latest is docker.io/library/jantar:latest to the Docker API.
  podman tag localhost/jantar:latest docker.io/library/jantar:latest
  got=$(podman image inspect --format '{{.Config.User}} {{json .Config.Entrypoint}} {{.Config.WorkingDir}} {{json .Config.Env}}' jantar:latest)
  echo "config: $got"
  [ "$got" = '10001:10001 ["/usr/local/bin/jantar-bootstrap"] /data ["PATH=/usr/local/bin","STATE_DIRECTORY=/data","SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"]' ]
  got=$(podman image inspect jantar:latest | python3 -c 'import json, sys; i = json.load(sys.stdin)[0]
print(*(json.dumps(x, separators=(",", ":")) for x in (i["Healthcheck"]["Test"], i["Config"]["Volumes"], i["Config"]["ExposedPorts"])))')
  echo "        $got"
  [ "$got" = '["CMD","/usr/local/bin/jantar-bootstrap","healthcheck"] {"/data":{}} {"4001/tcp":{},"4001/udp":{}}' ]
  # Exactly these files; the binaries are the static ones.
  m=$(podman image mount jantar:latest)
  (cd "$m" && find . -mindepth 1 -printf '%p %u:%g %m\n' | sort) | tee "$pod/image-files"
  diff <(awk '{print $1}' "$pod/image-files") - <<'EOF'
./data
./etc
./etc/ssl
./etc/ssl/certs
./etc/ssl/certs/ca-certificates.crt
./usr
./usr/local
./usr/local/bin
./usr/local/bin/jantar-bootstrap
./usr/local/bin/jantar-peer
./usr/local/bin/jantar-relay
EOF
  grep -q '^./data 10001:10001 ' "$pod/image-files"
  for role in bootstrap relay peer; do
    grep -q "^./usr/local/bin/jantar-$role root:root 755$" "$pod/image-files"
    cmp "$m/usr/local/bin/jantar-$role" "$static_dir/jantar-$role"
  done
  podman image unmount jantar:latest >/dev/null
}

# The deployment guide's bootstrap node: /opt/jantar prepared as it says, then its
# `docker run` line (plus --health-interval disable: no systemd timers here).
image_run() {
  podman_env
  trap podman_cleanup EXIT
  local data=$pod/opt-jantar pid id logged
  rm -rf "$data"
  install -d -o 10001 -g 10001 -m 0700 "$data"
  install -o 10001 -g 10001 -m 0644 deploy/config/bootstrap.cfg "$data/bootstrap.cfg"
  podman run --rm -v "$data:/data" jantar:latest -c /data/bootstrap.cfg --check
  podman run -d --name jantar-bootstrap --restart unless-stopped \
    -p 4001:4001/tcp -p 4001:4001/udp -v "$data:/data" --health-interval disable \
    jantar:latest -c /data/bootstrap.cfg
  wait_healthy jantar-bootstrap
  # The process, seen from outside: uid/gid 10001 and no capabilities.
  pid=$(podman inspect --format '{{.State.Pid}}' jantar-bootstrap)
  grep -E '^(Uid|Gid|CapEff):' "/proc/$pid/status"
  [ "$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")" = "10001 10001 10001 10001" ]
  [ "$(awk '/^Gid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")" = "10001 10001 10001 10001" ]
  [ "$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")" = 0000000000000000 ]
  podman top jantar-bootstrap user group args
  # The key created on first start, and the guide's way to read its peer id.
  stat -c '/data/identity.key: uid %u gid %g mode %a' "$data/identity.key"
  [ "$(stat -c '%u %g %a' "$data/identity.key")" = "10001 10001 600" ]
  id=$(podman run --rm -v "$data:/data" jantar:latest --data-dir /data id | sed -n 1p)
  logged=$(podman logs jantar-bootstrap 2>&1 | grep -o 'peer_id[^ ]*12D3KooW[1-9A-HJ-NP-Za-km-z]*' | grep -o '12D3KooW.*' | sed -n 1p) || true
  echo "peer id: $id (logged: $logged)"
  [[ $id == 12D3KooW* ]]
  [ "$id" = "$logged" ]
  # The published port reaches the node.
  timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4001'
  echo "published 4001/tcp: connected"
  stop_clean jantar-bootstrap
  podman logs jantar-bootstrap >"$pod/bootstrap.log" 2>&1
  grep -q 'received SIGTERM' "$pod/bootstrap.log"
  podman rm jantar-bootstrap >/dev/null
}

# The relay and the peer, chosen with --entrypoint, with their reference configs (the
# relay's given an external address: it is ready once it has one); the image's
# HEALTHCHECK (jantar-bootstrap healthcheck) serves every role.
image_roles() {
  podman_env
  trap podman_cleanup EXIT
  local role data want got
  for role in relay peer; do
    data=$pod/data-$role
    rm -rf "$data"
    install -d -o 10001 -g 10001 -m 0700 "$data"
    if [ "$role" = relay ]; then
      sed '/^network:$/a\  external_addresses: ["/ip4/127.0.0.1/tcp/4001"]' deploy/config/relay.cfg >"$data/relay.cfg"
    else
      cp deploy/config/peer.cfg "$data/peer.cfg"
    fi
    chown 10001:10001 "$data/$role.cfg"
    want=$("$static_dir/jantar-$role" --version)
    got=$(podman run --rm --entrypoint "jantar-$role" jantar:latest --version)
    echo "--entrypoint jantar-$role --version: $got"
    [ "$got" = "$want" ]
    podman run --rm --entrypoint "jantar-$role" -v "$data:/data" jantar:latest -c "/data/$role.cfg" --check
    podman run -d --name "jantar-$role" --entrypoint "jantar-$role" -v "$data:/data" \
      --health-interval disable jantar:latest -c "/data/$role.cfg" >/dev/null
    wait_healthy "jantar-$role"
    [ "$(stat -c '%u %a' "$data/identity.key")" = "10001 600" ]
    stop_clean "jantar-$role"
    podman rm "jantar-$role" >/dev/null
  done
}

dc() { docker-compose -f deploy/compose.yaml "$@"; }
compose_down() {
  dc down -v -t 10 >/dev/null 2>&1 || true
  if [ -n "${scheduler_pid:-}" ]; then kill "$scheduler_pid" 2>/dev/null || true; fi
  if [ -n "${service_pid:-}" ]; then kill "$service_pid" 2>/dev/null || true; fi
  podman_cleanup
}
# deploy/compose.yaml as written, on podman's Docker-compatible API, without the
# monitoring profile (Prometheus and Grafana images cannot be pulled) and without
# --build (the image above is jantar:latest). Its key installer's busybox:1.37 is stood
# in for by a local image: Debian's static busybox, plus GNU install and its libraries
# (Debian's busybox has no install applet). Health checks are run every 2 s by a loop
# (podman's own scheduler needs systemd), so the depends_on conditions are exercised but
# not the compose file's intervals.
compose_up() {
  podman_env
  trap compose_down EXIT
  local root=$pod/busybox-root sock=$pod/podman.sock f c i out keydir demo_id
  rm -rf "$root"
  mkdir -p "$root/bin"
  cp /bin/busybox "$root/bin/"
  for c in $("$root/bin/busybox" --list); do [ "$c" = busybox ] || ln -s busybox "$root/bin/$c"; done
  for f in /usr/bin/install $(ldd /usr/bin/install | grep -o '/[^ ]*'); do cp -L --parents "$f" "$root"; done
  tar -C "$root" -c . | podman import -q \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["sh"]' - docker.io/library/busybox:1.37
  export DOCKER_HOST=unix://$sock
  podman system service --time=0 "$DOCKER_HOST" >"$pod/service.log" 2>&1 &
  service_pid=$!
  ( while :; do
      for c in $(podman ps -q --filter status=running 2>/dev/null); do podman healthcheck run "$c" >/dev/null 2>&1 || true; done
      sleep 2
    done ) &
  scheduler_pid=$!
  for _ in $(seq 1 50); do [ -S "$sock" ] && break; sleep 0.1; done
  dc up -d --no-build --pull never --wait --wait-timeout 120
  dc ps -a
  # The key installer ran once, and the bootstrap node uses the demo key from the volume.
  [ "$(podman inspect --format '{{.State.ExitCode}}' jantar-local-bootstrap-key-1)" = 0 ]
  keydir=$(podman volume inspect --format '{{.Mountpoint}}' jantar-local_bootstrap-data)
  [ "$(stat -c '%u %g %a' "$keydir/identity.key")" = "10001 10001 600" ]
  cmp "$keydir/identity.key" deploy/compose/demo-bootstrap.key
  demo_id=$("$bins/jantar-bootstrap" --data-dir "$keydir" id 2>/dev/null | sed -n 1p)
  # Admin endpoints published on loopback: alice holds a reservation on the relay, bob
  # has found alice through the DHT, the bootstrap node is the demo key's.
  for i in $(seq 1 60); do
    if out=$(python3 - "$demo_id" 9091 9092 9093 9094 <<'PY'
import json, sys, urllib.request
demo, ports = sys.argv[1], sys.argv[2:]
st = {}
for name, port in zip(["bootstrap", "relay", "alice", "bob"], ports):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/status",
        headers={"Authorization": "Bearer compose-demo-admin-token-not-secret"})
    st[name] = json.load(urllib.request.urlopen(req, timeout=3))
ok = True
def want(cond, what):
    global ok
    print(("ok   " if cond else "not yet ") + what)
    ok = ok and cond
want(st["bootstrap"]["peer_id"] == demo, f"bootstrap peer id {st['bootstrap']['peer_id']} is the demo key's")
want(all(s["ready"] for s in st.values()), "all four ready")
want(st["bootstrap"]["connected_peers"] >= 3, f"bootstrap connected to {st['bootstrap']['connected_peers']} peers")
res = json.dumps(st["alice"]["reservations"])
want(st["relay"]["peer_id"] in res, "alice holds a reservation on the relay")
want(st["alice"]["peer_id"] in json.dumps(st["bob"]["discovered_peers"]), "bob found alice through the DHT")
sys.exit(0 if ok else 1)
PY
    ); then break; fi
    sleep 1
  done
  echo "after $i tries:"
  echo "$out"
  if echo "$out" | grep -q '^not yet'; then return 1; fi
  # Published on the loopback; /readyz needs no token, /status does.
  curl -sf -o /dev/null http://127.0.0.1:9093/readyz
  [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9093/status)" = 401 ]
  # Stopped: every node exits 0 on SIGTERM.
  dc stop -t 10
  for c in bootstrap relay alice bob; do
    echo "$c: exit $(podman inspect --format '{{.State.ExitCode}}' "jantar-local-$c-1")"
    [ "$(podman inspect --format '{{.State.ExitCode}}' "jantar-local-$c-1")" = 0 ]
  done
  dc down -v -t 10
}
export -f podman_env podman_reset podman_cleanup wait_healthy stop_clean image_build image_run image_roles \
  dc compose_down compose_up
export pod static_dir bins
check "hadolint deploy/Dockerfile" hadolint deploy/Dockerfile
check "Dockerfile: base, user, entrypoint, healthcheck, static" dockerfile_facts
check "Dockerfile: Rust version builds the locked dependencies" rust_version
check "docker compose config (deploy/compose.yaml)" compose_config
check "compose and reference configs pass --check" compose_node_configs
if [ "$static" = 1 ]; then
  nfailed=${#failed[@]}
  check "static build (crt-static): no loader, no NEEDED, contract" static_build
  check "static binaries in an image-like root (chroot, uid 10001)" \
    env JANTAR_CHECK_DIR="$work" scripts/check-image-root "$static_dir"
  if [ "${#failed[@]}" -gt "$nfailed" ]; then
    echo "skip  the image (podman): the static binaries failed their checks"
  else
    check "podman build: the Dockerfile's runtime stage, unchanged" in_netns image_build
    check "podman run: guide's bootstrap command, uid 10001, healthy, stop" in_netns image_run
    check "podman run --entrypoint jantar-relay/-peer: healthy, stop" in_netns image_roles
    check "docker-compose up on podman: 4 nodes, reservation, DHT" in_netns compose_up
    # The empty cgroups podman's cgroupfs manager leaves behind (one in use stays).
    for d in /sys/fs/cgroup/*/libpod_parent; do
      if [ -d "$d" ]; then find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
    done
  fi
else
  echo "skip  static build and the image (set JANTAR_DEPLOY_CHECKS_STATIC=1; several minutes)"
fi

summary
