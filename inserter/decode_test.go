package inserter

import (
	"errors"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

func frame(t testing.TB, msgs ...*pb.FlowMessage) []byte {
	var out []byte
	for _, m := range msgs {
		var err error
		if out, err = pb.AppendDelimited(out, m); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestDecode(t *testing.T) {
	now := uint64(time.Now().UnixNano())
	good := &pb.FlowMessage{TimeReceivedNs: now, Bytes: 1500, Packets: 1, SrcAddr: []byte{192, 0, 2, 1}}
	goodFrame := frame(t, good)
	junk := make([]byte, 300)
	for i := range junk {
		junk[i] = byte(i*7 + 3)
	}
	junk[0] = 0x7f // claims a 127-byte frame, then garbage
	big := make([]byte, 900<<10)
	for i := range big {
		big[i] = 0xff
	}
	tooLarge := append([]byte{0x80, 0x80, 0x10}, make([]byte, 10)...) // 256 KiB frame
	cases := []struct {
		name   string
		value  []byte
		flows  int
		reason string
	}{
		{"one flow", goodFrame, 1, ""},
		{"three flows", frame(t, good, good, good), 3, ""},
		{"empty", nil, 0, ReasonEmpty},
		{"random bytes", junk, 0, ReasonBadMessage},
		{"unterminated varint", []byte{0xff, 0xff, 0xff}, 0, ReasonBadLength},
		{"oversized junk", big, 0, ReasonBadLength},
		{"length above the limit", tooLarge, 0, ReasonTooLarge},
		{"truncated frame", goodFrame[:len(goodFrame)-3], 0, ReasonTruncated},
		{"JSON", []byte(`{"bytes": 1500, "packets": 1}`), 0, ReasonTruncated},
		{"good frame then bad frame", append(append([]byte(nil), goodFrame...), 0x02, 0xff, 0xff), 0, ReasonBadMessage},
		{"good frame then truncated frame", append(append([]byte(nil), goodFrame...), goodFrame[:4]...), 0, ReasonTruncated},
		{"no time_received", frame(t, &pb.FlowMessage{Bytes: 1}), 0, ReasonInvalidField},
		{"time_received in 1970", frame(t, &pb.FlowMessage{TimeReceivedNs: 5e9}), 0, ReasonTooOld},
		{"time_received next year", frame(t, &pb.FlowMessage{TimeReceivedNs: now + 365*24*3600e9}), 0, ReasonTooNew},
		{"5-byte address", frame(t, &pb.FlowMessage{TimeReceivedNs: now, DstAddr: []byte{1, 2, 3, 4, 5}}), 0, ReasonInvalidField},
		{"port above 65535", frame(t, &pb.FlowMessage{TimeReceivedNs: now, SrcPort: 70000}), 0, ReasonInvalidField},
		{"bytes above int64", frame(t, &pb.FlowMessage{TimeReceivedNs: now, Bytes: 1 << 63}), 0, ReasonOutOfRange},
		{"bytes above 2^48", frame(t, &pb.FlowMessage{TimeReceivedNs: now, Bytes: 1<<48 + 1}), 0, ReasonOutOfRange},
		{"bytes x sampling_rate above 2^50", frame(t, &pb.FlowMessage{TimeReceivedNs: now, Bytes: 1 << 48, SamplingRate: 5}), 0, ReasonOutOfRange},
		{"bytes x sampling_rate at 2^50", frame(t, &pb.FlowMessage{TimeReceivedNs: now, Bytes: 1 << 48, SamplingRate: 4}), 1, ""},
		{"bytes at 2^48", frame(t, &pb.FlowMessage{TimeReceivedNs: now, Bytes: 1 << 48}), 1, ""},
		{"good then invalid field", frame(t, good, &pb.FlowMessage{TimeReceivedNs: now, Proto: 300}), 0, ReasonInvalidField},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := pgsink.NewBatch("flows", 0)
			var d Decoder
			// A good record before, so a rejected record must leave it intact.
			if _, err := d.Decode(goodFrame, 9, b); err != nil {
				t.Fatal(err)
			}
			rowsBefore := b.Bytes()
			n, err := d.Decode(c.value, 10, b)
			if c.reason == "" {
				if err != nil || n != c.flows {
					t.Fatalf("got %d flows, %v; want %d", n, err, c.flows)
				}
				if b.Flows() != 1+c.flows {
					t.Fatalf("batch has %d flows, want %d", b.Flows(), 1+c.flows)
				}
			} else {
				if err == nil {
					t.Fatalf("accepted %d flows, want rejection for %s", n, c.reason)
				}
				if got := Reason(err); got != c.reason {
					t.Fatalf("reason %q (%v), want %q", got, err, c.reason)
				}
				if b.Flows() != 1 || b.Bytes() != rowsBefore {
					t.Fatalf("rejected record left rows in the batch: %d flows", b.Flows())
				}
			}
			// Either way the record is consumed: its offset is committed.
			if b.End != 11 || b.Records() != 2 {
				t.Fatalf("batch end %d with %d records, want 11 and 2", b.End, b.Records())
			}
		})
	}
}

func TestCorruptHelperReasons(t *testing.T) {
	good, _ := flowtest.Records(1, 1, 1, time.Now())
	values, reasons := flowtest.Corrupt(1, 600, good[0])
	got := map[string]int{}
	var d Decoder
	b := pgsink.NewBatch("flows", 0)
	for i, v := range values {
		_, err := d.Decode(v, int64(i), b)
		if err == nil {
			t.Fatalf("corrupt value %d accepted", i)
		}
		got[Reason(err)]++
	}
	for r, n := range reasons {
		if got[r] != n {
			t.Errorf("reason %s: %d, want %d (all: %v)", r, got[r], n, got)
		}
	}
	if !errors.Is(pgsink.ErrGap, pgsink.ErrGap) || b.Flows() != 0 {
		t.Fatalf("batch holds %d flows", b.Flows())
	}
}

func TestParseRetention(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "0": 0, "7d": 7 * 24 * time.Hour, "36h": 36 * time.Hour} {
		if got, err := ParseRetention(in); err != nil || got != want {
			t.Errorf("ParseRetention(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"7x", "-1d", "d"} {
		if _, err := ParseRetention(in); err == nil {
			t.Errorf("ParseRetention(%q) accepted", in)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, enriched := range []bool{false, true} {
		name, records := "plain", flowtest.Records
		if enriched {
			name, records = "enriched", flowtest.EnrichedRecords
		}
		b.Run(name, func(b *testing.B) {
			values, _ := records(1, 10000, 1, time.Now().Add(-time.Hour))
			batch := pgsink.NewBatch("flows", 0)
			var d Decoder
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				v := values[i%len(values)]
				if i%len(values) == 0 {
					batch.Reset("flows", 0)
				}
				if _, err := d.Decode(v, int64(i), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
		})
	}
}
