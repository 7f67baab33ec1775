package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newFS() (*flag.FlagSet, *string, *int, *string) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	brokers := fs.String("kafka-brokers", "127.0.0.1:9092", "")
	n := fs.Int("batch-size", 10, "")
	fs.String("config", "", "")
	tz := fs.String("billing-tz", "Asia/Shanghai", "")
	return fs, brokers, n, tz
}

func TestEnvName(t *testing.T) {
	if got := EnvName("kafka-brokers"); got != "TALLY_KAFKA_BROKERS" {
		t.Fatalf("EnvName = %q", got)
	}
}

func TestPrecedenceFlagThenEnvThenFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.json")
	if err := os.WriteFile(file, []byte(`{"kafka-brokers":"file:1","batch-size":77,"billing-tz":"UTC"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TALLY_BATCH_SIZE": "55", "TALLY_CONFIG": file}
	fs, brokers, n, tz := newFS()
	err := Parse(fs, []string{"--kafka-brokers", "flag:1"}, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if *brokers != "flag:1" || *n != 55 || *tz != "UTC" {
		t.Fatalf("got brokers=%q n=%d tz=%q; want flag:1, 55 (env), UTC (file)", *brokers, *n, *tz)
	}
}

func TestFileErrorsNameTheSetting(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(file, []byte(`{"batch-sise":1,"batch-size":"x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	fs, _, _, _ := newFS()
	err := Parse(fs, []string{"--config", file}, func(string) (string, bool) { return "", false })
	if err == nil || !strings.Contains(err.Error(), `unknown setting "batch-sise"`) || !strings.Contains(err.Error(), `"batch-size"`) {
		t.Fatalf("err = %v; want both bad settings named", err)
	}
}

func TestBadEnvValueIsAnError(t *testing.T) {
	fs, _, _, _ := newFS()
	err := Parse(fs, nil, func(k string) (string, bool) { return "nope", k == "TALLY_BATCH_SIZE" })
	if err == nil || !strings.Contains(err.Error(), "TALLY_BATCH_SIZE") {
		t.Fatalf("err = %v", err)
	}
}
