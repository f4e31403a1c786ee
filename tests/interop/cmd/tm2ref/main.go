// Command tm2ref runs pieces of the Go reference implementation of the TM2
// p2p layer (github.com/gnolang/gno/tm2/pkg/p2p) so the C tests in
// tests/interop can check tm2p2p against it.
//
// Every mode is a subcommand. Machine-readable results go to stdout, one
// space-separated record per line with an upper-case tag first (LISTEN,
// LOCAL, REMOTE, KEY, MCONN, STATS, DONE, ERROR); diagnostics go to stderr.
// Exit status: 0 on success, 1 on a runtime error, 2 on a usage error, 3 when
// the watchdog fires.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"time"
)

// command is one subcommand; new modes register themselves in commands.
type command struct {
	summary string
	run     func(args []string) error
}

var commands = map[string]command{
	"keyinfo":     {"print the public key and ID of a seed or public key", runKeyInfo},
	"node-key":    {"load or generate a node_key.json with the reference loader", runNodeKey},
	"sc-echo":     {"secret connection over TCP, echoing every byte back", runSCEcho},
	"mconn-echo":  {"MConnection over a secret connection, echoing every message back", runMConnEcho},
	"mconn-bench": {"MConnection throughput: send or count --count messages of --size bytes", runMConnBench},
	"sc-bench":    {"secret connection throughput: write or count --count writes of --size bytes", runSCBench},
	"node":        {"the reference switch with discovery and a 0x70 echo reactor, reporting peers", runNode},
	"config":      {"write the reference's default config.toml and print its [p2p] values", runConfig},
	"addrbook":    {"load, change and save an address book with the reference's store", runAddrBook},
	"peer-hub":    {"the reference switch as a benchmark hub: accepts peers, broadcasts on request", runPeerHub},
}

// errUsage marks errors caused by bad arguments (exit status 2).
var errUsage = errors.New("usage")

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: tm2ref <command> [flags]")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "run 'tm2ref <command> -h' for the flags of a command")
}

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "-h" || name == "--help" || name == "help" {
		usage(os.Stdout)
		return
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "tm2ref: unknown command %q\n", name)
		usage(os.Stderr)
		os.Exit(2)
	}
	if err := cmd.run(os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "tm2ref %s: %v\n", name, err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// newFlagSet returns a flag set whose parse errors become usage errors.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("tm2ref "+name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	return nil
}

// startWatchdog ends the process if a mode runs longer than d, so a test
// whose C side misbehaves never leaves a stuck child behind.
func startWatchdog(d time.Duration) {
	if d <= 0 {
		return
	}
	time.AfterFunc(d, func() {
		fmt.Fprintf(os.Stderr, "tm2ref: watchdog: still running after %v, giving up\n", d)
		os.Exit(3)
	})
}

// record prints one result line on stdout. Stdout is unbuffered, so the line
// is visible to a reader at once.
func record(tag string, fields ...any) {
	fmt.Fprintln(os.Stdout, append([]any{tag}, fields...)...)
}
