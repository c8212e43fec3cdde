package pgsink

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// OtherGroups lists the consumer groups, other than this sink's, that have
// offsets stored for topic. Two groups storing the same topic in one
// database would store every flow twice.
func (s *Sink) OtherGroups(ctx context.Context, topic string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT consumer_group FROM kafka_offsets
WHERE topic = $1 AND consumer_group <> $2 ORDER BY consumer_group`, topic, s.cfg.Group)
	if err != nil {
		return nil, opErr("offsets", err)
	}
	groups, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return groups, opErr("offsets", err)
}

// ResetOffset moves the stored next offset of topic/partition from stale
// to next, for a partition whose stored offset is past the end of the
// topic (the topic was re-created or Kafka's data was reset). Write would
// otherwise skip every new record below stale as already stored. The
// update only applies if the row still holds stale, so a concurrent
// writer's progress is never undone; it reports whether it applied.
func (s *Sink) ResetOffset(ctx context.Context, topic string, partition int32, stale, next int64) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE kafka_offsets SET next_offset = $5, updated_at = now()
WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND next_offset = $4`, s.cfg.Group, topic, partition, stale, next)
	if err != nil {
		return false, opErr("offsets", fmt.Errorf("reset the stored offset of %s/%d from %d to %d: %w", topic, partition, stale, next, err))
	}
	return tag.RowsAffected() == 1, nil
}
