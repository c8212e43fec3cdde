package mocker

import (
	"context"
	"errors"
	"net"
	"syscall"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	produced prometheus.Counter
	bytes    prometheus.Counter
	resent   prometheus.Counter
	failed   *prometheus.CounterVec
}

// Failure reasons: a fixed set, so the label cannot grow without bound.
const (
	reasonBrokerUnavailable = "broker_unavailable" // no leader, broker down or restarting
	reasonTimeout           = "timeout"
	reasonTooLarge          = "too_large"
	reasonUnknownTopic      = "unknown_topic"
	reasonSequence          = "sequence" // idempotent producer sequence/epoch errors
	reasonNetwork           = "network"
	reasonShutdown          = "shutdown" // failed while stopping; not re-sent
	reasonOther             = "other"
)

func newMetrics(reg prometheus.Registerer, inFlight func() float64) (*metrics, error) {
	m := &metrics{
		produced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowpipeline_mocker_flows_produced_total",
			Help: "Flows acknowledged by Kafka.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowpipeline_mocker_produced_bytes_total",
			Help: "Record value bytes acknowledged by Kafka.",
		}),
		resent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowpipeline_mocker_flows_resent_total",
			Help: "Flows handed to the producer again after a failed delivery.",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowpipeline_mocker_flows_failed_total",
			Help: "Failed flow deliveries by reason; each is re-sent unless the reason is shutdown.",
		}, []string{"reason"}),
	}
	for _, r := range []string{reasonBrokerUnavailable, reasonTimeout, reasonTooLarge, reasonUnknownTopic,
		reasonSequence, reasonNetwork, reasonShutdown, reasonOther} {
		m.failed.WithLabelValues(r) // export zeros so rate() works from the start
	}
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "flowpipeline_mocker_inflight_flows",
		Help: "Flows handed to the producer and not yet acknowledged or failed.",
	}, inFlight)
	for _, c := range []prometheus.Collector{m.produced, m.bytes, m.resent, m.failed, inflight} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// failureReason maps a delivery error to a metric label.
func failureReason(err error) string {
	var kerr sarama.KError
	if errors.As(err, &kerr) {
		switch kerr {
		case sarama.ErrNotLeaderForPartition, sarama.ErrLeaderNotAvailable, sarama.ErrNotEnoughReplicas,
			sarama.ErrNotEnoughReplicasAfterAppend, sarama.ErrBrokerNotAvailable, sarama.ErrReplicaNotAvailable,
			sarama.ErrKafkaStorageError, sarama.ErrNotController:
			return reasonBrokerUnavailable
		case sarama.ErrRequestTimedOut:
			return reasonTimeout
		case sarama.ErrMessageSizeTooLarge, sarama.ErrInvalidMessageSize:
			return reasonTooLarge
		case sarama.ErrUnknownTopicOrPartition, sarama.ErrInvalidTopic:
			return reasonUnknownTopic
		case sarama.ErrOutOfOrderSequenceNumber, sarama.ErrDuplicateSequenceNumber,
			sarama.ErrInvalidProducerEpoch, sarama.ErrUnknownProducerID, sarama.ErrInvalidProducerIDMapping:
			return reasonSequence
		}
		return reasonOther
	}
	switch {
	case errors.Is(err, sarama.ErrOutOfBrokers), errors.Is(err, sarama.ErrNotConnected),
		errors.Is(err, sarama.ErrClosedClient):
		return reasonBrokerUnavailable
	case errors.Is(err, sarama.ErrShuttingDown):
		return reasonShutdown
	case errors.Is(err, context.DeadlineExceeded):
		return reasonTimeout
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return reasonNetwork
	}
	var nerr net.Error
	if errors.As(err, &nerr) {
		if nerr.Timeout() {
			return reasonTimeout
		}
		return reasonNetwork
	}
	return reasonOther
}
