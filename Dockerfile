# kiln in a container. It needs a Docker daemon: mount the host's socket
#   docker run -v /var/run/docker.sock:/var/run/docker.sock -v kiln-data:/data -p 8080:8080 kiln
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/kiln /usr/local/bin/kiln
ENV KILN_LISTEN=0.0.0.0:8080 KILN_DATA_DIR=/data
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["kiln"]
CMD ["serve"]
