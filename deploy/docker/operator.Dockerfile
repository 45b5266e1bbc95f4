# The Strand operator image: `docker build -f deploy/docker/operator.Dockerfile -t strand-operator:0.1.0 .`
# (from the repository root). It cannot be built on the development machine (no Docker
# engine there); the local control plane maps the image name to target/debug/strand-operator.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p strand-operator --bin strand-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/strand-operator /usr/local/bin/strand-operator
EXPOSE 8081
USER nonroot
ENTRYPOINT ["/usr/local/bin/strand-operator"]
