package sink_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// BenchmarkSinkRows: how fast the sink drains a backlog of usage records from Kafka into
// ClickHouse (decode, validate, batch insert, progress). Needs `make up`; run with -benchtime 1x.
func BenchmarkSinkRows(b *testing.B) {
	const n = 1_000_000
	for range b.N {
		b.StopTimer()
		e := setup(b, 4)
		msgs := make([]kafka.Message, n)
		for i := range n {
			acct := fmt.Sprintf("acct-%d", i%5000)
			msgs[i] = kafka.Message{Key: []byte(acct), Value: usage(fmt.Sprintf("b%d", i), acct, "image-tagging", 1+i%9, "2026-10-05T10:00:00+08:00")}
		}
		produceB(b, e, msgs)
		b.StartTimer()
		ctx, cancel := context.WithCancel(context.Background())
		done := runSinkWith(b, e, ctx, 50_000, time.Second)
		waitForProgress(b, e, 5*time.Minute)
		b.StopTimer()
		cancel()
		<-done
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
}
