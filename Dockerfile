# The one netverdict binary in a small image. Build from the repository root:
#   docker build -t REGISTRY/netverdict:TAG .
# The API server runs as the image's user (65532); the collector's manifest runs it
# as root with only the eBPF capabilities (deploy/base/collector.yaml).

FROM rust:1.95-bookworm AS build
# clang, llvm and libbpf's headers compile the eBPF C probes (ebpf/build.rs).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        clang llvm libbpf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p netverdict \
    && install -m 0755 target/release/netverdict /netverdict

FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 65532 netverdict \
    && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/netverdict --no-create-home \
        --shell /usr/sbin/nologin netverdict \
    && install -d -o 65532 -g 65532 -m 0750 /var/lib/netverdict /var/lib/netverdict/spool
COPY --from=build /netverdict /usr/local/bin/netverdict
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/netverdict"]
CMD ["--help"]
