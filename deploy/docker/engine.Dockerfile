# The Strand engine image: `docker build -f deploy/docker/engine.Dockerfile -t strand-engine:0.1.0 .`
# (from the repository root). It cannot be built on the development machine (no Docker
# engine there); the local control plane maps the image name to target/debug/strand-engine.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p strand-engine --bin strand-engine

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/strand-engine /usr/local/bin/strand-engine
# resp, admin, repl (the operator passes --resp-addr/--admin-addr/--repl-addr on the pod IP).
EXPOSE 6379 8080 7070
USER nonroot
ENTRYPOINT ["/usr/local/bin/strand-engine"]
