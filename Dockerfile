# deep-review's image: one binary for every role (scheduler, worker, consolidator).
#   docker build -t deep-review .
#   docker build --build-arg VENDOR_CLIS="@anthropic-ai/claude-code@2.1.197 @openai/codex@0.171.0" -t deep-review .
# The runtime needs git (checkouts), CA certificates (model APIs, GitHub), bubblewrap (the
# agent and verification sandbox, where the runtime allows user namespaces), and Node.js
# only when vendor CLIs are installed. scripts/check-runtime.sh checks what can be checked
# without a container engine.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin deep-review \
 && strip target/release/deep-review

FROM debian:bookworm-slim AS runtime
# Space-separated npm packages of the vendor CLIs the operator's line-up uses; empty for
# the builtin and model API runners only.
ARG VENDOR_CLIS=""
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git bubblewrap tar gzip \
 && if [ -n "$VENDOR_CLIS" ]; then \
      apt-get install -y --no-install-recommends nodejs npm \
      && npm install --global --omit=dev $VENDOR_CLIS \
      && npm cache clean --force; \
    fi \
 && rm -rf /var/lib/apt/lists/*
# A fixed non-root uid, which the manifests' runAsUser names.
RUN groupadd --gid 65532 deep-review \
 && useradd --uid 65532 --gid 65532 --home-dir /scratch/home --no-create-home --shell /usr/sbin/nologin deep-review \
 && mkdir -p /scratch /var/lib/deep-review/reports \
 && chown 65532:65532 /scratch /var/lib/deep-review/reports
COPY --from=build /src/target/release/deep-review /usr/local/bin/deep-review
USER 65532:65532
# The root filesystem can be read-only: everything written goes to /scratch and /tmp
# (emptyDir volumes in Kubernetes).
ENV HOME=/scratch/home
WORKDIR /scratch
ENTRYPOINT ["/usr/local/bin/deep-review"]
CMD ["--help"]
