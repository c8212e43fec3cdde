# Images for our services: one target per binary.
#
#   docker build --target mocker   -t flow-pipeline/mocker .
#   docker build --target inserter -t flow-pipeline/inserter .
#
# The build stage matches go.mod's go version. The final stages hold one
# static binary and nothing else (scratch: no shell, no package manager, no
# base image to drift), run as an unprivileged uid. The binaries need no CA
# certificates or time zone files: they speak plaintext to Kafka and
# PostgreSQL inside the compose network and log in UTC.

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
