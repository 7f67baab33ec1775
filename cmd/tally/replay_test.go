package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

// Golden replays of whole scenarios (settle/testdata/scenarios/NAME.jsonl, run with the flags in
// NAME.args): the emitted stream must match NAME.golden.jsonl byte for byte, and the rejections
// NAME.rejected.jsonl. The amounts in them are checked by hand in settle/scenario_test.go.
func TestReplayGolden(t *testing.T) {
	files, err := filepath.Glob("../../settle/testdata/scenarios/*.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, in := range files {
		if strings.HasSuffix(in, ".golden.jsonl") || strings.HasSuffix(in, ".rejected.jsonl") {
			continue
		}
		n++
		base := strings.TrimSuffix(in, ".jsonl")
		t.Run(filepath.Base(base), func(t *testing.T) {
			args := []string{"replay", "--in", in}
			if raw, err := os.ReadFile(base + ".args"); err == nil {
				args = append(args, strings.Fields(string(raw))...)
			}
			var out, errOut bytes.Buffer
			env := &environment{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, lookupEnv: func(string) (string, bool) { return "", false }}
			if code := run(context.Background(), env, args); code != 0 {
				t.Fatalf("tally %v exited %d: %s", args, code, errOut.String())
			}
			// The summary line on stderr carries a duration; keep only the rejections.
			var rejected []string
			for _, l := range strings.SplitAfter(errOut.String(), "\n") {
				if strings.HasPrefix(l, "{") {
					rejected = append(rejected, l)
				}
			}
			compareGolden(t, base+".golden.jsonl", out.Bytes())
			compareGolden(t, base+".rejected.jsonl", []byte(strings.Join(rejected, "")))
		})
	}
	if n == 0 {
		t.Fatal("no scenarios found")
	}
}

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/tally -run TestReplayGolden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the output\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}

func TestReplayReadsStdinAndRejectsBadFlags(t *testing.T) {
	line := `{"specversion":"1.0","id":"u","type":"tally.usage.v1","time":"2026-10-05T00:00:00+08:00","data":{"account":"a","service":"image-tagging","calls":2000}}` + "\n"
	var out, errOut bytes.Buffer
	env := &environment{stdin: strings.NewReader(line), stdout: &out, stderr: &errOut, lookupEnv: func(string) (string, bool) { return "", false }}
	if code := run(context.Background(), env, []string{"replay", "--until", "2026-11-01T00:00:00+08:00"}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), `"amount":"5.00"`) {
		t.Fatalf("output %s", out.String())
	}
	for _, bad := range [][]string{{"replay", "--until", "yesterday"}, {"replay", "--billing-tz", "Mars/Olympus"}, {"replay", "--hold-ratio", "x"}, {"replay", "--in", "/nonexistent"}} {
		errOut.Reset()
		if code := run(context.Background(), env, bad); code == 0 {
			t.Errorf("%v: exit 0", bad)
		}
	}
}

func TestPriceCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	env := &environment{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, lookupEnv: func(string) (string, bool) { return "", false }}
	if code := run(context.Background(), env, []string{"price", "--service", "image-tagging", "--calls", "1000000", "--period", "2026-10", "--json"}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want := `{"service":"image-tagging","activated":true,"calls":1000000,"free_calls":10000,"prepaid_calls":0,"billable_calls":990000,"tier":2,"unit_price":"2.2","amount":"2178.00"}` + "\n"
	if out.String() != want {
		t.Fatalf("got %s want %s", out.String(), want)
	}
	if code := run(context.Background(), env, []string{"price", "--calls", "5"}); code == 0 {
		t.Fatal("price without --service succeeded")
	}
}
