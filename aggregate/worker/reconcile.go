package worker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/telemetry"
)

// ErrClosedMonth: the aggregator keeps no running totals for the month any more (its figures are
// the exact recount of usage_events, which bills use anyway).
var ErrClosedMonth = errors.New("month closed in the running totals")

// Difference is a (account, service) whose running total for the period differs from the exact
// recount of usage_events.
type Difference struct {
	Account, Service string
	Running, Exact   int64
}

// Reconcile compares the period's running totals, as of each partition's last committed
// checkpoint, with an exact recount from usage_events (FINAL: every identity once). Run it when
// the aggregator and the sink have caught up, or differences only say that one is behind.
func Reconcile(ctx context.Context, ch driver.Conn, consumer, topic string, p contract.Period) ([]Difference, error) {
	period := p.YYYYMM()
	var openFrom uint32
	if err := ch.QueryRow(ctx, "SELECT max(open_from) FROM aggregate_checkpoints WHERE consumer = ? AND kafka_topic = ?", consumer, topic).Scan(&openFrom); err != nil {
		return nil, fmt.Errorf("read open months: %w", err)
	}
	if openFrom != 0 && period < openFrom {
		return nil, fmt.Errorf("%w: %s (running totals are kept from %s on)", ErrClosedMonth, p, contract.PeriodOfYYYYMM(openFrom))
	}
	running, err := sums(ctx, ch, `
		SELECT account, service, toInt64(sum(calls)) FROM (
			SELECT t.kafka_partition AS part, t.account AS account, t.service AS service, argMax(t.calls, t.next_offset) AS calls
			FROM aggregate_totals AS t
			INNER JOIN (SELECT kafka_partition, max(next_offset) AS committed FROM aggregate_checkpoints
			            WHERE consumer = ? AND kafka_topic = ? GROUP BY kafka_partition) AS c ON t.kafka_partition = c.kafka_partition
			WHERE t.consumer = ? AND t.kafka_topic = ? AND t.period = ? AND t.next_offset <= c.committed
			GROUP BY part, account, service)
		GROUP BY account, service`, consumer, topic, consumer, topic, period)
	if err != nil {
		return nil, fmt.Errorf("read running totals: %w", err)
	}
	exact, err := sums(ctx, ch, `SELECT account, service, toInt64(sum(calls)) FROM usage_events FINAL WHERE period = ? GROUP BY account, service`, period)
	if err != nil {
		return nil, fmt.Errorf("recount usage_events: %w", err)
	}
	var out []Difference
	for k, v := range exact {
		if running[k] != v {
			out = append(out, Difference{Account: k.account, Service: k.service, Running: running[k], Exact: v})
		}
	}
	for k, v := range running {
		if _, ok := exact[k]; !ok && v != 0 {
			out = append(out, Difference{Account: k.account, Service: k.service, Running: v})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Account != out[j].Account {
			return out[i].Account < out[j].Account
		}
		return out[i].Service < out[j].Service
	})
	return out, nil
}

type accountService struct{ account, service string }

// recount is an account's exact usage of each service in a period, from usage_events (FINAL:
// every identity once): the figures of a closed month.
func recount(ctx context.Context, ch driver.Conn, account string, p contract.Period) (map[string]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	exact, err := sums(ctx, ch, "SELECT account, service, toInt64(sum(calls)) FROM usage_events FINAL WHERE account = ? AND period = ? GROUP BY account, service", account, p.YYYYMM())
	if err != nil {
		return nil, fmt.Errorf("recount usage_events: %w", err)
	}
	out := make(map[string]int64, len(exact))
	for k, v := range exact {
		out[k.service] = v
	}
	return out, nil
}

// sums runs a query returning (account, service, calls) rows.
func sums(ctx context.Context, ch driver.Conn, query string, args ...any) (map[accountService]int64, error) {
	rows, err := ch.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[accountService]int64{}
	for rows.Next() {
		var k accountService
		var v int64
		if err := rows.Scan(&k.account, &k.service, &v); err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, rows.Err()
}

// ReconcileEvery reconciles the current and the previous month every interval until ctx ends,
// exporting the number of differences per period (tally_aggregate_reconcile_differences). A
// difference that persists while the aggregator and the sink keep up means duplicates further apart
// than the dedup window (bills are not affected: settlement recounts).
func (w *Worker) ReconcileEvery(ctx context.Context, interval time.Duration, now func() time.Time) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cur := contract.PeriodOf(now(), w.cfg.Location)
		for _, p := range []contract.Period{cur.Prev(), cur} {
			diffs, err := Reconcile(ctx, w.store.ch, w.cfg.Group, w.cfg.Topic, p)
			if errors.Is(err, ErrClosedMonth) {
				continue
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				w.log.Warn("aggregate: periodic reconciliation failed", "period", p.String(), "err", err)
				continue
			}
			telemetry.SetInt(w.metrics.Differences.WithLabelValues(p.String()), int64(len(diffs)))
			if len(diffs) > 0 {
				w.log.Info("aggregate: running totals differ from the exact recount", "period", p.String(), "differences", len(diffs), "first", diffs[0])
			}
		}
	}
}
