// Package compose holds the docker compose stacks of the demo (the
// docker-compose-*.yml files, .env and the files they mount) and, in its
// tests, the checks that keep them loadable, pinned and runnable: every
// compose file loads with compose-go (the library Docker Compose uses), every
// image is pinned, every bind-mounted file exists, every flag given to our
// binaries is one they accept, and start-up is ordered by health checks.
//
// The package has no code of its own; `go test ./compose` runs the checks.
package compose
