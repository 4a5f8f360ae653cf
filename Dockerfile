# One image for every Shukei role: `docker run shukei:dev collector|processor|aggregator|query|migrate|topics`.
#
# Works with the classic builder as well as BuildKit (docker-compose 1.29 uses the classic one
# unless DOCKER_BUILDKIT=1), so no RUN --mount caches: the module download is its own layer
# instead, rebuilt only when go.mod or go.sum change.

# The image sets GOTOOLCHAIN=local: if go.mod asks for a newer 1.26.x than a cached image has,
# rebuild with --pull.
FROM golang:1.26-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0
COPY go.mod go.sum ./
RUN go mod download && go mod verify
COPY . .
# -trimpath: no build paths in the binary (reproducible, nothing about the builder leaks).
# -buildvcs=false: .git is not in the context (.dockerignore), so there is nothing to stamp.
RUN go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/shukei ./cmd/shukei \
 && /out/shukei --help >/dev/null

# distroless/static: the binary is static (CGO_ENABLED=0) and needs only CA certificates,
# tzdata and a passwd entry, which this image has. No shell and no package manager means
# less to patch and nothing to exec into; the cost is that one-shot steps (migrate, topics)
# run as their own compose services instead of a `sh -c` chain, and that role healthchecks
# must come from the binary itself, not curl/wget.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/shukei /usr/local/bin/shukei
USER nonroot:nonroot
# collector :8080, query :8081, processor :9101, aggregator :9102 (metrics and health).
EXPOSE 8080 8081 9101 9102
ENTRYPOINT ["/usr/local/bin/shukei"]
CMD ["--help"]
