package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spendletonliveaction/flow-pipeline/internal/pgserver"
)

// Postgres is a throwaway PostgreSQL server (see internal/pgserver): fresh
// data directory, trust authentication, superuser "postgres", listening on
// 127.0.0.1 only, fsync off.
type Postgres struct {
	srv *pgserver.Server
	dir string // postgres.log and data/; removed by close
}

var sharedPG = &shared[*Postgres]{what: "PostgreSQL", start: startPostgres}

// StartPostgres starts a private server for this test, stopped and removed
// when the test ends. Use it when the test stops or kills the server;
// otherwise prefer SharedPostgres with CreateDB.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	return start(t, "PostgreSQL", startPostgres)
}

// SharedPostgres returns this test binary's server, starting it on first
// use; testenv.Main stops it. Tests must not stop it and should each use
// their own database (CreateDB).
func SharedPostgres(t testing.TB) *Postgres {
	t.Helper()
	return sharedPG.get(t, "SharedPostgres")
}

// DSN is the URL of the server's "postgres" database.
func (pg *Postgres) DSN() string { return pg.srv.DSN() }

// CreateDB creates an empty database, dropped when the test ends, and
// returns its DSN. Tests sharing a server stay apart this way.
func (pg *Postgres) CreateDB(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %q: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// FORCE: a pool the test forgot to close must not keep the database.
		if err := pg.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Logf("testenv: drop database %q: %v", name, err)
		}
	})
	return pg.srv.DSNFor(name)
}

func (pg *Postgres) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// Start restarts a stopped server on the same port and data and waits until
// it accepts connections (after crash recovery, following Kill).
func (pg *Postgres) Start() error { return pg.srv.Start(context.Background()) }

// Stop shuts the server down ("fast" shutdown: SIGINT, sessions are ended)
// and waits for it to exit.
func (pg *Postgres) Stop() error { return pg.srv.Stop() }

// Kill crashes the server (SIGKILL to the postmaster and every backend);
// Start then runs crash recovery.
func (pg *Postgres) Kill() error { return pg.srv.Kill() }

func (pg *Postgres) describe() string {
	return fmt.Sprintf("PostgreSQL (%s) on 127.0.0.1:%d", pg.srv.BinDir(), pg.srv.Port())
}

// close stops the server and removes its directory (test cleanup, Main).
func (pg *Postgres) close() {
	if pg.srv.Running() {
		pg.srv.Stop()
	}
	os.RemoveAll(pg.dir)
}

// startPostgres runs initdb into a fresh directory and starts the server.
// Missing binaries, or no user to run them as when we are root, are
// errUnavailable.
func startPostgres() (*Postgres, error) {
	dir, err := serviceDir("pg")
	if err != nil {
		return nil, err
	}
	// The server user must reach data/ through dir, which MkdirTemp made 0700.
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	srv, err := pgserver.Start(context.Background(), pgserver.Options{
		DataDir: filepath.Join(dir, "data"),
		LogPath: filepath.Join(dir, "postgres.log"),
		NoSync:  true,
	}, nil)
	if err != nil {
		os.RemoveAll(dir)
		if errors.Is(err, pgserver.ErrNotFound) || errors.Is(err, pgserver.ErrNoRunAsUser) {
			return nil, unavailablef("%v", err)
		}
		return nil, err
	}
	return &Postgres{srv: srv, dir: dir}, nil
}
