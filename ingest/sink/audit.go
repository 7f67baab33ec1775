package sink

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/kafkax"
)

// AuditConfig names what Audit compares.
type AuditConfig struct {
	Brokers []string
	// Security is how connections to Kafka are made (SASL, TLS); zero: plaintext.
	Security        kafkax.Security
	Topic, DLQTopic string
	Group           string // the sink's consumer group (its progress)
	// Location and Services decode records as the sink does (a retry is told by its identity).
	Location *time.Location
	Services contract.ServiceChecker
}

// PartitionAudit accounts for every offset of one usage partition below the sink's progress:
// each must be a usage row, a retry of an identity whose first copy is a row (usage_events keeps
// only the first copy once it merges), a dead letter or an acknowledged gap, exactly one of them.
type PartitionAudit struct {
	Partition int
	// LogStart and End are the partition's offsets in Kafka now; Progress is the sink's.
	LogStart, End, Progress         int64
	Rows, Retries, DeadLetters, Gap int64 // offsets below Progress accounted as each
	// Unverifiable are offsets below LogStart with no row, dead letter or gap: Kafka no longer
	// holds the record to tell a merged-away retry from a loss.
	Unverifiable int64
	// NoRecord are offsets Kafka holds no record at (transaction markers): nothing to account.
	NoRecord int64
	// Missing are offsets below Progress that Kafka holds (or held: below LogStart) a record at,
	// found neither as a row, a dead letter nor a gap: lost. Both are offsets found as a row and
	// as a dead letter.
	Missing, Both []OffsetRange
	Pending       int64 // records at or after Progress, not written yet (lag)
}

// OffsetRange is [From, To).
type OffsetRange struct{ From, To int64 }

// Clean reports whether every offset is accounted for once.
func (a PartitionAudit) Clean() bool { return len(a.Missing) == 0 && len(a.Both) == 0 }

// Audit proves after the fact that the sink lost nothing, from sources outside usage_events'
// own view: the usage topic in Kafka (which offsets hold records), the dead-letter topic (the
// source offset of each dead letter), usage_events (the source offset of each row) and the
// recorded gaps. It reads the whole dead-letter topic and the retained part of the usage topic
// below the progress (retention moving past it meanwhile fails the audit: run it again); memory
// is a bit per offset per set and an entry per identity written, per partition.
func Audit(ctx context.Context, ch driver.Conn, cfg AuditConfig) ([]PartitionAudit, error) {
	cluster := kafkax.Cluster{Brokers: cfg.Brokers, Security: cfg.Security}
	parts, err := kafkax.Partitions(ctx, cluster, cfg.Topic)
	if err != nil {
		return nil, err
	}
	sort.Ints(parts)
	dead := map[int]*bitset{}
	if err := kafkax.ReadAll(ctx, cluster, cfg.DLQTopic, func(m kafka.Message) error {
		if headerValue(m, HeaderTopic) != cfg.Topic {
			return nil
		}
		p, err1 := strconv.Atoi(headerValue(m, HeaderPartition))
		off, err2 := strconv.ParseInt(headerValue(m, HeaderOffset), 10, 64)
		if err1 != nil || err2 != nil {
			return nil
		}
		if dead[p] == nil {
			dead[p] = &bitset{}
		}
		dead[p].set(off)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read the dead-letter topic: %w", err)
	}
	gaps, err := ListGaps(ctx, ch)
	if err != nil {
		return nil, err
	}
	var out []PartitionAudit
	for _, p := range parts {
		a := PartitionAudit{Partition: p}
		if a.LogStart, a.End, err = kafkax.PartitionBounds(ctx, cluster, cfg.Topic, p); err != nil {
			return nil, err
		}
		if err := ch.QueryRow(ctx, "SELECT max(next_offset) FROM sink_progress WHERE consumer = ? AND kafka_topic = ? AND kafka_partition = ?",
			cfg.Group, cfg.Topic, int32(p)).Scan(&a.Progress); err != nil {
			return nil, fmt.Errorf("read the sink's progress of partition %d: %w", p, err)
		}
		a.Pending = max(0, a.End-max(a.Progress, a.LogStart))
		rows := &bitset{}
		q, err := ch.Query(ctx, "SELECT DISTINCT kafka_offset FROM usage_events WHERE kafka_topic = ? AND kafka_partition = ? AND kafka_offset < ?",
			cfg.Topic, int32(p), a.Progress)
		if err != nil {
			return nil, fmt.Errorf("read the offsets of partition %d in usage_events: %w", p, err)
		}
		for q.Next() {
			var off int64
			if err := q.Scan(&off); err != nil {
				q.Close()
				return nil, err
			}
			rows.set(off)
		}
		q.Close()
		if err := q.Err(); err != nil {
			return nil, err
		}
		gapped := &bitset{}
		for _, g := range gaps {
			if g.Consumer == cfg.Group && g.Topic == cfg.Topic && int(g.Partition) == p && !g.AcknowledgedAt.IsZero() {
				for off := g.From; off < g.To; off++ {
					gapped.set(off)
				}
			}
		}
		// The first copy's offset of each identity written, to tell a retry from a loss.
		first, err := firstOffsets(ctx, ch, cfg.Topic, p, a.Progress)
		if err != nil {
			return nil, err
		}
		d := dead[p]
		if d == nil {
			d = &bitset{}
		}
		var missing, both ranges
		classify := func(off int64, held bool, raw []byte, received time.Time) {
			r, dl, g := rows.has(off), d.has(off), gapped.has(off)
			switch {
			case r && dl:
				both.add(off)
			case r:
				a.Rows++
			case dl:
				a.DeadLetters++
			case g:
				a.Gap++
			case off < a.LogStart:
				a.Unverifiable++
			case !held:
				a.NoRecord++
			default:
				u, err := contract.DecodeUsage(raw, received, cfg.Services)
				if err == nil {
					k := identity{u.Account, u.Service, contract.PeriodOf(u.Time, cfg.Location).YYYYMM(), u.ID}
					if f, ok := first[k]; ok && f < off {
						a.Retries++
						return
					}
				}
				missing.add(off) // a usage record with no row of its identity, or a bad one with no dead letter
			}
		}
		next := int64(0)
		for ; next < min(a.LogStart, a.Progress); next++ {
			classify(next, false, nil, time.Time{})
		}
		if a.Progress > a.LogStart {
			err := kafkax.ReadPartitionFrom(ctx, cluster, cfg.Topic, p, a.LogStart, func(m kafka.Message) error {
				if m.Offset >= a.Progress {
					return nil
				}
				for ; next < m.Offset; next++ {
					classify(next, false, nil, time.Time{})
				}
				classify(m.Offset, true, m.Value, m.Time)
				next = m.Offset + 1
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("read partition %d of the usage topic: %w", p, err)
			}
		}
		for ; next < a.Progress; next++ {
			classify(next, false, nil, time.Time{})
		}
		a.Missing, a.Both = missing, both
		out = append(out, a)
	}
	return out, nil
}

type identity struct {
	account, service string
	period           uint32
	id               string
}

// firstOffsets maps each identity written from partition p below progress to its smallest offset.
func firstOffsets(ctx context.Context, ch driver.Conn, topic string, p int, progress int64) (map[identity]int64, error) {
	rows, err := ch.Query(ctx, `SELECT account, service, period, id, min(kafka_offset) FROM usage_events
		WHERE kafka_topic = ? AND kafka_partition = ? AND kafka_offset < ? GROUP BY account, service, period, id`, topic, int32(p), progress)
	if err != nil {
		return nil, fmt.Errorf("read the identities of partition %d in usage_events: %w", p, err)
	}
	defer rows.Close()
	out := map[identity]int64{}
	for rows.Next() {
		var k identity
		var off int64
		if err := rows.Scan(&k.account, &k.service, &k.period, &k.id, &off); err != nil {
			return nil, err
		}
		out[k] = off
	}
	return out, rows.Err()
}

// bitset is a set of non-negative offsets.
type bitset struct{ words []uint64 }

func (b *bitset) set(i int64) {
	if i < 0 {
		return
	}
	w := int(i / 64)
	for len(b.words) <= w {
		b.words = append(b.words, 0)
	}
	b.words[w] |= 1 << (uint(i) % 64)
}

func (b *bitset) has(i int64) bool {
	w := int(i / 64)
	return i >= 0 && w < len(b.words) && b.words[w]&(1<<(uint(i)%64)) != 0
}

// ranges collects offsets, added in increasing order, as ranges.
type ranges []OffsetRange

func (r *ranges) add(off int64) {
	if n := len(*r); n > 0 && (*r)[n-1].To == off {
		(*r)[n-1].To++
		return
	}
	*r = append(*r, OffsetRange{From: off, To: off + 1})
}
