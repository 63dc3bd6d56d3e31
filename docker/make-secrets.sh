#!/bin/sh
# Writes the secrets docker/docker-compose.yml mounts (docker secrets), once: an existing
# file is kept.  The folder is readable by its owner only; the files inside must be
# readable by the containers' users (callflow 10001, postgres, grafana), hence 0644
# inside a 0700 folder.
set -eu
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$dir"
chmod 700 "$dir"
random() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
write() {  # write NAME CONTENT
    if [ -s "$dir/$1" ]; then
        echo "kept    $dir/$1"
    else
        (umask 022; printf '%s\n' "$2" > "$dir/$1")
        echo "written $dir/$1"
    fi
}
write ari_password "$(random)"
write ami_secret "$(random)"
write db_password "$(random)"
write api_token "admin:$(random)"
write grafana_admin_password "$(random)"
