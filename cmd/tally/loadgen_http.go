package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// httpLoadConfig is what --target load sends.
type httpLoadConfig struct {
	target, apiKey string
	batch, clients int
	duration       time.Duration
	// rate caps the offered load in events per second, spread evenly over the clients (0: as fast
	// as the server answers). A capped load measures latency at a given rate, not the maximum.
	rate     float64
	accounts int
	services []string
	// sdk writes events as the official SDKs do (subject, datacontenttype, an extension, their
	// attribute order) rather than in the minimal shape; retries is the share sent twice.
	sdk     bool
	retries float64
}

type loadEvent struct {
	id      string
	account int
	service string
	calls   int
}

// Usage event shapes --target sends: the id, time, account, service and calls go in this order.
const (
	minimalShape = `{"specversion":"1.0","id":%q,"source":"loadgen","type":"tally.usage.v1","time":%q,"data":{"account":"acct-%06d","service":%q,"calls":%d}}`
	sdkShape     = `{"specversion":"1.0","id":%q,"source":"//loadgen.example/eu-1","type":"tally.usage.v1","subject":"usage","datacontenttype":"application/json","time":%q,"data":{"account":"acct-%06d","service":%q,"calls":%d},"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`
)

// httpLoad posts batches of fresh usage events to an ingest API for a while, from concurrent
// clients, and reports accepted events per second and request latency. Bounded in time and
// meant for loopback only.
func httpLoad(ctx context.Context, env *environment, cfg httpLoadConfig) error {
	target, apiKey, batch, clients, accounts, services := cfg.target, cfg.apiKey, cfg.batch, cfg.clients, cfg.accounts, cfg.services
	ctx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	var accepted, failed atomic.Int64
	var mu sync.Mutex
	var latencies []time.Duration
	start := time.Now()
	var wg sync.WaitGroup
	transport := &http.Transport{MaxIdleConnsPerHost: clients}
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	contentType := "application/cloudevents-batch+json"
	shape := minimalShape
	if cfg.sdk {
		shape = sdkShape
	}
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), uint64(start.UnixNano())))
			var buf bytes.Buffer
			var local []time.Duration
			var ev loadEvent
			// Each client sends one batch every interval, its slots staggered from the others'.
			var interval time.Duration
			if cfg.rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(batch*clients) / cfg.rate)
			}
			for n := 0; ctx.Err() == nil; n++ {
				if interval > 0 {
					slot := start.Add(time.Duration(n)*interval + time.Duration(c)*interval/time.Duration(clients))
					select {
					case <-ctx.Done():
						continue
					case <-time.After(time.Until(slot)):
					}
				}
				buf.Reset()
				buf.WriteByte('[')
				now := time.Now().UTC().Format(time.RFC3339Nano)
				for i := range batch {
					if i > 0 {
						buf.WriteByte(',')
					}
					if i == 0 || r.Float64() >= cfg.retries { // else a gateway's retry: the previous event again
						ev = loadEvent{fmt.Sprintf("lt-%d-%d-%d-%d", start.UnixNano(), c, n, i), r.IntN(accounts), services[r.IntN(len(services))], 1 + r.IntN(10)}
					}
					fmt.Fprintf(&buf, shape, ev.id, now, ev.account, ev.service, ev.calls)
				}
				buf.WriteByte(']')
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(buf.Bytes()))
				if err != nil {
					failed.Add(1)
					return
				}
				req.Header.Set("Content-Type", contentType)
				if apiKey != "" {
					req.Header.Set("Authorization", "Bearer "+apiKey)
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					continue
				}
				local = append(local, time.Since(t0))
				accepted.Add(int64(batch))
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))]
	}
	fmt.Fprintf(env.stdout, "batch=%d clients=%d rate=%.0f duration=%s accepted=%d events (%.0f events/s) requests=%d failed=%d latency p50=%s p99=%s\n",
		batch, clients, cfg.rate, elapsed.Round(time.Millisecond), accepted.Load(), float64(accepted.Load())/elapsed.Seconds(),
		len(latencies), failed.Load(), pct(0.5).Round(time.Microsecond), pct(0.99).Round(time.Microsecond))
	return nil
}
