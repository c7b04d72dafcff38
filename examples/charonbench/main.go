// Command charonbench measures a running charond process: the overhead it adds to a real
// ansible-playbook run, the latency of its SSE fan-out against the simplest fan-out one can
// write, its cost and ceiling with 10,000 subscribers, and its submission rate and dispatch
// order with 10,000 queued jobs.
//
// It builds nothing: it starts the charond binary given by -charond as a child process, on a
// free loopback port with its own temporary -data-dir and -playbook-dir, and stops it by its
// PID when done. Where a scenario needs a scripted ansible-playbook, charond runs this program
// itself as one (CHARONBENCH_RUNNER=1 in the environment, passed on with -env-allow).
//
// From the repository root:
//
//	go build -o /tmp/charond . && go run ./examples/charonbench -charond /tmp/charond overhead
//	go run ./examples/charonbench -charond /tmp/charond latency
//	go run ./examples/charonbench -charond /tmp/charond fanout -ceiling -cpuprofile
//	go run ./examples/charonbench -charond /tmp/charond queue
//
// Each subcommand prints a readable report on stdout and, last, one JSON line with the
// figures; with -json only the JSON line is printed. Progress goes to stderr. Run
// `go run ./examples/charonbench help SUBCOMMAND` for a subcommand's flags.
//
// Subcommands:
//
//	overhead  simple_job.yaml through charond vs the same playbook by ansible-playbook directly,
//	          alternating, -pairs times: end to end and time to first output line.
//	latency   runner write → SSE client read, p50/p99, at 1 and 100 subscribers (100 lines/s)
//	          and 1000 subscribers (20 lines/s), against a baseline fan-out (its own process) run at
//	          the same time under the same load.
//	fanout    10,000 subscribers of one job at 10 lines/s for 30 s: exactly-once delivery,
//	          charond CPU per 1,000 deliveries, peak RSS; -ceiling raises the rate step by
//	          step until delivery falls behind; -cpuprofile adds a CPU timeline.
//	queue     10,000 submissions (64 in flight) with random priorities behind one busy
//	          worker: accepted/s, then strict priority and FIFO dispatch order of the jobs
//	          that start within -drain-timeout (45 s; the rest must still wait their turn).
//
// The figures come from a shared machine: compare charond with the baseline or the direct run
// of the same invocation, not absolute numbers between runs. Every report says how busy the
// machine was.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Flags common to every subcommand. They may be given before the subcommand or after it.
var (
	// charondPath is the charond binary to measure; charonbench never builds it.
	charondPath string
	// jsonOnly suppresses the readable report: stdout gets the JSON line alone.
	jsonOnly bool
	// keepTemp leaves the temporary directories (charond's data, its stderr) for inspection.
	keepTemp bool
)

func commonFlags(fs *flag.FlagSet) {
	fs.StringVar(&charondPath, "charond", charondPath,
		"Path to a built charond binary (for example from `go build -o /tmp/charond .` in the repository root). Required.")
	fs.BoolVar(&jsonOnly, "json", jsonOnly,
		"Print only the final JSON line on stdout, not the readable report. Progress still goes to stderr.")
	fs.BoolVar(&keepTemp, "keep", keepTemp,
		"Keep the temporary directory (charond's data dir and its stderr log) instead of removing it, and print its path.")
}

// subcommand is one benchmark: its name, a line of help, and its entry point, which parses its
// own flags and returns the figures for the JSON line.
type subcommand struct {
	name, help string
	run        func(ctx context.Context, args []string, out io.Writer) (any, error)
}

var subcommands = []subcommand{
	{"overhead", "charond vs ansible-playbook directly on simple_job.yaml", runOverhead},
	{"latency", "line latency runner → SSE client, vs a baseline fan-out in a process of its own", runLatency},
	{"fanout", "10,000 subscribers: exactly-once, CPU per 1,000 deliveries, RSS; -ceiling", runFanout},
	{"queue", "10,000 submissions: accepted/s and strict priority/FIFO dispatch", runQueue},
}

func main() {
	if os.Getenv(runnerEnv) == "1" {
		// charond (or the latency baseline) started this program as its ansible-playbook.
		os.Exit(runnerMain(os.Args[1:]))
	}
	if vars := os.Getenv(baselineEnv); vars != "" {
		// The latency benchmark started this program as its baseline fan-out.
		os.Exit(baselineServerMain(vars))
	}
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "charonbench:", err)
		os.Exit(1)
	}
}

// run is main without os.Exit, so deferred cleanup (stopping charond, removing temp dirs) runs.
func run(args []string) error {
	fs := flag.NewFlagSet("charonbench", flag.ContinueOnError)
	commonFlags(fs)
	fs.Usage = func() { usage(fs.Output(), fs) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 || fs.Arg(0) == "help" {
		usage(os.Stdout, fs)
		if fs.NArg() > 1 {
			return helpFor(fs.Arg(1))
		}
		return nil
	}
	name := fs.Arg(0)
	for _, sc := range subcommands {
		if sc.name != name {
			continue
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		var out io.Writer = os.Stdout
		if jsonOnly {
			out = io.Discard
		}
		figures, err := sc.run(ctx, fs.Args()[1:], out)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		line, err := json.Marshal(figures)
		if err != nil {
			return fmt.Errorf("%s: encode figures: %w", name, err)
		}
		fmt.Println(string(line))
		return nil
	}
	return fmt.Errorf("unknown subcommand %q (run `charonbench help`)", name)
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "Usage: charonbench -charond PATH [-json] [-keep] SUBCOMMAND [flags]")
	fmt.Fprintln(w, "\nSubcommands:")
	for _, sc := range subcommands {
		fmt.Fprintf(w, "  %-9s %s\n", sc.name, sc.help)
	}
	fmt.Fprintln(w, "\n`charonbench help SUBCOMMAND` lists a subcommand's flags. Common flags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// helpFor prints a subcommand's flags by running it with -h.
func helpFor(name string) error {
	for _, sc := range subcommands {
		if sc.name == name {
			_, err := sc.run(context.Background(), []string{"-h"}, io.Discard)
			return err
		}
	}
	return fmt.Errorf("unknown subcommand %q", name)
}

// newFlagSet is a subcommand's flag set, with the common flags too.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("charonbench "+name, flag.ContinueOnError)
	fs.SetOutput(os.Stdout)
	commonFlags(fs)
	return fs
}

// parseSubcommand parses a subcommand's flags and checks what every subcommand needs.
func parseSubcommand(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if charondPath == "" {
		return errors.New("-charond is required: build charond with `go build -o /tmp/charond .` in the repository root and pass -charond /tmp/charond")
	}
	if _, err := os.Stat(charondPath); err != nil {
		return fmt.Errorf("-charond: %w", err)
	}
	return nil
}

// progress reports what the benchmark is doing, on stderr, so stdout stays the report.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "charonbench: "+format+"\n", args...)
}
