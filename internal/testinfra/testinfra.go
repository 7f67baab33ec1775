// Package testinfra gives integration tests the real Kafka and ClickHouse that `make test`
// starts, each test in its own topics and database, removed afterwards.
//
// The services are found through TALLY_TEST_KAFKA_BROKERS, TALLY_TEST_CLICKHOUSE_ADDR (native)
// and TALLY_TEST_CLICKHOUSE_HTTP, defaulting to the local ones. A test that needs a service which
// does not answer fails and says to run `make up`; it is skipped only when
// TALLY_SKIP_INTEGRATION=1 asks for that explicitly.
package testinfra

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/kafkax"
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// KafkaBrokers are the brokers integration tests use.
func KafkaBrokers() []string {
	return kafkax.SplitBrokers(env("TALLY_TEST_KAFKA_BROKERS", "127.0.0.1:9092"))
}

// ClickHouseNativeAddr and ClickHouseHTTPAddr are the ClickHouse interfaces tests use.
func ClickHouseNativeAddr() string { return env("TALLY_TEST_CLICKHOUSE_ADDR", "127.0.0.1:9000") }
func ClickHouseHTTPAddr() string   { return env("TALLY_TEST_CLICKHOUSE_HTTP", "127.0.0.1:8123") }

func requireIntegration(t testing.TB) {
	t.Helper()
	if os.Getenv("TALLY_SKIP_INTEGRATION") == "1" {
		t.Skip("integration test skipped: TALLY_SKIP_INTEGRATION=1")
	}
}

// UniqueName returns prefix plus a random suffix, safe as a topic, group or database name.
func UniqueName(t testing.TB, prefix string) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	clean := regexp.MustCompile(`[^A-Za-z0-9_]`).ReplaceAllString(t.Name(), "_")
	if len(clean) > 40 {
		clean = clean[:40]
	}
	return strings.ToLower(fmt.Sprintf("%s_%s_%s", prefix, clean, hex.EncodeToString(b[:])))
}

// Kafka checks that the test broker answers and returns its addresses.
func Kafka(t testing.TB) []string {
	t.Helper()
	requireIntegration(t)
	brokers := KafkaBrokers()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := kafkax.Ping(ctx, kafkax.Plaintext(brokers)); err != nil {
		t.Fatalf("Kafka is not reachable (%v); run `make up` first, or set TALLY_TEST_KAFKA_BROKERS", err)
	}
	return brokers
}

// TopicConfigs are configs with records kept for ever unless they say otherwise. Tests run on
// virtual clocks months behind the real present, and Kafka's time retention counts from the
// record's time: under the broker's default (7 days) the records of such a test are deleted as
// soon as a segment rolls (segment.ms counts record time too) and the retention check runs,
// and the sink then rightly stops on the gap.
func TopicConfigs(configs map[string]string) map[string]string {
	out := map[string]string{"retention.ms": "-1"}
	maps.Copy(out, configs)
	return out
}

// Topic creates a fresh topic with the given partitions and deletes it when the test ends.
func Topic(t testing.TB, partitions int, configs map[string]string) (brokers []string, topic string) {
	t.Helper()
	brokers = Kafka(t)
	topic = UniqueName(t, "t")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafkax.CreateTopics(ctx, kafkax.Plaintext(brokers), kafkax.TopicSpec{Name: topic, Partitions: partitions, Configs: TopicConfigs(configs)}); err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := kafkax.DeleteTopics(ctx, kafkax.Plaintext(brokers), topic); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	return brokers, topic
}

// ClickHouse opens a connection over the given protocol to a fresh database, dropped when the
// test ends. The returned config names that database.
func ClickHouse(t testing.TB, protocol clickhouse.Protocol) (driver.Conn, chx.Config) {
	t.Helper()
	requireIntegration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := chx.Config{Addr: ClickHouseNativeAddr(), Protocol: protocol, Username: "default"}
	if protocol == clickhouse.HTTP {
		cfg.Addr = ClickHouseHTTPAddr()
	}
	admin, err := chx.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("ClickHouse is not reachable (%v); run `make up` first, or set TALLY_TEST_CLICKHOUSE_ADDR/HTTP", err)
	}
	db := UniqueName(t, "db")
	if err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatalf("create database %s: %v", db, err)
	}
	_ = admin.Close()
	cfg.Database = db
	conn, err := chx.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("open database %s: %v", db, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" SYNC"); err != nil {
			t.Logf("cleanup: drop database %s: %v", db, err)
		}
		_ = conn.Close()
	})
	return conn, cfg
}

// Produce writes messages to topic (account-keyed partitioning, all replicas acknowledging).
func Produce(t testing.TB, brokers []string, topic string, msgs []kafka.Message) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, BatchSize: 500}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := 0; i < len(msgs); i += 500 {
		batch := msgs[i:min(i+500, len(msgs))]
		// A leader moving (a cluster node killed) fails writes for longer than the writer's own
		// retries; the records that failed are sent again, as a gateway would. A record whose
		// acknowledgement was lost may land twice: consumers drop repeated event ids.
		for {
			err := w.WriteMessages(ctx, batch...)
			if err == nil {
				break
			}
			var failed kafka.WriteErrors
			if !errors.As(err, &failed) || ctx.Err() != nil {
				t.Fatal(err)
			}
			var again []kafka.Message
			for j, werr := range failed {
				if werr != nil {
					again = append(again, batch[j])
				}
			}
			batch = again
			time.Sleep(500 * time.Millisecond)
		}
	}
}

// EndOffsets returns, for each non-empty partition of topic, the offset after its last record.
func EndOffsets(t testing.TB, brokers []string, topic string, partitions int) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kafkax.EndOffsets(ctx, kafkax.Plaintext(brokers), topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(ends) != partitions {
		t.Fatalf("%s has %d partitions, want %d", topic, len(ends), partitions)
	}
	out := map[int32]int64{}
	for p, o := range ends {
		if o > 0 {
			out[int32(p)] = o
		}
	}
	return out
}

// WaitForOffsets polls query (returning partition, offset rows) until every partition of want
// has reached its offset, or fails the test after timeout.
func WaitForOffsets(t testing.TB, conn driver.Conn, want map[int32]int64, timeout time.Duration, query string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := map[int32]int64{}
		if rows, err := conn.Query(context.Background(), query, args...); err == nil {
			for rows.Next() {
				var p int32
				var o int64
				if rows.Scan(&p, &o) == nil {
					got[p] = o
				}
			}
			rows.Close()
		}
		done := true
		for p, o := range want {
			if got[p] < o {
				done = false
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("offsets %v never reached %v", got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// BuildTally builds the tally binary for tests that run (and kill) it as a process.
func BuildTally(t testing.TB, moduleRoot string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tally")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/tally")
	cmd.Dir = moduleRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build tally: %v\n%s", err, out)
	}
	return bin
}

// KafkaTool runs one of Kafka's own command-line tools (a main class, as the kafka-*.sh scripts
// run it) with the jars `make up` fetched, and returns its output; the test fails if it does.
// TALLY_TEST_KAFKA_LIBS names the jar directory when it is not where deploy/local/infra.sh puts it.
func KafkaTool(t testing.TB, class string, args ...string) string {
	t.Helper()
	libs := os.Getenv("TALLY_TEST_KAFKA_LIBS")
	if libs == "" {
		libs = defaultKafkaLibs(t)
	}
	if _, err := os.Stat(filepath.Join(libs, "kafka-tools-"+kafkaVersion(t)+".jar")); err != nil {
		t.Fatalf("Kafka's tools are not in %s (%v): run `make up` (it fetches them), or set TALLY_TEST_KAFKA_LIBS", libs, err)
	}
	cmd := exec.Command("java", append([]string{"-cp", filepath.Join(libs, "*"), class}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", class, args, err, out)
	}
	return string(out)
}

// KafkaDeleteRecords deletes the records of topic/partition before offset, as
// `kafka-delete-records.sh` does: the log start moves to offset, as retention would move it.
func KafkaDeleteRecords(t testing.TB, brokers []string, topic string, partition int, before int64) {
	t.Helper()
	spec := fmt.Sprintf(`{"version":1,"partitions":[{"topic":%q,"partition":%d,"offset":%d}]}`, topic, partition, before)
	f := filepath.Join(t.TempDir(), "delete-records.json")
	if err := os.WriteFile(f, []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	KafkaTool(t, "org.apache.kafka.tools.DeleteRecordsCommand", "--bootstrap-server", strings.Join(brokers, ","), "--offset-json-file", f)
}

// moduleRoot is the directory holding go.mod, above the test's working directory.
func moduleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

func kafkaVersion(t testing.TB) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(moduleRoot(t), "deploy", "local", "versions.env"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^KAFKA_VERSION=(\S+)`).FindSubmatch(raw)
	if m == nil {
		t.Fatal("deploy/local/versions.env has no KAFKA_VERSION")
	}
	return string(m[1])
}

// defaultKafkaLibs is where deploy/local/infra.sh keeps the Kafka jars.
func defaultKafkaLibs(t testing.TB) string {
	return filepath.Join(cacheDir(), "kafka-"+kafkaVersion(t), "libs")
}

// cacheDir is deploy/local/infra.sh's cache directory.
func cacheDir() string {
	cache := os.Getenv("TALLY_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "tally")
	}
	return cache
}
