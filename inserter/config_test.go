package inserter

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.PostgresDSN = "postgres://u@127.0.0.1:1/db"
	if err := ok.Validate(); err != nil {
		t.Fatalf("DefaultConfig with a DSN: %v", err)
	}
	// Zero fields take DefaultConfig's values, but AlertsTopic, whose
	// empty value means "store no alerts".
	filled := Config{Brokers: ok.Brokers, PostgresDSN: ok.PostgresDSN, AlertsTopic: DefaultAlertsTopic}
	filled.setDefaults()
	if filled.Now == nil || ok.Now == nil {
		t.Fatal("Config.Now has no default")
	}
	// Functions never compare equal: compare the rest.
	want := ok
	filled.Now, want.Now = nil, nil
	if !reflect.DeepEqual(filled, want) {
		t.Errorf("zero Config with defaults = %+v\nDefaultConfig() = %+v", filled, want)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no brokers", func(c *Config) { c.Brokers = nil }, "Config.Brokers is empty"},
		{"no DSN", func(c *Config) { c.PostgresDSN = "" }, "Config.PostgresDSN is empty"},
		{"DLQ is the topic", func(c *Config) { c.DLQTopic = c.Topic }, "Config.DLQTopic \"flows\" must differ from Config.Topic"},
		{"too many writers", func(c *Config) { c.Writers = 33 }, "Config.Writers 33"},
		{"negative flush count", func(c *Config) { c.FlushCount = -1 }, "Config.FlushCount -1"},
		{"retry max below min", func(c *Config) { c.RetryMax = time.Millisecond }, "Config.RetryMax must be at least Config.RetryMin"},
		{"hourly retention", func(c *Config) { c.Retention = time.Hour }, "Config.Retention 1h0m0s"},
		{"old Kafka", func(c *Config) { c.KafkaVersion = "2.0.0" }, "Config.KafkaVersion"},
		{"alerts on the flows' topic", func(c *Config) { c.AlertsTopic = c.Topic }, "Config.AlertsTopic \"flows\" must differ"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("got %v, want an ErrInvalidConfig containing %q", err, tc.want)
			}
			if _, err := New(c, nil, prometheus.NewRegistry()); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New accepted an invalid config: %v", err)
			}
		})
	}
}
