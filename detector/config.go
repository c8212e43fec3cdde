package detector

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Config is the detector's configuration. Start from DefaultConfig.
type Config struct {
	Brokers []string
	Topic   string // consumed: length-delimited FlowMessages (flows-enriched, or flows)
	Group   string // consumer group; run one instance per group (see the package doc)
	// AlertsTopic receives the alerts, JSON, keyed by target, in the same
	// transaction as the consumed offsets.
	AlertsTopic string
	// TransactionalID identifies this instance's producer: stable across
	// its restarts, unique among running instances.
	TransactionalID string
	// ThresholdsFile is the YAML thresholds file (empty: the built-in
	// defaults, DefaultThresholds). Reloaded on SIGHUP and within
	// PollInterval of a change; a file that fails to load keeps the
	// previous thresholds.
	ThresholdsFile string
	PollInterval   time.Duration
	// Webhook, when set, receives every alert as a JSON POST, retried with
	// backoff from a bounded queue; it never blocks detection.
	Webhook string

	// Step is the resolution of event time: rates are computed per step.
	Step time.Duration
	// Window is the span the figures of update alerts and of Active
	// average over (a multiple of Step).
	Window time.Duration
	// Lateness is how far behind the newest flow's time_received a flow
	// may arrive and still count; later ones are dropped (reason late).
	Lateness time.Duration
	// MaxSkew is how far the partitions may be apart in event time: the
	// watermark waits for the slowest partition up to this far behind the
	// newest flow. A partition more than MaxSkew/2 ahead of the slowest
	// is paused, its records already read held, until the others catch
	// up (watermark alignment), so a replay stays within MaxSkew.
	MaxSkew time.Duration
	// Idle: a partition without a flow for this long (wall clock) stops
	// holding the watermark back; with no flow at all, event time
	// advances with the wall clock, so attacks end when the traffic stops.
	Idle time.Duration
	// StartSteps: an attack starts when a threshold holds for this many
	// consecutive steps.
	StartSteps int
	// EndAfter: an attack ends when every rate stays below its threshold
	// times Hysteresis for this long.
	EndAfter   time.Duration
	Hysteresis float64
	// UpdateEvery: an update alert goes out this often while an attack lasts.
	UpdateEvery time.Duration
	// Targets bounds the destinations tracked exactly (the heavy hitters);
	// the rest are counted in a count-min sketch only.
	Targets int
	// MaxFuture drops flows stamped more than this after the wall clock
	// (0: no check), so one bogus time_received cannot close every window.
	MaxFuture time.Duration

	TransactionInterval time.Duration // commit at most this long after a transaction began
	TransactionTimeout  time.Duration // the broker aborts a transaction open this long
	SessionTimeout      time.Duration // consumer group session
	ShutdownTimeout     time.Duration // commit the open transaction within this on shutdown
}

// DefaultConfig works with the compose files.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "detector"
	}
	return Config{
		Brokers:             []string{"127.0.0.1:9092"},
		Topic:               "flows-enriched",
		Group:               "detector",
		AlertsTopic:         "alerts",
		TransactionalID:     "detector-" + host,
		PollInterval:        5 * time.Second,
		Step:                time.Second,
		Window:              10 * time.Second,
		Lateness:            5 * time.Second,
		MaxSkew:             20 * time.Second,
		Idle:                5 * time.Second,
		StartSteps:          3,
		EndAfter:            10 * time.Second,
		Hysteresis:          0.8,
		UpdateEvery:         5 * time.Second,
		Targets:             4096,
		MaxFuture:           time.Hour,
		TransactionInterval: time.Second,
		TransactionTimeout:  30 * time.Second,
		SessionTimeout:      10 * time.Second,
		ShutdownTimeout:     10 * time.Second,
	}
}

// alignBound is how far (event time) a partition may run ahead of the
// slowest before its records wait and it is paused: half of MaxSkew, so a
// partition read in chunks stays well within MaxSkew of the others.
func (c Config) alignBound() time.Duration { return c.MaxSkew / 2 }

// ErrInvalidConfig is what Validate's errors wrap.
var ErrInvalidConfig = errors.New("invalid detector configuration")

// Validate checks every field and names the faulty ones.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if len(c.Brokers) == 0 {
		bad("Config.Brokers is empty; give at least one host:port")
	}
	for _, b := range c.Brokers {
		if !strings.Contains(b, ":") {
			bad("Config.Brokers: %q is not host:port", b)
		}
	}
	if c.Topic == "" {
		bad("Config.Topic is empty")
	}
	if c.Group == "" {
		bad("Config.Group is empty")
	}
	if c.AlertsTopic == "" {
		bad("Config.AlertsTopic is empty")
	}
	if c.AlertsTopic != "" && c.AlertsTopic == c.Topic {
		bad("Config.AlertsTopic must differ from Config.Topic")
	}
	if c.TransactionalID == "" {
		bad("Config.TransactionalID is empty; give each instance a stable, unique id")
	}
	if c.PollInterval < 0 {
		bad("Config.PollInterval %s is negative; use 0 to reload on SIGHUP only", c.PollInterval)
	}
	if c.Webhook != "" && !strings.HasPrefix(c.Webhook, "http://") && !strings.HasPrefix(c.Webhook, "https://") {
		bad("Config.Webhook %q is not an http:// or https:// URL", c.Webhook)
	}
	errs = append(errs, c.validateDetection()...)
	if c.TransactionInterval <= 0 {
		bad("Config.TransactionInterval %s must be positive", c.TransactionInterval)
	}
	if c.TransactionTimeout < 2*c.TransactionInterval {
		bad("Config.TransactionTimeout %s must be at least twice Config.TransactionInterval %s", c.TransactionTimeout, c.TransactionInterval)
	}
	if c.SessionTimeout < time.Second {
		bad("Config.SessionTimeout %s must be at least 1s", c.SessionTimeout)
	}
	if c.ShutdownTimeout <= 0 {
		bad("Config.ShutdownTimeout %s must be positive", c.ShutdownTimeout)
	}
	return errors.Join(errs...)
}

// validateDetection checks the fields the Engine uses.
func (c Config) validateDetection() []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	multiple := func(name string, d time.Duration) {
		if c.Step > 0 && (d < c.Step || d%c.Step != 0) {
			bad("Config.%s %s must be a positive multiple of Config.Step %s", name, d, c.Step)
		}
	}
	if c.Step < time.Millisecond {
		bad("Config.Step %s must be at least 1ms", c.Step)
	}
	multiple("Window", c.Window)
	multiple("EndAfter", c.EndAfter)
	multiple("UpdateEvery", c.UpdateEvery)
	if c.Step > 0 && c.Window/c.Step > 600 {
		bad("Config.Window %s is more than 600 steps of Config.Step %s", c.Window, c.Step)
	}
	if c.Lateness < 0 || c.MaxSkew < 0 || (c.Step > 0 && (c.Lateness+c.MaxSkew)/c.Step > 600) {
		bad("Config.Lateness %s and Config.MaxSkew %s must not be negative, and together at most 600 steps", c.Lateness, c.MaxSkew)
	}
	if c.Idle <= 0 {
		bad("Config.Idle %s must be positive", c.Idle)
	}
	if c.StartSteps < 1 {
		bad("Config.StartSteps %d must be at least 1", c.StartSteps)
	}
	if !(c.Hysteresis > 0 && c.Hysteresis <= 1) {
		bad("Config.Hysteresis %g must be in (0, 1]", c.Hysteresis)
	}
	if c.Targets < 16 || c.Targets > 1<<20 {
		bad("Config.Targets %d must be between 16 and 1048576", c.Targets)
	}
	if c.MaxFuture < 0 {
		bad("Config.MaxFuture %s is negative; use 0 to disable the check", c.MaxFuture)
	}
	return errs
}
