package kafka_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/spendletonliveaction/flow-pipeline/internal/kafka"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"2.1.0", true},
		{"3.9.0", true},
		{"4.1.1", true},
		{kafka.DefaultVersion, true},
		{"2.0.0", false}, // below Kafka 4's floor
		{"0.10.2.0", false},
		{"banana", false},
	} {
		_, err := kafka.ParseVersion(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseVersion(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestNewConfig(t *testing.T) {
	def, _ := kafka.ParseVersion(kafka.DefaultVersion)
	c := kafka.NewConfig("me", sarama.KafkaVersion{})
	if c.ClientID != "me" || c.Version != def {
		t.Errorf("NewConfig: client ID %q, version %v; want me, %v", c.ClientID, c.Version, def)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("base config invalid: %v", err)
	}

	c = kafka.NewConfig("p", sarama.V4_0_0_0, kafka.DialTimeout(time.Second),
		kafka.Producer(kafka.ProducerSettings{Idempotent: true, MaxMessageBytes: 4 << 20, RoundRobin: true, Compression: sarama.CompressionZSTD}),
		kafka.Consumer(sarama.OffsetOldest))
	if c.Version != sarama.V4_0_0_0 || c.Net.DialTimeout != time.Second {
		t.Errorf("version %v, dial timeout %s", c.Version, c.Net.DialTimeout)
	}
	if !c.Producer.Idempotent || c.Net.MaxOpenRequests != 1 || c.Producer.RequiredAcks != sarama.WaitForAll ||
		!c.Producer.Return.Successes || c.Producer.MaxMessageBytes != 4<<20 || c.Producer.Compression != sarama.CompressionZSTD {
		t.Errorf("producer settings not applied: %+v", c.Producer)
	}
	if !c.Consumer.Return.Errors || c.Consumer.Offsets.Initial != sarama.OffsetOldest {
		t.Errorf("consumer settings not applied: %+v", c.Consumer)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("idempotent producer config invalid: %v", err)
	}
}

func TestParseCompression(t *testing.T) {
	for _, name := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		if _, err := kafka.ParseCompression(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := kafka.ParseCompression("brotli"); err == nil {
		t.Error("brotli accepted")
	}
}

// TestConnectAndEndOffsets: Connect waits for the topic, EndOffsets sums
// what was produced, and an unreachable broker is ErrUnreachable.
func TestConnectAndEndOffsets(t *testing.T) {
	brokers := testenv.FakeKafka(t, 3, "t")
	ctx := context.Background()
	cfg := kafka.NewConfig("test", sarama.KafkaVersion{}, kafka.Producer(kafka.ProducerSettings{RoundRobin: true}))
	client, err := kafka.Connect(ctx, brokers, "t", cfg, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	producer, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	for range 7 {
		if _, _, err := producer.SendMessage(&sarama.ProducerMessage{Topic: "t", Value: sarama.StringEncoder("x")}); err != nil {
			t.Fatal(err)
		}
	}
	producer.Close()
	client2, err := kafka.Connect(ctx, brokers, "t", cfg, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer client2.Close()
	ends, err := kafka.EndOffsets(client2, "t")
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, off := range ends {
		sum += off
	}
	if len(ends) != 3 || sum != 7 {
		t.Errorf("end offsets %v: want 3 partitions summing to 7", ends)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	err = kafka.WaitForTopic(ctx, []string{addr}, "t", cfg, time.Second)
	if !errors.Is(err, kafka.ErrUnreachable) {
		t.Errorf("unreachable broker: got %v, want ErrUnreachable", err)
	}
}
