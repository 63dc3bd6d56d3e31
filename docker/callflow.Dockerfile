# syntax=docker/dockerfile:1
# The callflow daemon.  Build from the repository's root:
#   docker build -f docker/callflow.Dockerfile -t callflow .
# (docker/docker-compose.yml does it.)  Dependencies are the exact versions pinned in
# pyproject.toml, installed by `pip install .`; the daemon runs as an unprivileged user.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY callflow ./callflow
RUN pip install --no-cache-dir --no-warn-script-location --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 callflow \
    && useradd --system --uid 10001 --gid callflow --home-dir /var/lib/callflow \
        --create-home --shell /usr/sbin/nologin callflow
COPY --from=build /install /usr/local
COPY dialplans /etc/callflow/dialplans
COPY docker/callflow.toml /etc/callflow/callflow.toml
USER 10001:10001
WORKDIR /var/lib/callflow
EXPOSE 8089
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8089/healthz', timeout=4)"]
ENTRYPOINT ["callflow"]
CMD ["run", "--config", "/etc/callflow/callflow.toml"]
