#!/bin/sh
# Starts Asterisk in the container: Debian's stock /etc/asterisk joined with callflow's
# include files, and the secrets.
#
# 1. /etc/asterisk is the image's stock configuration (the asterisk package's files);
#    at every start /etc/asterisk/callflow is rebuilt from the image's copy of
#    asterisk-conf/callflow/, the site's own include files mounted in $SITE_DIR
#    (pjsip_callflow.conf with the trunks and phones, extensions_callflow.conf's
#    settings, voicemail_callflow.conf...; pjsip_callflow_transport.conf for NAT)
#    replacing those of the same name, and
#    asterisk-conf/join.sh adds the "#include callflow/..." lines (once);
# 2. the ARI password and the AMI secret come from docker secrets (ari_password,
#    ami_secret); ARI (http.conf) and AMI (manager.conf) listen on the container's
#    network instead of loopback, AMI accepts only $AMI_PERMIT (the compose network);
# 3. any CHANGE-ME left (a phone password never set) stops the start: a guessable SIP
#    password is an open door for toll fraud;
# 4. Asterisk runs in the foreground and drops root for the asterisk user.
#
# CALLFLOW_RENDER_ONLY=1 stops after step 3 (the tests run it on temporary folders).
set -eu

TEMPLATE="${TEMPLATE_DIR:-/usr/local/share/callflow/asterisk-conf}"
SITE="${SITE_DIR:-/etc/callflow-asterisk}"
CONF="${CONF_DIR:-/etc/asterisk}"
SECRETS="${SECRETS_DIR:-/run/secrets}"
PERMIT="${AMI_PERMIT:-127.0.0.1/255.255.255.255}"

die() { echo "callflow-asterisk: $*" >&2; exit 1; }

secret() {
    f="$SECRETS/$1"
    [ -s "$f" ] || die "missing docker secret $f (docker/make-secrets.sh writes it)"
    v="$(tr -d '\r\n' < "$f")"
    case "$v" in
        *[!A-Za-z0-9._+=-]*) die "secret $1: only letters, digits and ._+=- please" ;;
    esac
    [ "${#v}" -ge 16 ] || die "secret $1: at least 16 characters please"
    printf '%s' "$v"
}

case "$PERMIT" in
    *[!0-9./]*) die "AMI_PERMIT must look like 172.30.0.0/255.255.255.0" ;;
esac

ari="$(secret ari_password)"
ami="$(secret ami_secret)"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp "$TEMPLATE"/callflow/*.conf "$stage"/
# The image's Asterisk is the stock one: it has no SIP transport of its own.
cp "$TEMPLATE"/optional/pjsip_callflow_transport.conf "$stage"/
if [ -d "$SITE" ]; then
    for f in "$SITE"/*.conf; do
        [ -e "$f" ] && cp "$f" "$stage"/
    done
fi
rm -rf "$CONF/callflow"
CALLFLOW_JOIN_FROM="$stage" sh "$TEMPLATE/join.sh" "$CONF" > /dev/null

inc="$CONF/callflow"
sed -i "s/^password = CHANGE-ME-ari-password\$/password = $ari/" "$inc/ari_callflow.conf"
sed -i "s/^secret = CHANGE-ME-ami-secret\$/secret = $ami/" "$inc/manager_callflow.conf"
sed -i "s|^permit = 127\.0\.0\.1/255\.255\.255\.255\$|permit = $PERMIT|" "$inc/manager_callflow.conf"
# The stock files' own bindaddr lines too: Asterisk may keep the first value it reads.
sed -i "s/^bindaddr *= *127\.0\.0\.1\$/bindaddr = 0.0.0.0/" \
    "$inc/http_callflow.conf" "$CONF/http.conf" "$CONF/manager.conf"

left="$(grep -l '^[^;]*CHANGE-ME' "$inc"/*.conf || true)"
if [ -n "$left" ]; then
    die "CHANGE-ME is still in: $(echo "$left" | xargs -n1 basename | tr '\n' ' ')- mount the practice's own files in $SITE (see docker/README.md)"
fi
if id asterisk >/dev/null 2>&1; then
    chown -R root:asterisk "$inc"
    chmod 750 "$inc"
    chmod 640 "$inc"/*.conf
fi

[ "${CALLFLOW_RENDER_ONLY:-0}" = 1 ] && exit 0
exec /usr/sbin/asterisk -f -n -U asterisk -G asterisk
