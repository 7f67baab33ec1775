// Package config resolves a command's settings from, in order of precedence, command-line flags,
// environment variables (TALLY_ + the flag name in upper snake case) and a config file, so that
// every role shares one convention (SPEC §7).
package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

// EnvPrefix starts the name of every environment variable Tally reads.
const EnvPrefix = "TALLY_"

// EnvName is the environment variable that sets the flag name: "kafka-brokers" → TALLY_KAFKA_BROKERS.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// Parse parses args into fs, then fills every flag not given on the command line from the
// environment (lookupEnv) and then from the JSON object in the file named by the flag "config"
// (when fs defines it and it is set). File keys are flag names; values are strings, numbers or
// booleans. Unknown keys in the file are errors, so a typo does not pass silently.
func Parse(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool)) error {
	return ParseRefusingSecrets(fs, args, lookupEnv, nil)
}

// ParseRefusingSecrets is Parse that first refuses every flag given on the command line whose
// value exposed reports as a secret in the clear: /proc/<pid>/cmdline shows a process's
// arguments to anyone on the machine, while its environment and files are its own.
func ParseRefusingSecrets(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool), exposed func(name, value string) bool) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	var refused []error
	fs.Visit(func(f *flag.Flag) {
		given[f.Name] = true
		if exposed != nil && exposed(f.Name, f.Value.String()) {
			refused = append(refused, fmt.Errorf("--%s on the command line is readable by anyone on this machine (/proc/<pid>/cmdline): give @FILE, or set %s", f.Name, EnvName(f.Name)))
		}
	})
	if err := errors.Join(refused...); err != nil {
		return err
	}

	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		if v, ok := lookupEnv(EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("environment %s=%q: %w", EnvName(f.Name), v, err))
				return
			}
			given[f.Name] = true
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}

	cf := fs.Lookup("config")
	if cf == nil || cf.Value.String() == "" {
		return nil
	}
	return applyFile(fs, cf.Value.String(), given)
}

func applyFile(fs *flag.FlagSet, path string, given map[string]bool) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	var values map[string]any
	if err := json.Unmarshal(raw, &values); err != nil {
		return fmt.Errorf("config file %s: not a JSON object: %w", path, err)
	}
	var errs []error
	for name, v := range values {
		if fs.Lookup(name) == nil {
			errs = append(errs, fmt.Errorf("config file %s: unknown setting %q", path, name))
			continue
		}
		if given[name] {
			continue
		}
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case bool, float64:
			s = fmt.Sprint(x)
		case json.Number:
			s = x.String()
		default:
			errs = append(errs, fmt.Errorf("config file %s: setting %q must be a string, number or boolean", path, name))
			continue
		}
		if err := fs.Set(name, s); err != nil {
			errs = append(errs, fmt.Errorf("config file %s: setting %q=%q: %w", path, name, s, err))
		}
	}
	return errors.Join(errs...)
}
