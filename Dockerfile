# Images for our services: one target per binary.
#
#   docker build --target mocker   -t flow-pipeline/mocker .
#   docker build --target inserter -t flow-pipeline/inserter .
#   docker build --target enricher -t flow-pipeline/enricher .
#   docker build --target detector -t flow-pipeline/detector .
#
# The build stage matches go.mod's go version. The final stages hold one
# static binary and nothing else (scratch: no shell, no package manager, no
# base image to drift), run as an unprivileged uid. The binaries need no CA
# certificates or time zone files: they speak plaintext to Kafka and
# PostgreSQL inside the compose network and log in UTC.
#
# The enricher's image also holds the open IP data (ip-location-db), fetched
# by .ci/geodata/fetch.sh, the one place its versions are pinned, so the
# image, `make geodata` and the tests use the same data.

FROM golang:1.26.8-alpine AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOOS=linux
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .

FROM build AS build-mocker
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w" -o /out/mocker ./cmd/mocker

FROM build AS build-inserter
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w" -o /out/inserter ./cmd/inserter

FROM build AS build-enricher
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w" -o /out/enricher ./cmd/enricher

FROM build AS build-detector
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w" -o /out/detector ./cmd/detector

# npm pack of the pinned packages, with their licences. Only the script is
# copied, so this layer is rebuilt only when the pinned versions change.
# FLOWPIPELINE_REQUIRE_SERVICES=1: no npm or registry fails the build
# instead of leaving the image without data. The files the enricher does
# not read (numeric CSVs, per-family MMDBs; ~45 MB) are left out.
FROM node:22.12.0-bookworm-slim AS geodata
COPY .ci/geodata/fetch.sh /fetch.sh
RUN FLOWPIPELINE_REQUIRE_SERVICES=1 FLOWPIPELINE_GEODATA=/geodata bash /fetch.sh \
    && rm -f /geodata/asn/asn-ipv4-num.csv /geodata/asn/asn-ipv6-num.csv \
       /geodata/geo-whois-asn-country-mmdb/geo-whois-asn-country-ipv4.mmdb \
       /geodata/geo-whois-asn-country-mmdb/geo-whois-asn-country-ipv6.mmdb \
    && chmod -R a+rX /geodata

FROM scratch AS mocker
COPY --from=build-mocker /out/mocker /usr/local/bin/mocker
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/mocker"]

FROM scratch AS inserter
COPY --from=build-inserter /out/inserter /usr/local/bin/inserter
USER 65532:65532
EXPOSE 8082
ENTRYPOINT ["/usr/local/bin/inserter"]

FROM scratch AS enricher
COPY --from=build-enricher /out/enricher /usr/local/bin/enricher
COPY --from=geodata /geodata /usr/share/flow-pipeline/geodata
USER 65532:65532
EXPOSE 8083
ENTRYPOINT ["/usr/local/bin/enricher"]

FROM scratch AS detector
COPY --from=build-detector /out/detector /usr/local/bin/detector
USER 65532:65532
EXPOSE 8084
ENTRYPOINT ["/usr/local/bin/detector"]
