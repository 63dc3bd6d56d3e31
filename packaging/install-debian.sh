#!/bin/sh
# install-debian.sh -- install the callflow daemon on Debian (12 "bookworm" or newer, or
# an image based on it such as python:3.11-slim), the way README "Install" describes:
#
#   packaging/install-debian.sh [options] SOURCE
#
#   SOURCE          the wheel (callflow_pbx-*.whl, scripts/wheel-check builds it) or a
#                   source tree, installed with pip into the virtualenv /opt/callflow
#   --uid N         the callflow user's uid and gid (default: the system range)
#   --config FILE   the settings to install as /etc/callflow/callflow.toml (default: the
#                   repository's callflow.toml, its development state_dir dropped)
#   --flows DIR     the flows to install as /etc/callflow/dialplans (default: dialplans/)
#   --no-unit       no systemd unit (a container: the image's ENTRYPOINT runs the daemon)
#
# What it does, each step only if not done yet (it can run again for an upgrade: the
# package is reinstalled, the settings, flows and secrets already there are kept):
#   1. the system user and group callflow (no login, home /var/lib/callflow); with
#      Asterisk on this machine (its group exists), the settings installed read Asterisk's
#      CDR file ([cdr] file: the calls the dialplan fallback took), and callflow joins
#      the group asterisk when its settings read that file;
#   2. the virtualenv /opt/callflow with the package, and /usr/local/bin/callflow;
#   3. /etc/callflow (root, 755) with callflow.toml and dialplans/, /etc/callflow/secrets
#      (root:callflow, 750) for the ARI/AMI secret files;
#   4. /var/lib/callflow (callflow, 700): the call log, the spool, trunks.json;
#   5. packaging/callflow.service in /etc/systemd/system (enable it yourself).
# docker/callflow.Dockerfile runs it; tests/integration/test_install_debian.py runs it in
# a debootstrapped Debian bookworm chroot (scripts/test keeps it beside the sandbox).
# PYTHON (default python3, 3.11 or newer) and PIP_* variables (an index, --no-index with
# PIP_FIND_LINKS for an offline install) are honoured.
set -eu

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PYTHON="${PYTHON:-python3}"
PREFIX=/opt/callflow
ETC=/etc/callflow
STATE=/var/lib/callflow
uid=""
config=""
flows="$REPO/dialplans"
unit=1

die() { echo "install-debian.sh: $*" >&2; exit 1; }
say() { echo "install-debian.sh: $*"; }

while [ $# -gt 1 ]; do
    case "$1" in
        --uid) [ $# -gt 2 ] || die "--uid needs a number"; uid="$2"; shift ;;
        --config) [ $# -gt 2 ] || die "--config needs a file"; config="$2"; shift ;;
        --flows) [ $# -gt 2 ] || die "--flows needs a folder"; flows="$2"; shift ;;
        --no-unit) unit=0 ;;
        *) die "unknown option $1 (see the head of this script)" ;;
    esac
    shift
done
[ $# = 1 ] || die "usage: $0 [--uid N] [--config FILE] [--flows DIR] [--no-unit] WHEEL|SOURCE-DIR"
source="$1"
[ -e "$source" ] || die "$source: no such wheel or folder"
[ "$(id -u)" = 0 ] || die "must run as root (it creates a user and writes /opt, /etc, /var)"
case "$uid" in *[!0-9]*) die "--uid must be a number" ;; esac
[ -z "$config" ] || [ -f "$config" ] || die "$config: no such settings file"
[ -d "$flows" ] || die "$flows: no such flows folder"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
    die "$PYTHON is missing or older than 3.11 (apt-get install python3 python3-venv)"

# 1. the user
if ! getent group callflow >/dev/null; then
    groupadd --system ${uid:+--gid "$uid"} callflow
fi
if ! getent passwd callflow >/dev/null; then
    useradd --system ${uid:+--uid "$uid"} --gid callflow --home-dir "$STATE" \
        --no-create-home --shell /usr/sbin/nologin callflow
    say "user callflow created"
fi

# Asterisk on this machine (its group exists): the settings installed read its CDR file.
asterisk_here=0
if getent group asterisk >/dev/null; then
    asterisk_here=1
fi

# 2. the package
[ -x "$PREFIX/bin/pip" ] || "$PYTHON" -m venv "$PREFIX"
"$PREFIX/bin/pip" install --no-cache-dir --no-warn-script-location --quiet "$source"
ln -sf "$PREFIX/bin/callflow" /usr/local/bin/callflow
say "$("$PREFIX/bin/callflow" --version) in $PREFIX"

# 3. settings and flows: the admin's once installed, never overwritten
install -d -m 755 "$ETC"
if [ ! -e "$ETC/callflow.toml" ]; then
    if [ -n "$config" ]; then
        install -m 644 "$config" "$ETC/callflow.toml"
    else
        # The checkout's state_dir ("var") is for development: a system install keeps
        # its data in /var/lib/callflow, the default.  With Asterisk here, [cdr] file is
        # its CDR file, so that the calls the fallback takes are logged.
        cdr='s|^# \(file = "/var/log/asterisk/cdr-custom/callflow-cdr.json"\)|\1|'
        [ "$asterisk_here" = 1 ] || cdr=""
        sed -e '/^state_dir *= *"var"/d' ${cdr:+-e "$cdr"} "$REPO/callflow.toml" \
            > "$ETC/callflow.toml.new"
        chmod 644 "$ETC/callflow.toml.new"
        if [ "$asterisk_here" = 1 ]; then
            grep -q '^file = "/var/log/asterisk/cdr-custom/callflow-cdr.json"' \
                "$ETC/callflow.toml.new" || die "callflow.toml: no [cdr] file line to turn on"
        fi
        mv "$ETC/callflow.toml.new" "$ETC/callflow.toml"  # whole, or not at all
        if [ "$asterisk_here" = 0 ]; then
            say "no Asterisk on this machine: [cdr] file left empty (the calls the" \
                "dialplan fallback takes are not logged: README, Install)"
        fi
    fi
    say "$ETC/callflow.toml installed"
fi
if [ ! -e "$ETC/dialplans" ]; then
    cp -r "$flows" "$ETC/dialplans"
    chmod -R u=rwX,go=rX "$ETC/dialplans"
    say "$ETC/dialplans installed"
fi
install -d -m 750 -g callflow "$ETC/secrets"

# The daemon reads Asterisk's CDR file, which is Asterisk's group's (asterisk-conf/README.md,
# "Call records"): callflow joins that group only when its settings read the file.  The
# unit hides the rest of what the group may read (voicemail, Asterisk's state and socket).
joined=0
if [ "$asterisk_here" = 1 ] && grep -q '^file *= *"' "$ETC/callflow.toml"; then
    if ! id -nG callflow | tr ' ' '\n' | grep -qx asterisk; then
        usermod -a -G asterisk callflow
        joined=1
        say "user callflow added to group asterisk (it reads Asterisk's CDR file)"
    fi
elif [ "$asterisk_here" = 1 ]; then
    say "Asterisk is on this machine but $ETC/callflow.toml reads no CDR file ([cdr] file):" \
        "calls the dialplan fallback takes are not logged (README, Install)"
fi

# 4. the data
install -d -m 700 -o callflow -g callflow "$STATE"

# 5. the systemd unit
if [ "$unit" = 1 ]; then
    install -d -m 755 /etc/systemd/system
    install -m 644 "$HERE/callflow.service" /etc/systemd/system/callflow.service
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
    say "unit installed: check as the daemon's user, then start it:" \
        "setpriv --reuid=callflow --regid=callflow --init-groups callflow check &&" \
        "systemctl enable --now callflow"
fi
if [ "$joined" = 1 ] && [ -d /run/systemd/system ] && systemctl is-active -q callflow; then
    say "callflow runs with its former groups: systemctl restart callflow"
fi
