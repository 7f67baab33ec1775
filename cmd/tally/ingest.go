package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tally-billing/tally/ingest"
	"github.com/tally-billing/tally/ingest/producer"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/telemetry"
)

func init() {
	register("ingest", command{
		summary: "serve the HTTP ingest API (POST /v1/events) and publish usage to Kafka",
		run:     runIngest,
	})
}

func runIngest(ctx context.Context, env *environment, args []string) error {
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	fs.String("config", "", "JSON config file")
	kf := addKafkaFlags(fs)
	tf := addTopicFlags(fs)
	lf := addLogFlags(fs)
	billing := billingFlags(fs)
	httpAddr := fs.String("http-addr", "127.0.0.1:8080", "address of the ingest API")
	adminAddr := fs.String("admin-addr", "127.0.0.1:9101", "address of /metrics, /healthz, /readyz")
	apiKeys := fs.String("api-keys", "", "gateway API keys as name=key,name=key (or @FILE with one name=key per line); empty: loopback clients only")
	maxBody := fs.Int64("max-body-bytes", 4<<20, "largest request body")
	maxBatch := fs.Int("max-batch", 1000, "most events in one batch request")
	batchTimeout := fs.Duration("kafka-batch-timeout", 2*time.Millisecond, "how long the Kafka writer waits to fill a batch")
	compression := fs.String("kafka-compression", "lz4", "compression of usage records: none, gzip, snappy, lz4, zstd")
	if err := env.parse(fs, args); err != nil {
		return err
	}
	log, err := lf.logger(env)
	if err != nil {
		return err
	}
	cfg, err := billing()
	if err != nil {
		return err
	}
	keys, err := parseAPIKeys(*apiKeys)
	if err != nil {
		return err
	}
	pcfg := producer.DefaultConfig(kf.list(), *tf.usage)
	pcfg.BatchTimeout, pcfg.Compression = *batchTimeout, *compression
	writer, err := producer.NewWriter(pcfg)
	if err != nil {
		return err
	}
	defer writer.Close()

	reg := telemetry.NewRegistry()
	handler, err := ingest.NewHandler(ingest.HandlerConfig{MaxBodyBytes: *maxBody, MaxBatch: *maxBatch, APIKeys: keys, PublishTimeout: 15 * time.Second},
		cfg.Catalogue, writer, log, ingest.NewMetrics(reg), time.Now)
	if err != nil {
		return err
	}
	admin := telemetry.NewAdmin(*adminAddr, reg, log)
	admin.AddCheck("kafka", func(ctx context.Context) error { return kafkax.Ping(ctx, kf.list()) })

	mux := http.NewServeMux()
	mux.Handle("/v1/events", handler)
	srv := &http.Server{Addr: *httpAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *httpAddr, err)
	}
	log.Info("ingest API listening", "addr", ln.Addr().String(), "topic", *tf.usage, "brokers", *kf.brokers, "api_keys", len(keys))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return admin.Run(gctx) })
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		// Drain: stop accepting, let in-flight requests get their Kafka acks.
		shut, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		log.Info("ingest shutting down: draining in-flight requests")
		return srv.Shutdown(shut)
	})
	return g.Wait()
}

// parseAPIKeys reads name=key pairs, comma separated or one per line in @FILE.
func parseAPIKeys(spec string) (map[string]string, error) {
	keys := map[string]string{}
	if spec == "" {
		return keys, nil
	}
	text := spec
	sep := ","
	if strings.HasPrefix(spec, "@") {
		raw, err := os.ReadFile(spec[1:])
		if err != nil {
			return nil, fmt.Errorf("--api-keys: %w", err)
		}
		text, sep = string(raw), "\n"
	}
	for _, part := range strings.Split(text, sep) {
		part = strings.TrimSpace(part)
		if part == "" || strings.HasPrefix(part, "#") {
			continue
		}
		name, key, ok := strings.Cut(part, "=")
		if !ok || name == "" || key == "" {
			return nil, fmt.Errorf("--api-keys: %q is not name=key", part)
		}
		keys[key] = name
	}
	return keys, nil
}
