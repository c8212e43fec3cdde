package pgsink_test

import (
	"context"
	"strings"
	"testing"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

// TestMissingDatabaseFirst: when the database does not exist, the error
// says so first, before pgx's connection details.
func TestMissingDatabaseFirst(t *testing.T) {
	name := testenv.UniqueName(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, name)
	missing := strings.Replace(dsn, "/"+name, "/"+name+"_missing", 1)
	if missing == dsn {
		t.Fatalf("cannot find the database name %q in %q", name, dsn)
	}
	s, err := pgsink.New(pgsink.Config{DSN: missing, Group: "g"}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Ping(context.Background())
	want := `postgres connect: database "` + name + `_missing" does not exist: create it (createdb) or fix the database name in the DSN; details: `
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Ping on a missing database: %v\nwant it to start with %q", err, want)
	}
}
