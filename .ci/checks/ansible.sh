#!/usr/bin/env bash
# Deployment checks, Ansible area: site.yml and each playbook pass --syntax-check,
# ansible-lint --profile production finds nothing, the example inventory converges into a
# scratch root (local connection) twice with changed=0 the second time, what it left is
# a working host (units as in systemd/, configs the binaries accept, rulesets nft
# accepts, keys with the inventory's peer ids, units that verify), the role refuses
# update settings the binaries would refuse (before changing anything) and installs a
# peer's trusted release keys (once jantar-peer accepts the update section; skipped
# before), and scripts/new-bootstrap-identity makes a vaulted key and never replaces one.
#
# Needs: apt python3-venv, nftables, systemd (installed when missing); the pinned
# Ansible tools of scripts/ansible-venv (made here); the workspace's debug binaries
# (built here). Environment: see lib.sh.
#
#   .ci/checks/ansible.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

section "setup"
setup_packages python3-venv nftables systemd
setup_build
setup_venv
tools "$(ansible --version | sed -n 1p); ansible-lint $(ansible-lint --nocolor --version 2>/dev/null | awk 'NR==1 {print $2}')" \
  "$(nft --version); $(systemd-analyze --version | sed -n 1p)"

section "ansible"
vault_pw=$repo/ansible/inventory/example/vault-password.EXAMPLE-ONLY
chmod 0600 "$vault_pw"
export ANSIBLE_CONFIG=$repo/ansible/ansible.cfg ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
syntax_check() {
  cd ansible
  for pb in site.yml playbooks/*.yml; do
    ansible-playbook --syntax-check --vault-password-file "$vault_pw" "$pb"
  done
}
lint() { cd ansible && ansible-lint --nocolor --profile production; }

converge_root=$work/converge
cat >"$work/converge-vars.json" <<JSON
{"ansible_connection": "local", "ansible_become": false,
 "ansible_python_interpreter": "{{ ansible_playbook_python }}",
 "jantar_root": "$converge_root/{{ inventory_hostname }}",
 "jantar_binary_dir": "$bins"}
JSON
converge() {
  cd ansible
  ansible-playbook site.yml --vault-password-file "$vault_pw" -e "@$work/converge-vars.json"
}
# The second run must change nothing on any host.
converge_again() {
  local out
  out=$(converge) || { echo "$out"; return 1; }
  echo "$out" | sed -n '/PLAY RECAP/,$p'
  ! echo "$out" | sed -n '/PLAY RECAP/,$p' | grep -E 'changed=[1-9]|failed=[1-9]|unreachable=[1-9]'
}
# What the converge left is a working host: units identical to systemd/, configs the
# binaries accept, rulesets nft accepts, keys with the inventory's peer ids, and units
# that verify against that root.
converge_result() {
  local host role root
  for host in boot-1 boot-2 relay-1 peer-1; do
    root=$converge_root/$host
    case $host in boot-*) role=bootstrap ;; relay-*) role=relay ;; *) role=peer ;; esac
    cmp "$root/etc/systemd/system/jantar-$role.service" "systemd/jantar-$role.service"
    cmp "$root/usr/local/bin/jantar-$role" "$bins/jantar-$role"
    "$root/usr/local/bin/jantar-$role" -c "$root/etc/jantar/$role.cfg" --check
    grep -qx 'auto_update: false' "$root/etc/jantar/$role.cfg"
    if [ "$role" != peer ]; then nft -c -f "$root/etc/nftables.conf"; echo "$host: nftables ok"; fi
    host_units "$root"
    verify_unit "$root" "jantar-$role.service"
  done
  for host in boot-1 boot-2; do
    local key=$converge_root/$host/var/lib/private/jantar-bootstrap/identity.key want got
    [ "$(stat -c %a "$key")" = 600 ]
    want=$(sed -n 's/^jantar_peer_id: //p' "ansible/inventory/example/host_vars/$host.yml")
    got=$("$bins/jantar-bootstrap" --data-dir "$(dirname "$key")" id 2>/dev/null | sed -n 1p)
    echo "$host: key $got, inventory $want"
    [ "$got" = "$want" ]
  done
  # The vaulted admin token is rendered in clear (not as vault ciphertext).
  grep -q '^  token: example-relay-admin-token-not-secret$' "$converge_root/relay-1/etc/jantar/relay.cfg"
  # Every node's config lists both bootstrap nodes, with their vaulted ids.
  while read -r id; do
    grep -q "/p2p/$id" "$converge_root/peer-1/etc/jantar/peer.cfg"
  done < <(sed -n 's/^jantar_peer_id: //p' ansible/inventory/example/host_vars/boot-*.yml)
}
# Update settings a binary would refuse are refused by the role, with its message, before
# it changes anything: auto_update on bootstrap and relay hosts, notify without keys, a
# malformed key, a threshold above the number of keys.
update_refusals() {
  local key=ed25519:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  cd ansible
  refused() { # refused PLAYBOOK HOST MESSAGE EXTRA-VARS-JSON
    local out
    if out=$(ansible-playbook "$1" --limit "$2" --vault-password-file "$vault_pw" \
      -e "@$work/converge-vars.json" -e "jantar_root=$work/refusals" -e "$4" 2>&1); then
      echo "$out"
      echo "accepted on $2: $4"
      return 1
    fi
    # The message may be wrapped in the output.
    echo "$out" | tr -s '[:space:]' ' ' | grep -qF "$3" || { echo "$out"; return 1; }
    echo "refused on $2: $4"
  }
  rm -rf "$work/refusals"
  refused playbooks/bootstrap.yml boot-1 "refuses auto_update other than false" '{"jantar_auto_update": "apply"}'
  refused playbooks/relay.yml relay-1 "refuses auto_update other than false" '{"jantar_auto_update": true}'
  refused playbooks/peer.yml peer-1 "use false, notify or apply" '{"jantar_auto_update": "always"}'
  refused playbooks/peer.yml peer-1 "jantar_update_trusted_keys is empty" '{"jantar_auto_update": "notify"}'
  refused playbooks/peer.yml peer-1 "which is not a release public key" \
    "{\"jantar_update_trusted_keys\": [\"$key\", \"ed25519:${key:8:63}\"]}"
  refused playbooks/peer.yml peer-1 "at most the number of keys" \
    "{\"jantar_update_trusted_keys\": [\"$key\"], \"jantar_update_threshold\": 2}"
  # Nothing was written.
  [ ! -e "$work/refusals" ]
}
# A peer with trusted release keys: /etc/jantar/release-keys (root, 0644) holds them,
# the config names it and passes --check, and a second run changes nothing. Skipped
# while jantar-peer does not accept the update section yet.
release_keys() {
  local root=$work/release-keys keys=() i vars out
  rm -rf "$work/release-holders"
  mkdir -p "$work/release-holders"
  for i in 1 2 3; do
    keys+=("$("$bins/jantar-peer" release keygen --out "$work/release-holders/$i.key" | grep -o 'ed25519:[0-9a-f]*')")
  done
  [ "${#keys[2]}" = 72 ]
  printf 'auto_update: notify\nupdate:\n  trusted_keys: ["%s"]\n' "${keys[0]}" >"$work/release-probe.cfg"
  if ! "$bins/jantar-peer" -c "$work/release-probe.cfg" --check; then
    echo "jantar-peer does not accept auto_update: notify with update.trusted_keys yet; skipped"
    return 77
  fi
  vars=$(printf '{"jantar_root": "%s", "jantar_auto_update": "notify", "jantar_update_threshold": 2, "jantar_update_trusted_keys": ["%s", "%s", "%s"]}' \
    "$root" "${keys[@]}")
  rm -rf "$root"
  cd ansible
  ansible-playbook playbooks/peer.yml --limit peer-1 --vault-password-file "$vault_pw" \
    -e "@$work/converge-vars.json" -e "$vars"
  cd ..
  [ "$(stat -c '%U %a' "$root/etc/jantar/release-keys")" = "root 644" ]
  diff <(grep -v '^#' "$root/etc/jantar/release-keys") <(printf '%s\n' "${keys[@]}")
  grep -qx "  trusted_keys_file: $root/etc/jantar/release-keys" "$root/etc/jantar/peer.cfg"
  grep -qx 'auto_update: notify' "$root/etc/jantar/peer.cfg"
  "$bins/jantar-peer" -c "$root/etc/jantar/peer.cfg" --check
  cd ansible
  out=$(ansible-playbook playbooks/peer.yml --limit peer-1 --vault-password-file "$vault_pw" \
    -e "@$work/converge-vars.json" -e "$vars")
  echo "$out" | sed -n '/PLAY RECAP/,$p'
  ! echo "$out" | sed -n '/PLAY RECAP/,$p' | grep -E 'changed=[1-9]|failed=[1-9]'
}
new_identity() {
  local inv=$work/identity-inventory out id
  rm -rf "$inv"
  mkdir -p "$inv"
  out=$(JANTAR_BOOTSTRAP=$bins/jantar-bootstrap scripts/new-bootstrap-identity "$inv" boot-9 --vault-password-file "$vault_pw")
  echo "$out"
  id=$(sed -n 's/^jantar_peer_id: //p' "$inv/host_vars/boot-9.yml")
  # A literal $ (the vault header), not an expansion.
  # shellcheck disable=SC2016
  head -c 14 "$inv/identities/boot-9.key" | grep -q '^\$ANSIBLE_VAULT'
  mkdir -p "$inv/check"
  ansible-vault decrypt --vault-password-file "$vault_pw" --output "$inv/check/identity.key" "$inv/identities/boot-9.key"
  chmod 0600 "$inv/check/identity.key"
  [ "$("$bins/jantar-bootstrap" --data-dir "$inv/check" id 2>/dev/null | sed -n 1p)" = "$id" ]
  # Never replaces an identity.
  ! JANTAR_BOOTSTRAP=$bins/jantar-bootstrap scripts/new-bootstrap-identity "$inv" boot-9 --vault-password-file "$vault_pw"
}
rm -rf "$converge_root"
check "ansible-playbook --syntax-check (site and each playbook)" syntax_check
check "ansible-lint --profile production" lint
check "converge into a scratch root (first run)" converge
check "converge again: changed=0 on every host" converge_again
check "converge result: units, configs, nftables, keys" converge_result
check "update settings refused: auto_update on bootstrap/relay, bad keys" update_refusals
check "a peer's trusted release keys: file, config, idempotent" release_keys
check "scripts/new-bootstrap-identity" new_identity

summary
