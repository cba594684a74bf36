# syntax=docker/dockerfile:1
# The chorus binary in a small image: built in a Rust image, run as a non-root user in
# Debian slim with nothing else of the build. Multi-node example: deploy/compose.yaml.
#
#   docker build -t chorus --build-arg CHORUS_COMMIT=$(git rev-parse --short=10 HEAD) .
#   docker run -p 7800:7800 -v chorus-data:/var/lib/chorus chorus
#
# (.git is not sent to the build: CHORUS_COMMIT is what `chorus --version` names,
# `unknown` when not given.)

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
ARG CHORUS_COMMIT=
ENV CHORUS_COMMIT=${CHORUS_COMMIT}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chorus \
    && install -D -m 0755 target/release/chorus /out/chorus \
    && install -d -m 0700 /out/state/chorus

FROM debian:bookworm-slim
# The binary is all there is of Chorus (its web UI is embedded; TLS roots are built in).
COPY --from=build /out/chorus /usr/local/bin/chorus
# The data dir, 0700 and the user's (copied as an entry, so its mode is kept).
COPY --from=build --chown=10001:10001 /out/state/ /var/lib/
# A fixed uid without a passwd entry: nothing runs as root.
USER 10001:10001
ENV CHORUS_LISTEN=0.0.0.0:7800 \
    CHORUS_DATA_DIR=/var/lib/chorus
VOLUME /var/lib/chorus
EXPOSE 7800
ENTRYPOINT ["chorus"]
CMD ["serve"]
