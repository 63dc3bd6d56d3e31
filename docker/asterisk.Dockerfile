# syntax=docker/dockerfile:1
# Asterisk 22: Debian's stock configuration joined with callflow's include files
# (asterisk-conf/callflow/, asterisk-conf/join.sh at every start).  Build from the
# repository's root:  docker build -f docker/asterisk.Dockerfile -t callflow-asterisk .
# Debian sid carries Asterisk 22 (Debian 12 has none).  The ARI password and AMI secret
# come from docker secrets at start (docker/asterisk/entrypoint.sh); Asterisk drops root
# for the `asterisk` user once started.

FROM debian:sid-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        asterisk asterisk-modules asterisk-core-sounds-en-gsm asterisk-core-sounds-fr-gsm \
        asterisk-moh-opsound-gsm ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && if [ -d /usr/share/asterisk/sounds/fr_CA_f_June ] && [ ! -e /usr/share/asterisk/sounds/fr ]; then \
        ln -s fr_CA_f_June /usr/share/asterisk/sounds/fr; fi
COPY asterisk-conf/ /usr/local/share/callflow/asterisk-conf/
COPY --chmod=755 docker/asterisk/entrypoint.sh /usr/local/bin/callflow-asterisk
EXPOSE 5060/udp 10000-10999/udp
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["asterisk", "-rx", "core show uptime"]
ENTRYPOINT ["/usr/local/bin/callflow-asterisk"]
