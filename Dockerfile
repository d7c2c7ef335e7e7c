# syntax=docker/dockerfile:1
# The safekeeper image: one static binary on distroless/static, run as
# distroless's "nonroot" user (uid 65532), data in the /data volume.
#   docker build -t safekeeper .      (docker-compose.yml builds it too)
#   docker run safekeeper run --data-dir /data --upstream '...' ...

# Build stage: the Go release of go.mod's go line.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# VERSION: what `safekeeper version` and safekeeper_build_info report
# (.git is not in the build context, so there is no VCS revision).
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/safekeeper ./cmd/safekeeper
# The data directory, owned by the runtime user with mode 0700 (as the
# binary creates it): a named volume mounted at /data starts as a copy of
# it, owner and mode included, so the non-root process can write there.
RUN mkdir -p /out/rootfs && mkdir -m 0700 /out/rootfs/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/safekeeper /safekeeper
COPY --from=build --chown=65532:65532 /out/rootfs/ /
USER 65532:65532
# 5454: replication protocol (--listen-pg); 7676: HTTP status, metrics,
# /healthz and /readyz (--listen-http). Both listen on 127.0.0.1 by
# default: pass --listen-pg 0.0.0.0:5454 --listen-http 0.0.0.0:7676.
EXPOSE 5454 7676
VOLUME /data
ENTRYPOINT ["/safekeeper"]
