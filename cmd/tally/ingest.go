package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tally-billing/tally/ingest"
	"github.com/tally-billing/tally/ingest/producer"
)

func init() {
	register("ingest", command{
		summary: "serve the HTTP ingest API (POST /v1/events) and publish usage to Kafka",
		run:     runIngest,
	})
}

func runIngest(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("ingest")
	rf := addRoleFlags(fs, "127.0.0.1:9101", false)
	kf, tf := rf.kafka, rf.topics
	httpAddr := fs.String("http-addr", "127.0.0.1:8080", "address of the ingest API")
	apiKeys := fs.String("api-keys", "", "gateway API keys: @FILE with one entry per line (keep keys off the command line), or entries separated by commas; "+
		"an entry is NAME=KEY or NAME=sha256:HEX, then optionally ;accounts=a|b|prefix-* and ;backfill; empty: loopback clients only")
	maxAge := fs.Duration("max-event-age", 35*24*time.Hour, "refuse usage that happened longer ago than this, unless the key may back-fill (negative: no limit)")
	maxBody := fs.Int64("max-body-bytes", 4<<20, "largest request body")
	maxBatch := fs.Int("max-batch", 1000, "most events in one batch request")
	batchTimeout := fs.Duration("kafka-batch-timeout", 2*time.Millisecond, "how long the Kafka writer waits to fill a batch")
	compression := fs.String("kafka-compression", "lz4", "compression of usage records: none, gzip, snappy, lz4, zstd")
	publishTimeout := fs.Duration("publish-timeout", 15*time.Second, "longest wait for Kafka to acknowledge a request's events before answering 503")
	maxInFlight := fs.Int("max-in-flight", 1024, "most requests waiting on Kafka at once; more are answered 503 at once")
	bodyTimeout := fs.Duration("body-timeout", 10*time.Second, "longest wait for a request's body; 408 after it")
	retryAfter := fs.Duration("retry-after", time.Second, "after a failed publish, answer 503 (Retry-After) at once for this long, then try Kafka with one request")
	replicaCheck := fs.Duration("replica-check-interval", 10*time.Second, "how often to check that every usage partition has min.insync.replicas in sync (ingest is not ready while one has not; 0: never)")
	if err := env.parse(fs, args); err != nil {
		return err
	}
	keys, err := parseAPIKeys(*apiKeys)
	if err != nil {
		return err
	}
	ring, err := ingest.NewKeyring(keys)
	if err != nil {
		return fmt.Errorf("--api-keys: %w", err)
	}
	pcfg := producer.DefaultConfig(kf.list(), *tf.usage)
	pcfg.BatchTimeout, pcfg.Compression = *batchTimeout, *compression
	writer, err := producer.NewWriter(pcfg)
	if err != nil {
		return err
	}
	defer writer.Close()

	r, cfg, _, err := rf.start(ctx, env)
	if err != nil {
		return err
	}
	log := r.log
	handler, err := ingest.NewHandler(ingest.HandlerConfig{MaxBodyBytes: *maxBody, MaxBatch: *maxBatch, Keys: ring, MaxEventAge: *maxAge, PublishTimeout: *publishTimeout,
		MaxInFlight: *maxInFlight, RetryAfter: *retryAfter, BodyTimeout: *bodyTimeout}, cfg.Catalogue, writer, log, ingest.NewMetrics(r.registry), env.clock())
	if err != nil {
		return err
	}
	r.admin.AddCheck("kafka writes", handler.Ready)
	if *replicaCheck > 0 {
		watch, err := ingest.NewReplicaWatch(ingest.ReplicaWatchConfig{Brokers: kf.list(), Topic: *tf.usage, Interval: *replicaCheck}, log, r.registry)
		if err != nil {
			return err
		}
		r.admin.AddCheck("usage replicas in sync", watch.Ready)
		go watch.Run(ctx)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/events", handler)
	acfg := producer.DefaultConfig(kf.list(), *tf.accounts)
	acfg.BatchTimeout = time.Millisecond // a console's changes come one at a time
	accountsWriter, err := producer.NewWriter(acfg)
	if err != nil {
		return err
	}
	defer accountsWriter.Close()
	accounts, err := ingest.NewAccountsAPI(ingest.AccountsConfig{Keys: ring, PublishTimeout: *publishTimeout, Registry: r.registry}, cfg.Catalogue, accountsWriter, log, env.clock())
	if err != nil {
		return err
	}
	accounts.Register(mux)
	if strings.HasPrefix(*apiKeys, "@") {
		go reloadKeysOnHUP(ctx, *apiKeys, ring, log)
	}
	log.Info("ingest publishing usage and account changes", "topic", *tf.usage, "accounts_topic", *tf.accounts, "brokers", *kf.brokers, "api_keys", len(keys))
	if err := r.serveHTTP("ingest API", *httpAddr, mux, 15*time.Second); err != nil {
		return err
	}
	return r.wait()
}

// reloadKeysOnHUP re-reads the key file on each SIGHUP until ctx ends: a key is added or revoked
// without dropping a connection. A file that does not parse, or would leave no key, is refused
// and the keys held stay (logged as an error).
func reloadKeysOnHUP(ctx context.Context, spec string, ring *ingest.Keyring, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := reloadKeys(spec, ring); err != nil {
				log.Error("ingest: API keys not reloaded; the keys held before stay in force", "file", strings.TrimPrefix(spec, "@"), "err", err)
				continue
			}
			log.Info("ingest: API keys reloaded", "file", strings.TrimPrefix(spec, "@"), "keys", ring.Len())
		}
	}
}

func reloadKeys(spec string, ring *ingest.Keyring) error {
	keys, err := parseAPIKeys(spec)
	if err != nil {
		return err
	}
	return ring.Replace(keys)
}

// parseAPIKeys reads key entries (ingest.ParseAPIKey), comma separated or one per line in @FILE
// (# starts a comment).
func parseAPIKeys(spec string) ([]ingest.APIKey, error) {
	if spec == "" {
		return nil, nil
	}
	text, sep := spec, ","
	if strings.HasPrefix(spec, "@") {
		raw, err := os.ReadFile(spec[1:])
		if err != nil {
			return nil, fmt.Errorf("--api-keys: %w", err)
		}
		text, sep = string(raw), "\n"
	}
	var keys []ingest.APIKey
	for _, part := range strings.Split(text, sep) {
		part = strings.TrimSpace(part)
		if part == "" || strings.HasPrefix(part, "#") {
			continue
		}
		k, err := ingest.ParseAPIKey(part)
		if err != nil {
			return nil, fmt.Errorf("--api-keys: %w", err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}
