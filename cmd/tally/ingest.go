package main

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/ingest"
	"github.com/tally-billing/tally/ingest/producer"
	"github.com/tally-billing/tally/internal/kafkax"
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
	keyFlags := addKeyFlags(fs, "api-keys", "rate-limit", "gateway and console API")
	tlsFlags := addTLSFlags(fs, "", "ingest API")
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
	kc, err := kf.cluster()
	if err != nil {
		return err
	}
	pcfg := producer.DefaultConfig(kc.Brokers, *tf.usage)
	pcfg.SASL, pcfg.TLS = kc.Security.SASL, kc.Security.TLS
	pcfg.BatchTimeout, pcfg.Compression = *batchTimeout, *compression
	writer, err := producer.NewWriter(pcfg)
	if err != nil {
		return err
	}
	defer writer.Close()

	r, cfg, _, err := rf.start(ctx, env, kc)
	if err != nil {
		return err
	}
	log := r.log
	ring, err := keyFlags.ring(ctx, "ingest", log)
	if err != nil {
		return err
	}
	handler, err := ingest.NewHandler(ingest.HandlerConfig{MaxBodyBytes: *maxBody, MaxBatch: *maxBatch, Keys: ring, MaxEventAge: *maxAge, PublishTimeout: *publishTimeout,
		MaxInFlight: *maxInFlight, RetryAfter: *retryAfter, BodyTimeout: *bodyTimeout}, cfg.Catalogue, writer, log, ingest.NewMetrics(r.registry), env.clock())
	if err != nil {
		return err
	}
	r.admin.AddCheck("kafka writes", handler.Ready)
	if *replicaCheck > 0 {
		watch, err := ingest.NewReplicaWatch(ingest.ReplicaWatchConfig{Brokers: kc.Brokers, Security: kc.Security, Topic: *tf.usage, Interval: *replicaCheck}, log, r.registry)
		if err != nil {
			return err
		}
		r.admin.AddCheck("usage replicas in sync", watch.Ready)
		go watch.Run(ctx)
	}
	acfg := producer.DefaultConfig(kc.Brokers, *tf.accounts)
	acfg.SASL, acfg.TLS = kc.Security.SASL, kc.Security.TLS
	acfg.BatchTimeout = time.Millisecond // a console's changes come one at a time
	accountsWriter, err := producer.NewWriter(acfg)
	if err != nil {
		return err
	}
	defer accountsWriter.Close()
	accounts, err := ingest.NewAccountsAPI(ingest.AccountsConfig{Keys: ring, PublishTimeout: *publishTimeout, Registry: r.registry, CheckReusedIDs: true}, cfg.Catalogue, accountsWriter, log, env.clock())
	if err != nil {
		return err
	}
	// The accounts API tells a retry from an id reused for another change by what the accounts
	// topic holds; it answers 503 until it has read the topic.
	r.run(func(ctx context.Context) error {
		return kafkax.Follow(ctx, kafkax.FollowConfig{Brokers: kc.Brokers, Security: kc.Security, Topic: *tf.accounts, CaughtUp: accounts.CaughtUp, Log: log},
			func(m kafka.Message) { accounts.Observe(m.Value) })
	})
	log.Info("ingest publishing usage and account changes", "topic", *tf.usage, "accounts_topic", *tf.accounts, "brokers", *kf.brokers, "api_keys", ring.Len())
	certs, err := tlsFlags.load(ctx, "ingest API", log)
	if err != nil {
		return err
	}
	if err := r.serveHTTP("ingest API", *httpAddr, ingest.Routes(handler, accounts), 15*time.Second, certs); err != nil {
		return err
	}
	return r.wait()
}
