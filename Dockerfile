# skystream: one binary, `skystream`, with its shipped SQL scripts.
#   docker build -t skystream .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# librdkafka is built from rdkafka's bundled sources (C build tools are in the rust image).
COPY . .
RUN cargo build --release --locked --bin skystream \
    && cp target/release/skystream /usr/local/bin/skystream

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/skystream --create-home skystream
COPY --from=build /usr/local/bin/skystream /usr/local/bin/skystream
COPY sql /opt/skystream/sql
USER skystream
WORKDIR /var/lib/skystream
ENTRYPOINT ["skystream"]
CMD ["--help"]
