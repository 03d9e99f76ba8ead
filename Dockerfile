# chatq: one image holding the three binaries (and the fake upstream).
# Debian 12 and its own packages only, as on the build machines.
FROM debian:12-slim AS build
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
FROM debian:12-slim AS redis
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data", \
     "--appendonly", "yes", "--appendfsync", "always", "--save", ""]

FROM debian:12-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcivetweb1 libhiredis0.14 libjansson4 \
        libcurl4 libevent-2.1-7 libssl3 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home chatq
COPY --from=build /out/usr/local/bin/ /usr/local/bin/
USER chatq
EXPOSE 3000
CMD ["chatq-api"]
