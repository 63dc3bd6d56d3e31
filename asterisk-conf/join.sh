#!/bin/sh
# join.sh -- add callflow to an existing Asterisk configuration, never replacing it.
#
#   asterisk-conf/join.sh [ETC]        (ETC: default /etc/asterisk)
#
# 1. copies asterisk-conf/callflow/*.conf to ETC/callflow/, except a file already there
#    (it holds the site's trunks, phones and secrets: an upgrade never overwrites it;
#    compare with "diff -r asterisk-conf/callflow ETC/callflow" and merge by hand);
# 2. appends to each of the PBX's own files the one line that includes its callflow
#    file ("#include callflow/extensions_callflow.conf" at the end of extensions.conf...;
#    each callflow file names its host on its "; callflow-include: FILE" line), unless
#    the line is there already. Nothing else of ETC is changed or deleted.
# A host file that does not exist is an error (a stock Asterisk has them all): nothing
# is changed then. Undo: delete the "#include callflow/..." lines and ETC/callflow.
# CALLFLOW_JOIN_FROM names another folder of include files (the test bench's, the
# site's own in docker).  Runs with /bin/sh (dash) as root or as the files' owner.
set -eu

HERE="$(cd "$(dirname "$0")" && pwd)"
ETC="${1:-/etc/asterisk}"
FROM="${CALLFLOW_JOIN_FROM:-$HERE/callflow}"

die() { echo "join.sh: $*" >&2; exit 1; }

[ -d "$ETC" ] || die "$ETC: no such folder (Asterisk's configuration)"
[ -d "$FROM" ] || die "$FROM: no such folder"

host_of() {   # the PBX file that includes $1
    sed -n 's/^; callflow-include: *\([A-Za-z0-9_.-]*\.conf\) *$/\1/p' "$1" | head -n 1
}

# Check every host first: all or nothing.
for f in "$FROM"/*.conf; do
    [ -e "$f" ] || die "$FROM holds no *.conf"
    host="$(host_of "$f")"
    [ -n "$host" ] || die "$f: no '; callflow-include: FILE' line"
    [ -f "$ETC/$host" ] || die "$ETC/$host is missing: it must exist (a stock one will do) before callflow joins it"
done

mkdir -p "$ETC/callflow"
for f in "$FROM"/*.conf; do
    name="$(basename "$f")"
    if [ -e "$ETC/callflow/$name" ]; then
        echo "join.sh: $ETC/callflow/$name kept (already there)"
    else
        cp "$f" "$ETC/callflow/$name"
        chmod 640 "$ETC/callflow/$name"   # secrets: never world-readable
        echo "join.sh: $ETC/callflow/$name installed"
    fi
    host="$(host_of "$f")"
    line="#include callflow/$name"
    if grep -qxF "$line" "$ETC/$host"; then
        continue
    fi
    # A file that does not end with a newline would glue the line to its last one.
    [ -s "$ETC/$host" ] && [ "$(tail -c 1 "$ETC/$host" | od -An -c | tr -d ' ')" != '\n' ] &&
        printf '\n' >> "$ETC/$host"
    printf '; callflow (asterisk-conf/join.sh): keep at the end of the file\n%s\n' "$line" >> "$ETC/$host"
    echo "join.sh: $ETC/$host includes callflow/$name"
done
# Voicemail: the one module choice callflow makes (modules_callflow.conf noloads the ODBC
# and IMAP variants: under autoload, a variant that declines unregisters VoiceMail()).
noloads() {   # FILE MODULE-REGEX: whether FILE noloads the module ("noload => x" or "= x")
    [ -f "$1" ] && sed 's/;.*//' "$1" | tr -d ' \t\r' | grep -qxE "noload=>?$2"
}
mods="$ETC/modules.conf" ours="$ETC/callflow/modules_callflow.conf"
if noloads "$mods" 'app_voicemail\.so'; then
    if noloads "$ours" 'app_voicemail_odbc\.so'; then
        echo "join.sh: WARNING: modules.conf noloads app_voicemail.so (voicemail in ODBC" \
             "or IMAP?) and $ours noloads app_voicemail_odbc.so: the PBX has no voicemail" \
             "at all; delete the line of your variant in $ours" >&2
    fi
elif [ -f "$ours" ] && ! noloads "$ours" 'app_voicemail_odbc\.so' &&
     ! noloads "$mods" 'app_voicemail_odbc\.so'; then
    echo "join.sh: WARNING: $ours (kept) lacks 'noload => app_voicemail_odbc.so': on" \
         "Debian, VoiceMail() is then missing; see asterisk-conf/callflow/modules_callflow.conf" >&2
fi
# Asterisk reads its files as the asterisk user (Debian): give it the new ones.
if [ "$(id -u)" = 0 ] && getent group asterisk >/dev/null 2>&1; then
    chgrp -R asterisk "$ETC/callflow"
    chmod 750 "$ETC/callflow"
fi
