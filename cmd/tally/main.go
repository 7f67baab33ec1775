// Command tally is the single binary of the Tally metering and billing pipeline; each role is a
// subcommand. This package only parses configuration, wires components and runs them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tally-billing/tally/internal/config"
)

// command is one subcommand: it parses its own flags from args and runs until done or ctx ends.
type command struct {
	summary string
	run     func(ctx context.Context, env *environment, args []string) error
}

// environment is what every subcommand gets from the process: streams, logger, env lookup.
type environment struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
	// now is the roles' clock; nil means the wall clock. `tally demo` runs them on a virtual one.
	now func() time.Time
}

func (e *environment) clock() func() time.Time {
	if e.now != nil {
		return e.now
	}
	return time.Now
}

func (e *environment) logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: level}))
}

// parse resolves a subcommand's flags: command line, then TALLY_* environment, then --config file.
// A secret in the clear on the command line is refused (exposedSecret).
func (e *environment) parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(e.stderr)
	return config.ParseRefusingSecrets(fs, args, e.lookupEnv, exposedSecret)
}

// exposedSecret reports a secret flag whose value holds the secret itself: passwords and client
// keys are fine only as @FILE, key lists only as @FILE or entries of hashes (NAME=sha256:HEX).
func exposedSecret(name, value string) bool {
	if value == "" || strings.HasPrefix(value, "@") {
		return false
	}
	switch name {
	case "kafka-sasl-password", "clickhouse-password", "api-key", "query-key":
		return true
	case "api-keys", "query-keys":
		for _, entry := range strings.Split(value, ",") {
			head, _, _ := strings.Cut(entry, ";")
			if _, secret, _ := strings.Cut(head, "="); !strings.HasPrefix(strings.TrimSpace(secret), "sha256:") {
				return true
			}
		}
	}
	return false
}

var commands = map[string]command{}

func register(name string, c command) { commands[name] = c }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	env := &environment{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, lookupEnv: os.LookupEnv}
	if spec, ok := os.LookupEnv("TALLY_VIRTUAL_CLOCK"); ok {
		now, err := parseVirtualClock(spec)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tally: TALLY_VIRTUAL_CLOCK: %v\n", err)
			os.Exit(2)
		}
		env.now = now
	}
	code := run(ctx, env, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, env *environment, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(env.stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(env.stderr, "tally: unknown command %q\n\n", args[0])
		usage(env.stderr)
		return 2
	}
	if err := c.run(ctx, env, args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		var ee exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		fmt.Fprintf(env.stderr, "tally %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// parseVirtualClock reads "virtual=RFC3339,real=UNIX_MS,speed=N": the clock reads virtual at the
// real instant, and runs speed times faster. For demos and tests that kill and restart roles: every
// process given the same spec shares one virtual time line.
func parseVirtualClock(spec string) (func() time.Time, error) {
	var v time.Time
	var r int64
	speed := 1.0
	for _, part := range strings.Split(spec, ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(part), "=")
		var err error
		switch k {
		case "virtual":
			v, err = time.Parse(time.RFC3339, val)
		case "real":
			r, err = strconv.ParseInt(val, 10, 64)
		case "speed":
			speed, err = strconv.ParseFloat(val, 64)
		default:
			err = fmt.Errorf("unknown key %q (want virtual, real, speed)", k)
		}
		if err != nil {
			return nil, err
		}
	}
	if v.IsZero() || r == 0 || speed <= 0 {
		return nil, errors.New(`want "virtual=RFC3339,real=UNIX_MS,speed=N"`)
	}
	real0 := time.UnixMilli(r)
	return func() time.Time { return v.Add(time.Duration(float64(time.Since(real0)) * speed)) }, nil
}

// exitError ends the process with a specific code after the command already reported why.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: tally <command> [flags]   (tally <command> -h for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-15s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nEvery flag can also be set by environment (TALLY_ + flag name in upper snake case) or --config FILE (JSON).")
}
