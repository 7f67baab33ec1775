# Builds the single tally binary (used by docker-compose.yml's tally service).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -o /tally ./cmd/tally

FROM debian:12-slim
COPY --from=build /tally /tally
ENTRYPOINT ["/tally"]
