package worker

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/kafkax"
)

// Running totals are kept per partition: they are whole only when every record of an account is
// on the partition ingest routes it to (murmur2 of the account, kafka-go's and the Java client's
// default). A Kafka-direct producer that partitions some other way (librdkafka's default,
// sarama's) spreads an account over partitions: each holds a partial total, and a retry landing
// on another partition than the original is counted on both. Such account-months are found as
// their records are folded, shared through ClickHouse (misrouted_usage) with every aggregator,
// and from then on answered from the exact recount and kept off the totals topic.

// misroutedUsage is the set of account-months known to be misrouted, and those found here and
// not yet shared.
type misroutedUsage struct {
	mu      sync.RWMutex
	known   map[accountMonth]bool
	pending []misroutedRecord
}

type accountMonth struct {
	account string
	period  contract.Period
}

type misroutedRecord struct {
	accountMonth
	partition, home int
	offset          int64
}

// Misrouted reports whether the account-month's usage is known to be spread over partitions.
func (w *Worker) Misrouted(account string, per contract.Period) bool {
	return w.misrouted.has(account, per)
}

func (m *misroutedUsage) has(account string, per contract.Period) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.known[accountMonth{account, per}]
}

// homes is where ingest routes each account: murmur2 over the usage topic's partitions, as the
// ingest producer's balancer does.
func (w *Worker) homes(ctx context.Context) (func(account string) int, error) {
	parts, err := kafkax.Partitions(ctx, kafkax.Cluster{Brokers: w.cfg.Brokers, Security: w.cfg.Security}, w.cfg.Topic)
	if err != nil {
		return nil, err
	}
	slices.Sort(parts) // the writer's balancer sees partitions 0..n-1 in order (writer.go)
	balancer := &kafka.Murmur2Balancer{}
	return func(account string) int { return balancer.Balance(kafka.Message{Key: []byte(account)}, parts...) }, nil
}

// noteMisrouted counts a misrouted record; the first of its account-month here is logged and
// queued to be shared.
func (w *Worker) noteMisrouted(partition, home int, account string, per contract.Period, offset int64) {
	w.metrics.Misrouted.WithLabelValues(strconv.Itoa(partition)).Inc()
	key := accountMonth{account, per}
	w.misrouted.mu.Lock()
	defer w.misrouted.mu.Unlock()
	if w.misrouted.known[key] {
		return
	}
	w.misrouted.known[key] = true
	w.misrouted.pending = append(w.misrouted.pending, misroutedRecord{accountMonth: key, partition: partition, home: home, offset: offset})
	w.log.Warn("aggregate: usage of an account arrived on a partition ingest does not route it to; a producer does not partition by murmur2 of the account (see README, Kafka-direct gateways). Its running total is answered from the exact recount from now on",
		"account", account, "period", per.String(), "partition", partition, "home_partition", home, "offset", offset)
}

// shareMisrouted writes the account-months found here to misrouted_usage and reads those every
// aggregator found, every few seconds until ctx ends.
func (w *Worker) shareMisrouted(ctx context.Context) {
	t := time.NewTicker(misroutedShareInterval)
	defer t.Stop()
	for {
		if err := w.syncMisrouted(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("aggregate: could not share misrouted account-months through ClickHouse; retrying (this instance still answers those it found itself from the recount)", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

const misroutedShareInterval = 5 * time.Second

func (w *Worker) syncMisrouted(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	w.misrouted.mu.Lock()
	pending := w.misrouted.pending
	w.misrouted.pending = nil
	w.misrouted.mu.Unlock()
	if len(pending) > 0 {
		if err := w.insertMisrouted(ctx, pending); err != nil {
			w.misrouted.mu.Lock()
			w.misrouted.pending = append(pending, w.misrouted.pending...)
			w.misrouted.mu.Unlock()
			return err
		}
	}
	// Only the open months matter (a closed one is answered from the recount anyway), so the set
	// stays as small as the misrouted account-months of the open months.
	from := w.oldestOpen()
	rows, err := w.store.ch.Query(ctx, "SELECT DISTINCT account, period FROM misrouted_usage WHERE period >= ?", from.YYYYMM())
	if err != nil {
		return err
	}
	defer rows.Close()
	found := map[accountMonth]bool{}
	for rows.Next() {
		var account string
		var yyyymm uint32
		if err := rows.Scan(&account, &yyyymm); err != nil {
			return err
		}
		found[accountMonth{account, contract.Period{Year: int(yyyymm / 100), Month: time.Month(yyyymm % 100)}}] = true
	}
	if err := rows.Err(); err != nil {
		return err
	}
	w.misrouted.mu.Lock()
	defer w.misrouted.mu.Unlock()
	for k := range found {
		w.misrouted.known[k] = true
	}
	for k := range w.misrouted.known {
		if k.period.Before(from) {
			delete(w.misrouted.known, k)
		}
	}
	return nil
}

// oldestOpen is the oldest month a partition here keeps running totals of (zero: every month,
// or no partition yet).
func (w *Worker) oldestOpen() contract.Period {
	w.mu.RLock()
	defer w.mu.RUnlock()
	var oldest contract.Period
	for _, p := range w.parts {
		from := p.OpenFrom()
		if from.IsZero() {
			return contract.Period{}
		}
		if oldest.IsZero() || from.Before(oldest) {
			oldest = from
		}
	}
	return oldest
}

func (w *Worker) insertMisrouted(ctx context.Context, recs []misroutedRecord) error {
	batch, err := w.store.ch.PrepareBatch(ctx, "INSERT INTO misrouted_usage (account, period, kafka_partition, home_partition, first_offset, detected_at)")
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	for _, r := range recs {
		if err := batch.Append(r.account, r.period.YYYYMM(), int32(r.partition), int32(r.home), r.offset, now); err != nil {
			return err
		}
	}
	return batch.Send()
}
