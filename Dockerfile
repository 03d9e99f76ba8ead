# chatq: one image holding the three binaries (and the fake upstream), one for
# Redis, one for nginx in front of the api, one for Prometheus. Debian 12 and its own packages only,
# as on the build machines.
#
# BASE is a Debian 12 image. The default, chatq-base:bookworm, is made on this
# machine from the Debian mirror by scripts/docker-base.sh (`make docker-base`),
# so no container registry is needed; where Docker Hub is reachable,
# --build-arg BASE=debian:12-slim does as well.
ARG BASE=chatq-base:bookworm

FROM ${BASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends make gcc libc6-dev pkg-config \
        libcivetweb-dev libhiredis-dev libjansson-dev libcurl4-openssl-dev libevent-dev \
        libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY common common
COPY api api
COPY processor processor
COPY handler handler
COPY fake-upstream fake-upstream
COPY stat stat
COPY webhook webhook
RUN make -j"$(nproc)" WERROR=1 && make install PREFIX=/usr/local DESTDIR=/out

# Redis from Debian's package too, so every image builds from Debian alone.
# AOF on, fsynced before every reply (README "Durability"), and no eviction:
# evicting a key would silently drop queued chats and their records.
FROM ${BASE} AS redis
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data", \
     "--appendonly", "yes", "--appendfsync", "always", "--save", "", \
     "--maxmemory-policy", "noeviction"]

# nginx in front of the api (front/nginx.conf.in; README "Connections"):
# clients connect to it on 8080, it passes whole requests to api:3000.
FROM ${BASE} AS front
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx curl \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /etc/chatq /var/lib/chatq-front \
 && chown www-data:www-data /var/lib/chatq-front
COPY front/nginx.conf.in /etc/chatq/nginx.conf.in
RUN sed -e 's|@LISTEN@|0.0.0.0:8080|' -e 's|@API@|api:3000|' \
        -e 's|@DIR@|/var/lib/chatq-front|' /etc/chatq/nginx.conf.in >/etc/chatq/nginx.conf
USER www-data
EXPOSE 8080
CMD ["nginx", "-e", "stderr", "-c", "/etc/chatq/nginx.conf"]

# Debian's Prometheus, for the compose profile "metrics" (docker/prometheus.yml).
FROM ${BASE} AS prometheus
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus curl \
 && rm -rf /var/lib/apt/lists/*
COPY docker/prometheus.yml /etc/prometheus/prometheus.yml
USER prometheus
EXPOSE 9090
CMD ["prometheus", "--config.file=/etc/prometheus/prometheus.yml", \
     "--storage.tsdb.path=/var/lib/prometheus/metrics2", "--web.listen-address=0.0.0.0:9090"]

# curl is for the healthchecks (docker-compose.yml).
FROM ${BASE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcivetweb1 libhiredis0.14 libjansson4 \
        libcurl4 libevent-2.1-7 libssl3 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home chatq
COPY --from=build /out/usr/local/bin/ /usr/local/bin/
COPY docker/entry.sh /usr/local/bin/chatq-docker-entry
COPY docker/health.sh /usr/local/bin/chatq-health
COPY docker/no-secret /usr/local/share/chatq/no-secret
USER chatq
EXPOSE 3000
ENTRYPOINT ["chatq-docker-entry"]
CMD ["chatq-api"]
