# syntax=docker/dockerfile:1
# The callflow daemon.  Build from the repository's root:
#   docker build -f docker/callflow.Dockerfile -t callflow .
# (docker/docker-compose.yml does it.)  A thin layer over packaging/install-debian.sh, the
# same install as on a Debian PBX (python:3.11-slim is Debian bookworm; the script runs in
# a bookworm chroot in tests/integration/test_install_debian.py): the user callflow (uid
# 10001), /opt/callflow with `pip install` of the project (the versions pyproject.toml
# pins), /etc/callflow with the container's settings; the daemon runs unprivileged.

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY pyproject.toml README.md /tmp/callflow-src/
COPY callflow /tmp/callflow-src/callflow
COPY packaging /tmp/callflow-src/packaging
COPY dialplans /tmp/callflow-src/dialplans
COPY docker/callflow.toml /tmp/callflow-src/docker/callflow.toml
RUN sh /tmp/callflow-src/packaging/install-debian.sh --uid 10001 --no-unit \
        --config /tmp/callflow-src/docker/callflow.toml --flows /tmp/callflow-src/dialplans \
        /tmp/callflow-src \
    && rm -rf /tmp/callflow-src
USER 10001:10001
WORKDIR /var/lib/callflow
EXPOSE 8089
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8089/healthz', timeout=4)"]
ENTRYPOINT ["callflow"]
CMD ["run", "--config", "/etc/callflow/callflow.toml"]
