package kafkax_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/internal/tlsfiles"
)

// Against a broker that listens only for SASL over TLS (the plaintext listener is its own):
// each mechanism Tally offers logs in, and admin, writes, partition reads and a consumer group
// all work through it; a wrong password, no TLS, no SASL or a CA that did not sign the broker's
// certificate each get nothing.
func TestSASLOverTLSOnARealBroker(t *testing.T) {
	b := testinfra.StartSecureBroker(t)
	trusting, err := tlsfiles.Client{CAFile: b.CA.CertFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, mech := range []string{"plain", "scram-sha-256", "scram-sha-512"} {
		t.Run(mech, func(t *testing.T) {
			m, err := kafkax.SASL(mech, b.SASLUser, b.SASLPassword)
			if err != nil {
				t.Fatal(err)
			}
			c := kafkax.Cluster{Brokers: b.SecureBrokers(), Security: kafkax.Security{SASL: m, TLS: trusting}}
			if err := kafkax.Ping(ctx, c); err != nil {
				t.Fatalf("ping: %v", err)
			}
			topic := testinfra.UniqueName(t, "secure")
			if err := kafkax.CreateTopics(ctx, c, kafkax.TopicSpec{Name: topic, Partitions: 2}); err != nil {
				t.Fatalf("create topic: %v", err)
			}
			w := &kafka.Writer{Addr: kafka.TCP(c.Brokers...), Transport: c.Security.RoundTripper(), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
			defer w.Close()
			if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("a"), Value: []byte("1")}, kafka.Message{Key: []byte("b"), Value: []byte("2")}); err != nil {
				t.Fatalf("write: %v", err)
			}
			var read []string
			if err := kafkax.ReadAll(ctx, c, topic, func(m kafka.Message) error { read = append(read, string(m.Value)); return nil }); err != nil || len(read) != 2 {
				t.Fatalf("read back: %v %v", read, err)
			}
			ends, err := kafkax.EndOffsets(ctx, c, topic)
			if err != nil || ends[0]+ends[1] != 2 {
				t.Fatalf("end offsets: %v %v", ends, err)
			}
			var assigned atomic.Int32
			gctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				done <- kafkax.RunGroup(gctx, kafkax.GroupConfig{Brokers: c.Brokers, Security: c.Security, Topic: topic, Group: topic + "-group", SessionTimeout: 6 * time.Second},
					slog.New(slog.NewTextHandler(io.Discard, nil)), nil, func(ctx context.Context, _ *kafka.Generation, _ int) error {
						assigned.Add(1)
						<-ctx.Done()
						return nil
					})
			}()
			for deadline := time.Now().Add(60 * time.Second); assigned.Load() < 2; time.Sleep(100 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the consumer group was assigned %d of 2 partitions", assigned.Load())
				}
			}
			stop()
			<-done
		})
	}

	scram, _ := kafkax.SASL("scram-sha-512", b.SASLUser, b.SASLPassword)
	wrong, _ := kafkax.SASL("scram-sha-512", b.SASLUser, b.SASLPassword+"x")
	plainWrong, _ := kafkax.SASL("plain", b.SASLUser, "guess")
	stranger, err := tlsfiles.Client{CAFile: testinfra.NewCA(t, "stranger").CertFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	for name, sec := range map[string]kafkax.Security{
		"a wrong SCRAM password": {SASL: wrong, TLS: trusting},
		"a wrong PLAIN password": {SASL: plainWrong, TLS: trusting},
		"TLS without SASL":       {TLS: trusting},
		"SASL without TLS":       {SASL: scram},
		"a CA that did not sign": {SASL: scram, TLS: stranger},
	} {
		pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := kafkax.Ping(pctx, kafkax.Cluster{Brokers: b.SecureBrokers(), Security: sec})
		cancel()
		if err == nil {
			t.Errorf("%s: the broker answered", name)
		}
	}
	if _, err := kafkax.SASL("gssapi", "u", "p"); err == nil || !strings.Contains(err.Error(), "plain, scram-sha-256 or scram-sha-512") {
		t.Errorf("an unsupported mechanism: %v", err)
	}
}
