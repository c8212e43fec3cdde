package detector

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestWebhook: a POST that fails is retried until it succeeds; one that
// always fails is given up after the attempts; a full queue drops alerts
// without blocking; every outcome is counted.
func TestWebhook(t *testing.T) {
	var (
		mu     sync.Mutex
		bodies []string
		fails  atomic.Int32 // answer 503 this many times more
		block  = make(chan struct{})
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if string(b) == "block" {
			<-block
		}
		if r.Header.Get("Content-Type") != "application/json" || r.Method != http.MethodPost {
			t.Errorf("%s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
		}
		if fails.Add(-1) >= 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
	}))
	defer srv.Close()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	w := newWebhook(srv.URL, m, slog.New(slog.DiscardHandler))
	w.backoff = time.Millisecond
	go w.run(t.Context())
	count := func(r string) float64 { return testutil.ToFloat64(m.webhook.WithLabelValues(r)) }
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}

	fails.Store(3) // three 503s, then delivered on the 4th attempt
	w.enqueue([]byte(`{"n":1}`))
	waitFor("the delivery", func() bool { return count(WebhookDelivered) == 1 })
	if got := testutil.ToFloat64(m.webhookErrors); got != 3 {
		t.Errorf("%v failed POSTs, want 3", got)
	}
	fails.Store(webhookAttempts) // every attempt fails
	w.enqueue([]byte(`{"n":2}`))
	waitFor("giving up", func() bool { return count(WebhookFailed) == 1 })
	fails.Store(0)

	// A receiver that hangs: the queue fills, enqueue never blocks, the
	// rest is dropped and counted.
	w.enqueue([]byte("block"))
	time.Sleep(20 * time.Millisecond) // taken off the queue, hanging
	start := time.Now()
	for range webhookQueue + 10 {
		w.enqueue([]byte(`{"n":3}`))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("enqueue took %s with a hung receiver", d)
	}
	if got := count(WebhookDropped); got != 10 {
		t.Errorf("%v dropped, want 10", got)
	}
	close(block)
	waitFor("the queue drained", func() bool { return count(WebhookDelivered) == 2+webhookQueue })
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2+webhookQueue || bodies[0] != `{"n":1}` || bodies[1] != "block" {
		t.Errorf("%d bodies, first %q", len(bodies), bodies[:2])
	}
}
