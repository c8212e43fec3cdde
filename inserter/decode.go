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

// Decoder turns record values into batch rows. It reuses one message, so
// it is not safe for concurrent use; use one per partition.
type Decoder struct {
	m   pb.FlowMessage
	now time.Time
	// ZeroSampling counts accepted flows with sampling_rate 0.
	ZeroSampling int
}

// Decode adds every flow of value to b as one record at offset, or none:
// on any framing error or invalid message the whole record is rejected, so
// junk never half-lands. The error wraps a pb sentinel or ErrInvalidField.
func (d *Decoder) Decode(value []byte, offset int64, b *pgsink.Batch) (flows int, err error) {
	d.now = time.Now()
	b.BeginRecord(offset)
	zero := 0
	err = pb.UnmarshalRecord(value, &d.m, func(m *pb.FlowMessage) error {
		if err := pgsink.ValidateFlow(m, d.now); err != nil {
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
	case errors.Is(err, pb.ErrEmptyRecord):
		return ReasonEmpty
	case errors.Is(err, pb.ErrBadLength):
		return ReasonBadLength
	case errors.Is(err, pb.ErrMessageTooLarge):
		return ReasonTooLarge
	case errors.Is(err, pb.ErrTruncated):
		return ReasonTruncated
	case errors.Is(err, ErrInvalidField):
		return ReasonInvalidField
	}
	return ReasonBadMessage
}
