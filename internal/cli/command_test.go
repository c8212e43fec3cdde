package cli

import (
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCommandStart(t *testing.T) {
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer healthy.Close()
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }))
	defer sick.Close()

	for _, tc := range []struct {
		name         string
		args         []string
		withoutProbe bool
		code         int
		done         bool
		stderr       string // a substring; "" = nothing printed
	}{
		{name: "runs", args: nil, code: 0, done: false},
		{name: "help", args: []string{"-h"}, code: 0, done: true, stderr: "Usage"},
		{name: "unknown flag", args: []string{"-nope"}, code: 2, done: true, stderr: "tool: flag provided but not defined: -nope"},
		{name: "bad level", args: []string{"-loglevel", "loud"}, code: 2, done: true, stderr: "tool: "},
		{name: "healthy probe", args: []string{"-probe", healthy.URL}, code: 0, done: true},
		{name: "failed probe", args: []string{"-probe", sick.URL}, code: 1, done: true, stderr: "tool: "},
		{name: "no probe flag", args: nil, withoutProbe: true, code: 0, done: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			fs := flag.NewFlagSet("tool", flag.ContinueOnError)
			fs.SetOutput(&stderr)
			var probe, level, format string
			fs.StringVar(&probe, "probe", "", "")
			fs.StringVar(&level, "loglevel", "info", "")
			fs.StringVar(&format, "log.format", "text", "")
			p := &probe
			if tc.withoutProbe {
				p = nil
			}
			c := Command{Name: "tool", Stderr: &stderr}
			logger, code, done := c.Start(fs, tc.args, p, &level, &format)
			if code != tc.code || done != tc.done {
				t.Fatalf("Start(%q) = code %d, done %v; want %d, %v (stderr %q)", tc.args, code, done, tc.code, tc.done, stderr.String())
			}
			if (logger != nil) == done {
				t.Errorf("logger %v with done %v: want a logger exactly when run goes on", logger, done)
			}
			if tc.stderr == "" && stderr.Len() != 0 {
				t.Errorf("stderr %q, want nothing", stderr.String())
			}
			if tc.stderr != "" && !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tc.stderr)
			}
		})
	}
}

func TestCommandFailNamesFlags(t *testing.T) {
	var stderr strings.Builder
	c := Command{Name: "tool", Fields: map[string]string{"Brokers": "-kafka.brokers"}, Stderr: &stderr}
	if code := c.Fail(2, io.ErrUnexpectedEOF); code != 2 {
		t.Fatalf("Fail returned %d, want 2", code)
	}
	stderr.Reset()
	c.Fail(2, errorString("Config.Brokers is empty"))
	if got, want := stderr.String(), "tool: -kafka.brokers is empty\n"; got != want {
		t.Errorf("Fail printed %q, want %q", got, want)
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }
