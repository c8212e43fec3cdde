package pb

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// MaxMessageSize bounds one framed FlowMessage. Real messages are a few
// hundred bytes; a larger length prefix means the record is not ours.
const MaxMessageSize = 64 << 10

// Sentinel errors for a record that does not frame, so callers can count
// drops by reason with errors.Is.
var (
	ErrEmptyRecord     = errors.New("empty record")
	ErrBadLength       = errors.New("unreadable length prefix")
	ErrMessageTooLarge = errors.New("length prefix exceeds the message size limit")
	ErrTruncated       = errors.New("message shorter than its length prefix")
	ErrBadMessage      = errors.New("message is not a valid FlowMessage")
)

// Reasons a record does not frame: the reason label every stage counts
// such drops with (records_invalid_total), so a dashboard can sum them.
const (
	ReasonEmpty      = "empty"       // zero-length record value
	ReasonBadLength  = "bad_length"  // unreadable varint length prefix
	ReasonTooLarge   = "too_large"   // length prefix above MaxMessageSize
	ReasonTruncated  = "truncated"   // record shorter than a frame's length prefix
	ReasonBadMessage = "bad_message" // frame is not a FlowMessage
)

// FrameReasons lists the reasons FrameReason returns.
var FrameReasons = []string{ReasonEmpty, ReasonBadLength, ReasonTooLarge, ReasonTruncated, ReasonBadMessage}

// FrameReason maps an error of ForEachFrame or UnmarshalRecord to its
// reason label, or "" when err wraps none of the framing sentinels.
func FrameReason(err error) string {
	switch {
	case errors.Is(err, ErrEmptyRecord):
		return ReasonEmpty
	case errors.Is(err, ErrBadLength):
		return ReasonBadLength
	case errors.Is(err, ErrMessageTooLarge):
		return ReasonTooLarge
	case errors.Is(err, ErrTruncated):
		return ReasonTruncated
	case errors.Is(err, ErrBadMessage):
		return ReasonBadMessage
	}
	return ""
}

// AppendDelimited appends m to dst, prefixed by its length as a varint: the
// framing of goflow2 -format=bin and of ClickHouse's Protobuf format. It
// uses the hand-written encoder (codec.go), so the error is always nil; it
// stays in the signature for callers written against proto.Marshal.
func AppendDelimited(dst []byte, m *FlowMessage) ([]byte, error) {
	// One pass over m: encode after a one-byte length placeholder, then
	// fill it in. A message of 128 bytes or more (most IPv6 flows) needs a
	// longer prefix, so it moves up; that copy costs less than a WireSize
	// pass on every message (BenchmarkAppendDelimited).
	start := len(dst)
	dst = m.AppendWire(append(dst, 0))
	size := len(dst) - start - 1
	if size < 0x80 {
		dst[start] = byte(size)
		return dst, nil
	}
	n := protowire.SizeVarint(uint64(size))
	dst = append(dst, make([]byte, n-1)...)
	copy(dst[start+n:], dst[start+1:start+1+size])
	protowire.AppendVarint(dst[start:start], uint64(size))
	return dst, nil
}

// ForEachFrame calls fn with each length-delimited message of a record
// value, in order. It stops at the first framing error or error from fn.
// A record is only well framed if its frames cover it exactly.
func ForEachFrame(value []byte, fn func(msg []byte) error) error {
	if len(value) == 0 {
		return ErrEmptyRecord
	}
	for offset := 0; offset < len(value); {
		size, n := protowire.ConsumeVarint(value[offset:])
		if n < 0 {
			return fmt.Errorf("frame at byte %d: %w", offset, ErrBadLength)
		}
		if size > MaxMessageSize {
			return fmt.Errorf("frame at byte %d declares %d bytes: %w", offset, size, ErrMessageTooLarge)
		}
		offset += n
		if uint64(len(value)-offset) < size {
			return fmt.Errorf("frame at byte %d declares %d bytes, %d left: %w", offset-n, size, len(value)-offset, ErrTruncated)
		}
		if err := fn(value[offset : offset+int(size)]); err != nil {
			return err
		}
		offset += int(size)
	}
	return nil
}

// UnmarshalRecord decodes every message of a record value. Each message
// is passed to fn in a freshly reset m, which fn must not retain, nor its
// byte slices: the next message reuses them (see DecodeWire). Unknown
// fields are skipped, not kept in m.
func UnmarshalRecord(value []byte, m *FlowMessage, fn func(*FlowMessage) error) error {
	return UnmarshalRecordInterned(value, m, nil, fn)
}

// UnmarshalRecordInterned is UnmarshalRecord with DecodeWireInterned (in
// nil: DecodeWire).
func UnmarshalRecordInterned(value []byte, m *FlowMessage, in *Interner, fn func(*FlowMessage) error) error {
	return ForEachFrame(value, func(msg []byte) error {
		if err := m.decodeWire(msg, in); err != nil {
			return err
		}
		return fn(m)
	})
}
