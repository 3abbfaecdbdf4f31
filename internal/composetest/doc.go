// Package composetest holds no code, only a test: it validates the repository's
// docker-compose.yml without a Docker engine. The test loads the file with the Compose
// specification's own loader (github.com/compose-spec/compose-go/v2, the library the
// docker compose CLI uses, so schema errors, bad interpolation and dangling references
// fail here as they would in `docker compose config`), then checks the topology — a
// primary, two streaming hot standbys each with its own replication slot, Redis, health
// checks everywhere — and that every port and credential agrees with README.md's table.
package composetest
