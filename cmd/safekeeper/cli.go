package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/peterbourgon/ff/v3"
)

// parseCommand parses a command's flags, and SAFEKEEPER_* variables for
// the flags not given, without printing anything on an error: the caller
// prints it first, with a pointer to --help (usageError), instead of the
// flag package's whole flag list with the error above it. --help writes
// intro and the flags to stdout and returns flag.ErrHelp.
func parseCommand(fs *flag.FlagSet, intro string, args []string, stdout io.Writer, opts ...ff.Option) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := ff.Parse(fs, args, append([]ff.Option{ff.WithEnvVarPrefix("SAFEKEEPER")}, opts...)...)
	if errors.Is(err, flag.ErrHelp) {
		io.WriteString(stdout, intro)
		printFlags(stdout, fs)
		return err
	}
	if err != nil {
		// ff wraps the flag package's error in "error parsing commandline
		// arguments: "; the flag package names flags with one dash.
		if inner := errors.Unwrap(err); inner != nil && strings.HasPrefix(err.Error(), "error parsing commandline arguments: ") {
			err = inner
		}
		return errors.New(singleDash.ReplaceAllString(err.Error(), "$1--$2"))
	}
	return nil
}

// singleDash finds a flag name written with one dash in the flag package's
// messages ("flag provided but not defined: -x", "for flag -x: ...").
var singleDash = regexp.MustCompile(`(^| )-([A-Za-z][A-Za-z0-9-]*)`)

// usageError prints a command's usage error in two lines: the error, then
// where its flags are described.
func usageError(w io.Writer, cmd string, err error) {
	fmt.Fprintf(w, "safekeeper %s: %v\nRun 'safekeeper %s --help' for its flags.\n", cmd, err, cmd)
}

// printFlags lists fs's flags as the README writes them: --name, the kind
// of value, the description and a non-empty default.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "\nflags (also SAFEKEEPER_<FLAG> in the environment, dashes as underscores):")
	fs.VisitAll(func(f *flag.Flag) {
		kind, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if kind != "" {
			line += " " + kind
		}
		fmt.Fprintln(w, line)
		fmt.Fprintf(w, "        %s", strings.ReplaceAll(usage, "\n", "\n        "))
		switch f.DefValue {
		case "", "false", "0", "0s":
		default:
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}
