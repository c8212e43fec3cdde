package inserter

import (
	"errors"
	"fmt"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// ErrInvalidField marks a message that parses but cannot be stored.
var ErrInvalidField = errors.New("invalid field")

// DefaultMaxFuture is how far ahead of now a time_received may be by
// default: exporter clocks drift, but not by much.
const DefaultMaxFuture = 10 * time.Minute

// Decoder turns record values into batch rows. It reuses one message, so
// it is not safe for concurrent use; use one per partition.
type Decoder struct {
	m pb.FlowMessage
	// Names recur across a partition's flows: decoded once, shared by the
	// batch's rollup dimensions.
	strings pb.Interner
	// Now is the clock for the time bounds (nil: time.Now). Flows older
	// than Retention (0: no limit but 2000-01-01) or more than MaxFuture
	// ahead (0: DefaultMaxFuture) are rejected.
	Now       func() time.Time
	Retention time.Duration
	MaxFuture time.Duration
	// ZeroSampling counts accepted flows with sampling_rate 0.
	ZeroSampling int
}

// newDecoder is a partition's decoder with the inserter's time bounds.
func (in *Inserter) newDecoder() Decoder {
	return Decoder{Now: in.cfg.Now, Retention: in.cfg.Retention, MaxFuture: in.cfg.MaxFuture}
}

// Decode adds every flow of value to b as one record at offset, or none:
// on any framing error or invalid message the whole record is rejected, so
// junk never half-lands. The error wraps a pb sentinel or ErrInvalidField.
func (d *Decoder) Decode(value []byte, offset int64, b *pgsink.Batch) (flows int, err error) {
	now := time.Now
	if d.Now != nil {
		now = d.Now
	}
	maxFuture := d.MaxFuture
	if maxFuture == 0 {
		maxFuture = DefaultMaxFuture
	}
	lim := pgsink.NewLimits(now(), d.Retention, maxFuture)
	b.BeginRecord(offset)
	zero := 0
	err = pb.UnmarshalRecordInterned(value, &d.m, &d.strings, func(m *pb.FlowMessage) error {
		if err := pgsink.ValidateFlow(m, lim); err != nil {
			return fmt.Errorf("flow %d: %w: %w", flows, ErrInvalidField, err)
		}
		if m.SamplingRate == 0 {
			zero++
		}
		b.AddFlow(m)
		flows++
		return nil
	})
	if err != nil {
		b.AbortRecord()
		return 0, err
	}
	d.ZeroSampling += zero
	b.EndRecord()
	return flows, nil
}

// Reason maps a decode error to its metric label.
func Reason(err error) string {
	switch {
	case errors.Is(err, pgsink.ErrOutOfRange):
		return ReasonOutOfRange
	case errors.Is(err, pgsink.ErrTooOld):
		return ReasonTooOld
	case errors.Is(err, pgsink.ErrTooNew):
		return ReasonTooNew
	case errors.Is(err, ErrInvalidField):
		return ReasonInvalidField
	}
	if r := pb.FrameReason(err); r != "" {
		return r
	}
	return ReasonBadMessage
}
