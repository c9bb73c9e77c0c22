# syntax=docker/dockerfile:1
#
# oauthrelay in a container: a static binary on distroless, running as an
# unprivileged user.
#
#   docker build -t oauthrelay .
#   docker run -d --name oauthrelay \
#     -v /srv/oauthrelay/config.toml:/etc/oauthrelay/config.toml:ro \
#     -v oauthrelay-spool:/var/spool/oauthrelay \
#     -e CONTOSO_CLIENT_SECRET \
#     -p 2525:2525 -p 9465:9465 oauthrelay
#
# In config.toml use listen.address = "0.0.0.0:2525", metrics.address =
# "0.0.0.0:9465" and spool.dir = "/var/spool/oauthrelay". Reload with
# `docker kill -s HUP oauthrelay`; probes: GET /healthz and /readyz on 9465.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/oauthrelay ./cmd/oauthrelay \
 && mkdir -m 0700 -p /out/spool

# distroless/static carries CA certificates and time zones, no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/oauthrelay /usr/local/bin/oauthrelay
COPY --from=build --chown=65532:65532 /out/spool /var/spool/oauthrelay
VOLUME /var/spool/oauthrelay
EXPOSE 2525 9465
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/oauthrelay"]
CMD ["serve", "-config", "/etc/oauthrelay/config.toml"]
