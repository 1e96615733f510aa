# Build: docker build -t revokd .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin revokd

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/revokd /usr/local/bin/revokd
USER nobody
ENV REVOKD_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["revokd"]
CMD ["serve"]
