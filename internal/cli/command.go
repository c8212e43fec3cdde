package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Command is what every binary's run does before its own work: parse the
// flags, answer -probe, build the logger, and report errors in the flags'
// names. Exit codes are the same everywhere: 0 for -h and a healthy probe,
// 1 for a failed probe, 2 for bad flags.
type Command struct {
	Name      string            // prefixes every error: "mocker: …"
	Fields    map[string]string // Config field -> flag, for FlagNames
	EnvPrefix string            // environment prefix of the flags ("" or "DEMO_")
	Stderr    io.Writer
}

// Fail prints err, with the Config fields it names turned into flags, and
// returns code.
func (c Command) Fail(code int, err error) int {
	fmt.Fprintf(c.Stderr, "%s: %v\n", c.Name, FlagNames(err, c.Fields))
	return code
}

// Start parses args into fs, then runs the probe of *probe if it is set
// (probe may be nil for a binary without one), then builds the logger of
// *level and *format. When done is true, run must return code: -h, a bad
// flag, or a probe answered. The pointers are read after parsing, so they
// point at the flag variables fs sets.
func (c Command) Start(fs *flag.FlagSet, args []string, probe, level, format *string) (logger *slog.Logger, code int, done bool) {
	if err := ParsePrefixed(fs, args, c.EnvPrefix); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, 0, true
		}
		return nil, c.Fail(2, err), true
	}
	if probe != nil && *probe != "" {
		if err := Probe(*probe, 3*time.Second); err != nil {
			return nil, c.Fail(1, err), true
		}
		return nil, 0, true
	}
	logger, err := NewLogger(c.Stderr, *level, *format)
	if err != nil {
		return nil, c.Fail(2, err), true
	}
	return logger, 0, false
}
