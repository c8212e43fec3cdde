package detector

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// webhook POSTs alerts from a bounded queue, retrying with exponential
// backoff; when the queue is full an alert is dropped (and counted), so a
// slow or dead receiver never holds detection back.
type webhook struct {
	url      string
	client   *http.Client
	queue    chan []byte
	m        *metrics
	logger   *slog.Logger
	attempts int
	backoff  time.Duration // first retry; doubles up to maxBackoff
}

const (
	webhookQueue      = 1024
	webhookAttempts   = 6
	webhookBackoff    = 500 * time.Millisecond
	webhookMaxBackoff = 30 * time.Second
)

func newWebhook(url string, m *metrics, logger *slog.Logger) *webhook {
	return &webhook{url: url, client: &http.Client{Timeout: 10 * time.Second}, queue: make(chan []byte, webhookQueue),
		m: m, logger: logger, attempts: webhookAttempts, backoff: webhookBackoff}
}

// enqueue never blocks.
func (w *webhook) enqueue(body []byte) {
	select {
	case w.queue <- body:
	default:
		w.m.webhook.WithLabelValues(WebhookDropped).Inc()
	}
}

func (w *webhook) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case body := <-w.queue:
			w.deliver(ctx, body)
		}
	}
}

func (w *webhook) deliver(ctx context.Context, body []byte) {
	wait := w.backoff
	for attempt := 1; ; attempt++ {
		err := w.post(ctx, body)
		if err == nil {
			w.m.webhook.WithLabelValues(WebhookDelivered).Inc()
			return
		}
		w.m.webhookErrors.Inc()
		if attempt >= w.attempts || ctx.Err() != nil {
			w.m.webhook.WithLabelValues(WebhookFailed).Inc()
			w.logger.Warn("webhook: giving up on an alert", "url", w.url, "attempts", attempt, "error", err)
			return
		}
		select {
		case <-ctx.Done():
			w.m.webhook.WithLabelValues(WebhookFailed).Inc()
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, webhookMaxBackoff)
	}
}

func (w *webhook) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
