#!/usr/bin/env bash
# Deployment checks, package area: scripts/build-deb (debug profile) makes the `jantar`
# .deb with the expected contents and conffiles; its maintainer scripts enable and
# start nothing and its units verify with their /usr/bin paths; dpkg installs,
# reinstalls (an edited conffile kept), removes and purges it in a scratch root; and
# `cargo install --path bins/<role>` installs each binary.
#
# Needs: cargo-deb (scripts/setup installs the pinned version); apt dpkg-dev, binutils,
# systemd (installed when missing); the workspace's debug binaries (built here).
# Environment: see lib.sh.
#
#   .ci/checks/package.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

section "setup"
setup_packages dpkg-dev binutils systemd
setup_build
tools "$(cargo deb --version); $(dpkg-deb --version | sed -n 1p)" "$(systemd-analyze --version | sed -n 1p)"

section "packaging"
# scripts/build-deb from the debug profile (the build is a no-op after the workspace
# build; --strip and --fast keep packaging quick), then what the package promises.
debdir=$work/deb
deb_build() {
  local pkg role want=() absent=0 f
  rm -rf "$debdir"
  scripts/build-deb --profile dev --output "$debdir" -- --strip --fast
  pkg=$(echo "$debdir"/jantar_*.deb)
  [ -f "$pkg" ]
  dpkg-deb --info "$pkg"
  dpkg-deb --contents "$pkg" | tee "$debdir/contents"
  [ "$(dpkg-deb --field "$pkg" Package)" = jantar ]
  [[ $(dpkg-deb --field "$pkg" Depends) == *libc6* ]]
  for role in bootstrap relay peer; do
    want+=("usr/bin/jantar-$role" "usr/lib/systemd/system/jantar-$role.service"
      "usr/share/man/man1/jantar-$role.1.gz" "usr/share/man/man1/jantar-$role-generate.1.gz"
      "usr/share/bash-completion/completions/jantar-$role"
      "usr/share/zsh/vendor-completions/_jantar-$role"
      "usr/share/fish/vendor_completions.d/jantar-$role.fish" "etc/jantar/$role.cfg")
  done
  want+=(usr/lib/systemd/user/jantar-peer.service usr/share/doc/jantar/copyright)
  awk '{print $6}' "$debdir/contents" >"$debdir/paths"
  for f in "${want[@]}"; do
    grep -qxF "./$f" "$debdir/paths" || { echo "missing: /$f"; absent=1; }
  done
  [ "$absent" = 0 ]
  # Exactly the four units, and nothing outside the Debian paths.
  [ "$(grep -c '/systemd/.*\.service$' "$debdir/contents")" = 4 ]
  if grep -E ' \./(usr/local|opt|home|root|var)/' "$debdir/contents"; then
    echo "files outside the Debian paths"
    return 1
  fi
  diff <(dpkg-deb --info "$pkg" conffiles | sort) \
    <(printf '/etc/jantar/%s.cfg\n' bootstrap peer relay)
  echo "contents and conffiles as expected"
}
# The maintainer scripts never enable or start a unit; the packaged units verify with
# their /usr/bin paths (system units against a root with the host's units, the user unit
# in a scratch user manager with its binary path mapped into the extracted tree).
deb_units() {
  local pkg x=$debdir/extract home=$debdir/user-home role out f
  pkg=$(echo "$debdir"/jantar_*.deb)
  rm -rf "$debdir/control" "$x" "$home"
  dpkg-deb --control "$pkg" "$debdir/control"
  for f in postinst prerm postrm; do sh -n "$debdir/control/$f"; done
  if sed 's/#.*//' "$debdir"/control/{postinst,prerm,postrm} | grep -E \
    '(systemctl|deb-systemd-invoke|deb-systemd-helper)([[:space:]]+--?[a-z-]+)*[[:space:]]+(enable|reenable|preset|start|restart|unmask)([[:space:]]|$)'; then
    echo "a maintainer script enables or starts a unit"
    return 1
  fi
  dpkg-deb --extract "$pkg" "$x"
  if grep -E '^Exec' "$x"/usr/lib/systemd/*/*.service | grep -Ev ':Exec[A-Za-z]*=/usr/bin/jantar-'; then
    echo "a packaged unit runs something else than /usr/bin/jantar-*"
    return 1
  fi
  cp -an /usr/lib/systemd/system/. "$x/usr/lib/systemd/system/"
  for role in bootstrap relay peer; do verify_unit "$x" "jantar-$role.service"; done
  mkdir -p "$home/.config/systemd/user" "$work/xdg-runtime"
  chmod 0700 "$work/xdg-runtime"
  sed "s|=/usr/bin/jantar-peer|=$x/usr/bin/jantar-peer|" "$x/usr/lib/systemd/user/jantar-peer.service" \
    >"$home/.config/systemd/user/jantar-peer.service"
  out=$(HOME=$home XDG_RUNTIME_DIR=$work/xdg-runtime systemd-analyze --user verify \
    "$home/.config/systemd/user/jantar-peer.service" 2>&1) || { echo "$out"; return 1; }
  [ -z "$out" ] || { echo "$out"; return 1; }
  echo "user/jantar-peer.service: verified"
}
# dpkg into a scratch root with its own database and just a /bin/sh, so that dpkg runs
# the maintainer scripts chrooted there, as on a host without systemd running (libc6 is
# not in that database, hence --force-depends): the binaries run, the configs pass
# --check, no unit is enabled, an edited conffile survives a reinstall, remove keeps the
# configs and purge removes them.
deb_install() {
  local pkg root=$debdir/root version role f
  pkg=$(echo "$debdir"/jantar_*.deb)
  rm -rf "$root"
  mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/tmp"
  touch "$root/var/lib/dpkg/status"
  for f in /bin/sh $(ldd "$(readlink -f /bin/sh)" | grep -o '/[^ ]*'); do
    cp -L --parents "$f" "$root"
  done
  dpkg_root() { dpkg --root="$root" --force-depends --log=/dev/null "$@"; }
  dpkg_root --install "$pkg"
  dpkg_root --status jantar | grep -qx 'Status: install ok installed'
  version=$(dpkg-deb --field "$pkg" Version)
  "$root/usr/bin/jantar-peer" --version
  [ "$("$root/usr/bin/jantar-peer" --version)" = "jantar-peer ${version%-*}" ]
  for role in bootstrap relay peer; do
    "$root/usr/bin/jantar-$role" -c "$root/etc/jantar/$role.cfg" --check
  done
  if find "$root/etc" "$root/usr/lib/systemd" -name '*.wants' -o -type l | grep .; then
    echo "the package enabled something"
    return 1
  fi
  echo "# edited" >>"$root/etc/jantar/peer.cfg"
  dpkg_root --install "$pkg"
  grep -qx '# edited' "$root/etc/jantar/peer.cfg"
  dpkg_root --remove jantar
  [ ! -e "$root/usr/bin/jantar-peer" ]
  [ -f "$root/etc/jantar/peer.cfg" ]
  dpkg_root --purge jantar
  [ ! -e "$root/etc/jantar/peer.cfg" ]
  if dpkg_root --status jantar 2>/dev/null | grep '^Status: install'; then
    echo "still installed after purge"
    return 1
  fi
  echo "installed, reinstalled with the edited conffile kept, removed, purged"
}
check "scripts/build-deb: .deb contents and conffiles" deb_build
check ".deb: maintainer scripts enable nothing, units verify" deb_units
check ".deb: dpkg install/reinstall/remove/purge (scratch root)" deb_install

# The binaries install with cargo (the peer guide's first way); the shared target
# directory makes this a copy, not a second build.
cargo_install() {
  local root=$work/cargo-install role
  rm -rf "$root"
  for role in bootstrap relay peer; do
    CARGO_TARGET_DIR=$target cargo install --locked --debug --path "bins/$role" --root "$root"
    "$root/bin/jantar-$role" --version
  done
  rm -rf "$root"
}
check "cargo install --path bins/{bootstrap,relay,peer}" cargo_install

summary
