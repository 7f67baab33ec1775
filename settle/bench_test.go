package settle

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
)

// benchEngine builds an engine holding October 2026 for accounts × every catalogue service,
// each (account, service) one usage event of a size that spreads over all four tiers.
func benchEngine(b *testing.B, accounts int, emit Emit) (*Engine, contract.Period, time.Time) {
	b.Helper()
	cfg := defaultConfig()
	eng, err := New(cfg, emit)
	if err != nil {
		b.Fatal(err)
	}
	at := mustTime("2026-10-15T12:00:00+08:00")
	services := cfg.Catalogue.ServiceIDs()
	for i := range accounts {
		acct := fmt.Sprintf("acct-%07d", i)
		for j, svc := range services {
			if (i+j)%3 == 0 {
				if err := eng.Apply(Activation{Account: acct, Service: svc, At: at}, at); err != nil {
					b.Fatal(err)
				}
			}
			calls := int64(1 + (i*7919+j*104729)%1_000_000)
			if err := eng.Apply(Usage{usageOf(fmt.Sprintf("e-%d-%d", i, j), acct, svc, calls, at)}, at); err != nil {
				b.Fatal(err)
			}
		}
	}
	return eng, contract.PeriodOf(at, cfg.Location), mustTime("2026-11-01T00:00:00+08:00")
}

func benchSettle(b *testing.B, accounts int, encode bool) {
	var events int
	emit := func(o cloudevent.Out) error { events++; return nil }
	if encode {
		enc := json.NewEncoder(io.Discard)
		emit = func(o cloudevent.Out) error { events++; return enc.Encode(o) }
	}
	for range b.N {
		b.StopTimer()
		eng, p, at := benchEngine(b, accounts, emit)
		events = 0
		runtime.GC() // collect the set-up's garbage outside the measurement
		b.StartTimer()
		if err := eng.Settle(p, at); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(accounts*8)/b.Elapsed().Seconds()*float64(b.N), "lines/s")
	b.ReportMetric(float64(events), "events/op")
}

// BenchmarkSettle settles one month of accounts × 8 services in memory: bills and holds built
// and handed to the emitter (not serialised).
func BenchmarkSettle1Mx8(b *testing.B)   { benchSettle(b, 1_000_000, false) }
func BenchmarkSettle100kx8(b *testing.B) { benchSettle(b, 100_000, false) }

// ...and the same with every event encoded as JSON (as replay and the worker do).
func BenchmarkSettleEncoded100kx8(b *testing.B) { benchSettle(b, 100_000, true) }

// BenchmarkReplayUsage replays a month of usage lines (decode, validate, dedup, fold) and settles.
func BenchmarkReplayUsage(b *testing.B) {
	var log []byte
	for n := range 100_000 {
		log = fmt.Appendf(log, `{"specversion":"1.0","id":"ev-%d","source":"bench","type":"tally.usage.v1","time":"2026-10-%02dT12:00:00+08:00","data":{"account":"acct-%05d","service":"image-tagging","calls":%d}}`+"\n",
			n, 1+n%31, n%5000, 1+n%100)
	}
	b.SetBytes(int64(len(log)))
	b.ResetTimer()
	for range b.N {
		if _, err := Replay(bytes.NewReader(log), io.Discard, io.Discard, defaultConfig(), until("2026-11-01T00:00:00+08:00")); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(100_000*b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkSnapshot100kx8 writes the state of 100,000 accounts × 8 services after their month is
// settled (as the settle worker does after each settlement, gzip included); BenchmarkRestore100kx8
// reads it back.
func BenchmarkSnapshot100kx8(b *testing.B) {
	rep := settledReplayer(b)
	var buf bytes.Buffer
	b.ResetTimer()
	for range b.N {
		buf.Reset()
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		if err := rep.Snapshot(zw); err != nil {
			b.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(buf.Len()), "gzip-bytes")
}

func BenchmarkRestore100kx8(b *testing.B) {
	rep := settledReplayer(b)
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err := rep.Snapshot(zw); err != nil {
		b.Fatal(err)
	}
	_ = zw.Close()
	b.ResetTimer()
	for range b.N {
		zr, err := gzip.NewReader(bytes.NewReader(buf.Bytes()))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := RestoreReplayer(defaultConfig(), ReplayOptions{}, func(cloudevent.Out) error { return nil }, zr); err != nil {
			b.Fatal(err)
		}
	}
}

func settledReplayer(b *testing.B) *Replayer {
	b.Helper()
	eng, p, at := benchEngine(b, 100_000, func(cloudevent.Out) error { return nil })
	if err := eng.Settle(p, at); err != nil {
		b.Fatal(err)
	}
	return &Replayer{engine: eng, cfg: defaultConfig(), clock: at}
}

// BenchmarkUsageMemory reports the engine's memory per usage event held for a month: with usage
// ids remembered (replay of any log) and without (the settle worker, whose usage is deduplicated
// upstream).
func BenchmarkUsageMemory(b *testing.B) {
	for _, dedupUpstream := range []bool{false, true} {
		b.Run(fmt.Sprintf("deduplicated-upstream=%t", dedupUpstream), func(b *testing.B) {
			const events = 1_000_000
			var perEvent float64
			for range b.N {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				eng, err := New(defaultConfig(), func(cloudevent.Out) error { return nil })
				if err != nil {
					b.Fatal(err)
				}
				eng.usageDeduplicated = dedupUpstream
				at := mustTime("2026-10-01T00:00:00+08:00")
				for n := range events {
					u := usageOf(fmt.Sprintf("req-%016x", n), fmt.Sprintf("acct-%05d", n%10_000), "image-tagging", 1, at.Add(time.Duration(n)*time.Second))
					if err := eng.Apply(Usage{u}, at); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perEvent = float64(after.HeapAlloc-before.HeapAlloc) / events
				runtime.KeepAlive(eng)
			}
			b.ReportMetric(perEvent, "bytes/event")
		})
	}
}
