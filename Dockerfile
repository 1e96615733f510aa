# Build: docker build -t revokd .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin revokd

FROM debian:bookworm-slim
# curl: for a healthcheck on /readyz (deploy/compose.yaml)
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/revokd /usr/local/bin/revokd
# The spool (README, "A 2xx is a promise"), owned by the user revokd runs as;
# a named volume mounted there starts with that owner.
RUN mkdir -p /var/lib/revokd/spool && chown -R nobody:nogroup /var/lib/revokd
USER nobody
ENV REVOKD_LISTEN=0.0.0.0:8080 REVOKD_SPOOL_DIR=/var/lib/revokd/spool
EXPOSE 8080
ENTRYPOINT ["revokd"]
CMD ["serve"]
