package pgsink_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
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

// TestGapWarning: the one offset a transaction marker takes between two
// transactions of a transactional producer (the enricher) is no gap; more
// is, and is logged.
func TestGapWarning(t *testing.T) {
	var log strings.Builder
	s, err := pgsink.New(pgsink.Config{DSN: testDB(t), Group: "g"}, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.CreateSchema(ctx); err != nil {
		t.Fatal(err)
	}
	g := flowtest.NewGen(5)
	batch := func(start, first int64) *pgsink.Batch {
		b := pgsink.NewBatch("flows", 0)
		b.Start = start
		lim := pgsink.NewLimits(time.Now(), 0, 10*time.Minute)
		for off := first; off < first+3; off++ {
			m := &pb.FlowMessage{}
			g.Next(m, time.Now().Add(-time.Minute))
			if err := pgsink.ValidateFlow(m, lim); err != nil {
				t.Fatal(err)
			}
			b.BeginRecord(off)
			b.AddFlow(m)
			b.EndRecord()
		}
		return b
	}
	for _, c := range []struct {
		start, first int64
		warn         bool
	}{
		{0, 0, false}, // offsets 0-2, marker at 3
		{3, 4, false}, // 4-6 after one marker
		{7, 9, true},  // 9-11: offsets 7 and 8 never seen
	} {
		log.Reset()
		if res, err := s.Write(ctx, batch(c.start, c.first)); err != nil || res.Flows != 3 {
			t.Fatalf("batch at %d: %+v %v", c.first, res, err)
		}
		if got := strings.Contains(log.String(), "offset gap"); got != c.warn {
			t.Errorf("batch at %d after stored %d: gap warning %v, want %v\n%s", c.first, c.start, got, c.warn, log.String())
		}
	}
}
