// Command streaming_demo is a client for charond: it submits Ansible jobs and follows their logs
// and events (status changes, tasks and host results) as charond streams them over Server-Sent
// Events.
//
// Build it with `go build -o streaming_demo main.go`; everything but the tests lives in this
// file so that command works. Run it with -h for the commands.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

const usage = `Usage: streaming_demo <command> [arguments]

Commands:
  submit [OPTIONS] FILE
                Submit the job in the YAML file FILE, then stream its logs to the end.
                OPTIONS override the file's launch options, as ansible-playbook spells them:
                --limit PATTERN, --tags A,B, --skip-tags A,B, --check, --diff, -v to -vvvv,
                --forks N, --start-at-task NAME.
  stream ID     Stream the logs of job ID, from its first line to its end.
  events ID     Stream the events of job ID: its status changes, each play and task as it
                starts, each host's result as it lands (✅ ok, 🔄 changed, ❌ failed,
                ⏭ skipped, 🔌 unreachable; loop items under their task), and the recap.
  list [--status S]
                List the jobs, newest first: ID, status, priority, name, and the place in
                the queue or how long the job ran. --status shows only the jobs in status S:
                queued, running, completed, failed, timed_out or cancelled.
  status ID     Show job ID: its status, times, place in the queue, launch options, command,
                each host's counts, the tasks that failed, and its artifacts.
  cancel ID     Cancel job ID: a queued job leaves the queue, a running one is stopped.
  relaunch ID [--failed]
                Run job ID again as a new job, then stream the new job's logs to the end.
                With --failed, only on the hosts that failed in job ID.
  watch [--since N]
                Show every job's status changes as they happen, until interrupted. With
                --since, first those after the change numbered N (the stream's event ID;
                watch says where it stopped; --since 0 replays every change charond keeps).
  demo          Submit a built-in long-running job and stream it, with a running commentary.
  help          Show this help (also -h).

Environment:
  CHARON_URL    charond's address (default http://localhost:8080).
  CHARON_TOKEN  When set, sent to charond as a bearer token.
  NO_COLOR      When set, no colour even on a terminal.

Exit status: 0 the job completed (status: also while it is queued or running; list, cancel:
charond did as asked); 1 it failed, timed out or was cancelled; 2 usage error, job refused or
not found, or charond unreachable; 130 interrupted (the job keeps running).
`

// Exit statuses; see usage.
const (
	exitCompleted   = 0
	exitJobFailed   = 1
	exitUsage       = 2
	exitInterrupted = 130 // the shell's convention for a program stopped by SIGINT
)

const (
	defaultURL = "http://localhost:8080"
	// requestTimeout bounds every request that is not a stream; charond answers them at once.
	requestTimeout = 30 * time.Second
	// streamIdleTimeout: charond sends a ping comment every 15 s, so three missed pings mean the
	// connection is dead even if TCP has not noticed (a sleeping laptop, a NAT that forgot us).
	streamIdleTimeout = 45 * time.Second
	// maxLineBytes caps one line of an event stream so a broken server cannot exhaust memory;
	// it is well above the largest log line charond sends.
	maxLineBytes = 8 << 20
	rule         = "────────────────────────────────────────────────────────────────────────────────"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run carries out the command in args and returns the exit status. It is main without the
// process: tests call it with their own writers and environment.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) < 2 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	name, rest := args[1], args[2:]
	switch name {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitCompleted
	}
	cmd, err := parseCommand(name, rest)
	if err != nil {
		// The arguments quoted in err are the user's own, but escaped all the same: a pasted
		// command line can hold anything.
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, escapeTerm(line))
		}
		fmt.Fprintf(stderr, "\n%s", usage)
		return exitUsage
	}
	c := newClient(getenv("CHARON_URL"), getenv("CHARON_TOKEN"), args[0],
		&printer{out: stdout, err: stderr, color: useColor(stdout, getenv)})
	return cmd(ctx, c)
}

// command is a command line whose arguments have been checked: what is left is to carry it
// out with a client, and return the exit status.
type command func(ctx context.Context, c *client) int

// jobStatuses are the statuses charond gives a job, for checking list --status before asking.
var jobStatuses = []string{"queued", "running", "completed", "failed", "timed_out", "cancelled"}

// parseCommand checks the arguments of the command name and returns the command. Its error is
// what to tell the user above the usage.
func parseCommand(name string, args []string) (command, error) {
	oneID := func() (string, error) {
		if len(args) != 1 || args[0] == "" {
			return "", fmt.Errorf("streaming_demo %s takes one job ID", name)
		}
		return args[0], nil
	}
	switch name {
	case "submit":
		opts, rest, err := parseLaunchFlags(args)
		if err != nil || len(rest) != 1 || rest[0] == "" {
			msg := "streaming_demo submit takes options, then one job file"
			if err != nil {
				msg = fmt.Sprintf("streaming_demo submit: %v\n\n%s", err, msg)
			}
			return nil, errors.New(msg)
		}
		return func(ctx context.Context, c *client) int { return c.submit(ctx, rest[0], opts) }, nil
	case "stream", "events":
		if len(args) != 1 || args[0] == "" {
			return nil, fmt.Errorf("streaming_demo %s takes one argument", name)
		}
		what := map[string]string{"stream": "logs", "events": "events"}[name]
		return func(ctx context.Context, c *client) int { return c.follow(ctx, name, what, args[0]) }, nil
	case "list":
		flags, rest, err := parseFlags(args, map[string]bool{"--status": true})
		switch status, set := flags["--status"]; {
		case err != nil:
			return nil, fmt.Errorf("streaming_demo list: %v\n\nstreaming_demo list takes no argument but --status S", err)
		case len(rest) != 0:
			return nil, errors.New("streaming_demo list takes no argument but --status S")
		case set && !slices.Contains(jobStatuses, status):
			return nil, fmt.Errorf("streaming_demo list: --status %q is not a job status; use one of %s",
				status, strings.Join(jobStatuses, ", "))
		default:
			return func(ctx context.Context, c *client) int { return c.list(ctx, status) }, nil
		}
	case "status", "cancel":
		id, err := oneID()
		if err != nil {
			return nil, err
		}
		if name == "cancel" {
			return func(ctx context.Context, c *client) int { return c.cancel(ctx, id) }, nil
		}
		return func(ctx context.Context, c *client) int { return c.status(ctx, id) }, nil
	case "relaunch":
		flags, rest, err := parseFlags(args, map[string]bool{"--failed": false})
		if err != nil || len(rest) != 1 || rest[0] == "" {
			msg := "streaming_demo relaunch takes one job ID, and --failed to run only on the hosts that failed"
			if err != nil {
				msg = fmt.Sprintf("streaming_demo relaunch: %v\n\n%s", err, msg)
			}
			return nil, errors.New(msg)
		}
		_, failed := flags["--failed"]
		return func(ctx context.Context, c *client) int { return c.relaunch(ctx, rest[0], failed) }, nil
	case "watch":
		flags, rest, err := parseFlags(args, map[string]bool{"--since": true})
		since, set := flags["--since"]
		switch {
		case err != nil:
			return nil, fmt.Errorf("streaming_demo watch: %v\n\nstreaming_demo watch takes no argument but --since N", err)
		case len(rest) != 0:
			return nil, errors.New("streaming_demo watch takes no argument but --since N")
		case set:
			if _, err := strconv.ParseUint(since, 10, 63); err != nil {
				return nil, fmt.Errorf("streaming_demo watch: --since %q is not an event ID (a whole number, 0 or more)", since)
			}
		}
		return func(ctx context.Context, c *client) int { return c.watchJobs(ctx, since) }, nil
	case "demo":
		if len(args) != 0 {
			return nil, errors.New("streaming_demo demo takes no argument")
		}
		return func(ctx context.Context, c *client) int { return c.demo(ctx) }, nil
	}
	return nil, fmt.Errorf("streaming_demo: unknown command %q", name)
}

// parseFlags separates the flags in args from the other arguments, wherever they stand.
// takesValue names the flags allowed and tells whether each takes a value, as --name VALUE or
// --name=VALUE; a flag without one is set to "". A flag given twice keeps its last value. "--"
// ends the flags, so that an argument after it may start with "-".
func parseFlags(args []string, takesValue map[string]bool) (flags map[string]string, rest []string, err error) {
	flags = map[string]string{}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			return flags, append(rest, args[i+1:]...), nil
		}
		if len(arg) < 2 || arg[0] != '-' {
			rest = append(rest, arg)
			continue
		}
		name, value, hasValue := strings.Cut(arg, "=")
		wantsValue, known := takesValue[name]
		switch {
		case !known:
			return nil, nil, fmt.Errorf("unknown option %q", name)
		case !wantsValue && hasValue:
			return nil, nil, fmt.Errorf("%s takes no value", name)
		case wantsValue && !hasValue:
			if i+1 == len(args) {
				return nil, nil, fmt.Errorf("%s needs a value", name)
			}
			i++
			value = args[i]
		}
		flags[name] = value
	}
	return flags, rest, nil
}

// client talks to one charond and prints what it learns.
type client struct {
	base  string // charond's URL, without a trailing slash
	token string
	prog  string // how the user ran us, for the command that resumes watching
	http  *http.Client
	out   *printer

	// Reconnection policy for dropped streams; tests shorten the delays. The server's retry
	// field, when it sends one, replaces retryBase.
	retryBase, retryMax time.Duration
	maxRetries          int           // consecutive failed attempts before giving up
	idleTimeout         time.Duration // see streamIdleTimeout
	pollInterval        time.Duration // how often demo asks whether its job has started
}

func newClient(base, token, prog string, out *printer) *client {
	if base == "" {
		base = defaultURL
	}
	return &client{
		base:  strings.TrimRight(base, "/"),
		token: token,
		prog:  prog,
		// No client-wide timeout: streams last as long as their job.
		http:      &http.Client{},
		out:       out,
		retryBase: time.Second,
		retryMax:  15 * time.Second,
		// 10 attempts, 1, 2, 4, 8 and then 15 s apart, take 105 s: long enough for charond to
		// restart, short enough that a user is not left waiting long on a dead one.
		maxRetries:   10,
		idleTimeout:  streamIdleTimeout,
		pollInterval: 500 * time.Millisecond,
	}
}

// job is the part of charond's job JSON the client uses. A null is read as the field's zero
// value: waiting_for and relaunch_of are "" when they name no job.
type job struct {
	ID            string          `json:"id"`
	Name          string          `json:"name"`
	Description   string          `json:"description"`
	Status        string          `json:"status"`
	Priority      int             `json:"priority"`
	ExitCode      *int            `json:"exit_code"`
	Message       string          `json:"message"`
	QueuePosition int             `json:"queue_position"` // while queued: 1 runs next
	CreatedAt     *time.Time      `json:"created_at"`
	StartedAt     *time.Time      `json:"started_at"`
	FinishedAt    *time.Time      `json:"finished_at"`
	Concurrency   string          `json:"concurrency"` // the key it shares with jobs it may not run beside; "" for none
	WaitingFor    string          `json:"waiting_for"` // the running job that holds its concurrency key
	RelaunchOf    string          `json:"relaunch_of"` // the job it runs again
	Command       []string        `json:"command"`     // what its run executes: the program, then its arguments
	Summary       *jobSummary     `json:"summary"`
	Artifacts     json.RawMessage `json:"artifacts"` // any JSON; "null" or empty for none
	Limit         string          `json:"limit"`
	Tags          []string        `json:"tags"`
	SkipTags      []string        `json:"skip_tags"`
	Check         bool            `json:"check"`
	Diff          bool            `json:"diff"`
	Verbosity     int             `json:"verbosity"`
	Forks         int             `json:"forks"`
	StartAtTask   string          `json:"start_at_task"`
}

// jobSummary is what charond gathered of a job's playbook: each host's counts, as the recap
// shows them, and the tasks that failed.
type jobSummary struct {
	Hosts       map[string]hostStats `json:"hosts"`
	FailedTasks []failedTask         `json:"failed_tasks"`
}

// failedTask is a task that failed on a host (and did not ignore it), or could not reach it.
type failedTask struct {
	Host    string `json:"host"`
	Play    string `json:"play"`
	Task    string `json:"task"`
	Message string `json:"message"`
}

// options are the job's launch options as ansible-playbook spells them, for the operator to
// see what will run.
func (j job) options() []string {
	var out []string
	if j.Limit != "" {
		out = append(out, "--limit "+j.Limit)
	}
	if len(j.Tags) > 0 {
		out = append(out, "--tags "+strings.Join(j.Tags, ","))
	}
	if len(j.SkipTags) > 0 {
		out = append(out, "--skip-tags "+strings.Join(j.SkipTags, ","))
	}
	if j.Check {
		out = append(out, "--check")
	}
	if j.Diff {
		out = append(out, "--diff")
	}
	if j.Verbosity > 0 {
		out = append(out, "-"+strings.Repeat("v", j.Verbosity))
	}
	if j.Forks > 0 {
		out = append(out, fmt.Sprintf("--forks %d", j.Forks))
	}
	if j.StartAtTask != "" {
		out = append(out, "--start-at-task "+j.StartAtTask)
	}
	return out
}

// submit sends the job in file and follows its logs to the end.
func (c *client) submit(ctx context.Context, file string, opts []launchOption) int {
	body, playbook, err := loadJobFile(file, opts...)
	if err != nil {
		c.out.fail("%v (nothing was sent)", err)
		return exitUsage
	}
	c.out.say("🚀 Submitting job from %s...", file)
	j, err := c.postJob(ctx, body)
	if err != nil {
		code := c.report(ctx, "", "", err)
		var refused *apiError
		if playbook != "" && errors.As(err, &refused) {
			c.out.note("   The job file's playbook path was sent as %s", playbook)
		}
		return code
	}
	return c.launched(ctx, "✅ Job submitted!", j)
}

// launched is what submit and relaunch do once charond has taken the job j: they say so, then
// follow its logs to the end.
func (c *client) launched(ctx context.Context, title string, j job) int {
	c.out.submitted(title, j)
	return c.follow(ctx, "stream", "logs", j.ID)
}

// follow is the stream and events commands: it watches job id's "logs" or "events" to the end.
func (c *client) follow(ctx context.Context, cmd, what, id string) int {
	c.out.say("📋 Streaming %s for job %s...", what, id)
	c.out.say("%s", rule)
	status, err := c.watch(ctx, what, id)
	if err != nil {
		return c.report(ctx, cmd, id, err)
	}
	return exitFor(status)
}

// demo submits demoJob, waits for it to start, streams its logs and sums up.
func (c *client) demo(ctx context.Context) int {
	c.out.say("%s", c.out.paint(ansiBold, "🏁 Charon Log Streaming Demo"))
	c.out.say("%s", strings.Repeat("=", 80))
	c.out.say("Charon URL: %s", c.base)
	c.out.say("")
	c.out.say("🚀 Submitting demo job...")
	j, err := c.postJob(ctx, []byte(demoJob))
	if err != nil {
		return c.report(ctx, "", "", err)
	}
	c.out.submitted("✅ Demo job submitted!", j)

	c.out.say("⏳ Waiting for job to start...")
	if err := c.waitForStart(ctx, j.ID); err != nil {
		return c.report(ctx, "stream", j.ID, err)
	}
	c.out.say("📋 Starting log stream for demo job...")
	c.out.say("%s", rule)
	if _, err := c.watch(ctx, "logs", j.ID); err != nil {
		return c.report(ctx, "stream", j.ID, err)
	}

	final, err := c.getJob(ctx, j.ID)
	if err != nil {
		return c.report(ctx, "stream", j.ID, err)
	}
	c.out.say("")
	icon, _, color := statusStyle(final.Status)
	summary := "Final status: " + final.Status
	if final.ExitCode != nil {
		summary += fmt.Sprintf(" (exit code %d)", *final.ExitCode)
	}
	c.out.say("%s", c.out.paint(color, icon+" "+summary))
	if final.StartedAt != nil && final.FinishedAt != nil {
		c.out.say("⏱️  Duration: %s", final.FinishedAt.Sub(*final.StartedAt).Round(100*time.Millisecond))
	}
	return exitFor(final.Status)
}

// demoJob is the demo's built-in job: fifteen items two seconds apart, each with the date, and a
// checkpoint every fifth item.
const demoJob = `name: "Demo Long Running Task"
description: "The streaming demo's built-in job: 15 items, two seconds apart"
playbook: |
  ---
  - name: Demo Long Running Playbook
    hosts: localhost
    gather_facts: false
    connection: local

    tasks:
      - name: Start demo job
        debug:
          msg: "🚀 Starting demo job..."

      - name: Process items
        debug:
          msg: "{{ [progress, '⚡ Checkpoint reached at item %d' % item] if item % 5 == 0 else progress }}"
        vars:
          progress: "📊 Processing item {{ item }}/15 ({{ now(utc=true).strftime('%a %b %e %H:%M:%S UTC %Y') }})"
        loop: "{{ range(1, 16) | list }}"
        loop_control:
          pause: 2

      - name: Finish demo job
        debug:
          msg: "✅ Demo job completed successfully!"
inventory:
  - "localhost"
priority: 5
timeout: 120
`

// exitFor maps a job's final status to the exit status.
func exitFor(status string) int {
	if status == "completed" {
		return exitCompleted
	}
	return exitJobFailed
}

// list is the list command: it asks for the jobs, those in status only when it is not "", and
// prints them a line each, newest first as charond sends them.
func (c *client) list(ctx context.Context, status string) int {
	path := "/api/v1/jobs"
	if status != "" {
		path += "?" + url.Values{"status": {status}}.Encode()
	}
	var answer struct {
		Jobs []job `json:"jobs"`
	}
	if err := c.call(ctx, http.MethodGet, path, "", nil, &answer); err != nil {
		return c.report(ctx, "", "", err)
	}
	c.out.jobList(answer.Jobs)
	return exitCompleted
}

// status is the status command: it prints job id as charond has it now. Its exit status is
// the job's (see exitFor) once it has ended, and 0 while it is queued or running.
func (c *client) status(ctx context.Context, id string) int {
	j, err := c.getJob(ctx, id)
	if err != nil {
		return c.report(ctx, "", id, err)
	}
	c.out.jobDetails(j)
	if j.Status == "queued" || j.Status == "running" {
		return exitCompleted
	}
	return exitFor(j.Status)
}

// cancel is the cancel command: charond takes a queued job out of the queue at once, and stops
// a running one's playbook, after which the job ends cancelled.
func (c *client) cancel(ctx context.Context, id string) int {
	c.out.say("🚫 Cancelling job %s...", id)
	var j job
	err := c.call(ctx, http.MethodPost, "/api/v1/jobs/"+url.PathEscape(id)+"/cancel", "", nil, &j)
	if err != nil {
		return c.report(ctx, "", id, err)
	}
	icon, label, color := statusStyle(j.Status)
	if j.Status == "cancelled" {
		c.out.say("%s", c.out.paint(color, icon+" Job cancelled"))
	} else {
		c.out.say("%s", c.out.paint(ansiGreen, "✅ Cancellation requested"))
	}
	c.out.say("   Job ID: %s", j.ID)
	c.out.say("   Name: %s", j.Name)
	c.out.say("   Status: %s", c.out.paint(color, icon+" "+label))
	if j.Message != "" {
		c.out.say("   Message: %s", j.Message)
	}
	if j.Status == "running" {
		c.out.say("   It ends as cancelled once its playbook has stopped; to see it end:")
		c.out.say("   %s events %s", c.prog, j.ID)
	}
	return exitCompleted
}

// relaunch is the relaunch command: charond runs job id again as a new job, on the hosts that
// failed in it if failed is true, else on all of its hosts; then, as submit does, the client
// follows the new job's logs to the end.
func (c *client) relaunch(ctx context.Context, id string, failed bool) int {
	hosts := "all"
	if failed {
		hosts = "failed"
	}
	body, _ := json.Marshal(map[string]string{"hosts": hosts}) // cannot fail
	if failed {
		c.out.say("🔁 Relaunching job %s on the hosts that failed...", id)
	} else {
		c.out.say("🔁 Relaunching job %s...", id)
	}
	var j job
	err := c.call(ctx, http.MethodPost, "/api/v1/jobs/"+url.PathEscape(id)+"/relaunch", "application/json", body, &j)
	if err != nil {
		var refused *apiError
		if errors.As(err, &refused) {
			err = fmt.Errorf("charond refused the relaunch: %w", err)
		}
		return c.report(ctx, "", id, err)
	}
	return c.launched(ctx, "✅ Job relaunched!", j)
}

// watchJobs is the watch command: it prints every job's status changes as charond streams them,
// until interrupted, reconnecting as the stream of one job does. since, when not "", is the ID
// of the change to start after; without it charond starts with the oldest change it keeps.
func (c *client) watchJobs(ctx context.Context, since string) int {
	if since == "" {
		// From now on: charond says the id of its last change, and the stream follows on
		// from it, so nothing that happens from here is missed.
		var info struct {
			LastEventID *int64 `json:"last_event_id"`
		}
		if err := c.call(ctx, "GET", "/api/v1/info", "", nil, &info); err != nil {
			return c.report(ctx, "", "", err)
		}
		if info.LastEventID != nil {
			since = strconv.FormatInt(*info.LastEventID, 10)
		}
	}
	var seen idFilter
	if since != "" {
		seen.max, _ = strconv.ParseInt(since, 10, 64) // parseCommand checked it, or charond said it
	}
	c.out.say("👀 Watching the jobs of %s...", c.base)
	c.out.say("%s", rule)
	connects := 0
	err := c.stream(ctx, "/api/v1/events/stream", since, func(ev sseEvent) bool {
		d := decodeData(ev.Data)
		switch {
		case ev.Type == "connected":
			connects++
			c.greet(connects, d, "🔄 Reconnected to the event stream")
		case seen.fresh(ev.ID): // else printed before a reconnection
			c.out.change(ev.Type, d)
		}
		return false // the stream has no end: only an interruption or an error stops it
	})
	if ctx.Err() == nil {
		return c.report(ctx, "", "", err)
	}
	c.out.note("")
	if seen.max > 0 {
		c.out.note("⏹️  Stopped watching. To go on from here:")
		c.out.note("   %s watch --since %d", c.prog, seen.max)
	} else {
		c.out.note("⏹️  Stopped watching.")
	}
	return exitInterrupted
}

// greet prints a stream's connected notice: the first one as charond sent it, each later one,
// the mark of a reconnection, as again says.
func (c *client) greet(connects int, d eventData, again string) {
	if connects == 1 {
		c.out.stamped(d.when(), ansiCyan, "🔗 Connected "+messageJSON(d.Message))
	} else {
		c.out.note("%s", again)
	}
}

// report prints err in words the user can act on and returns the exit status it calls for.
// cmd and id, when cmd is not "", name the command that resumes watching after an
// interruption; id alone is the job the command was about, for a 404.
func (c *client) report(ctx context.Context, cmd, id string, err error) int {
	var unreachable *unreachableError
	var refused *apiError
	switch {
	case ctx.Err() != nil:
		c.out.note("")
		if cmd == "" {
			c.out.note("⏹️  Interrupted.")
		} else {
			c.out.note("⏹️  Stopped watching job %s; it keeps running. To watch it again:", id)
			c.out.note("   %s %s %s", c.prog, cmd, id)
		}
		return exitInterrupted
	case errors.As(err, &unreachable):
		c.out.fail("cannot reach charond at %s: %v", c.base, unreachable.err)
		c.out.note("   Is charond running? Start it, or set CHARON_URL to its address.")
	case errors.As(err, &refused) && refused.status == http.StatusNotFound && id != "":
		c.out.fail("%v", err)
		c.out.note("   Check the job ID: charond knows no job %s.", id)
	default:
		c.out.fail("%v", err)
	}
	return exitUsage
}

// waitForStart polls job id until it leaves the queue, printing its place in line as it moves.
func (c *client) waitForStart(ctx context.Context, id string) error {
	lastPos := 0
	for {
		j, err := c.getJob(ctx, id)
		if err != nil || j.Status != "queued" {
			return err
		}
		if j.QueuePosition > 0 && j.QueuePosition != lastPos {
			c.out.say("   Position %d in the queue", j.QueuePosition)
			lastPos = j.QueuePosition
		}
		if err := sleep(ctx, c.pollInterval); err != nil {
			return err
		}
	}
}

// watch prints job id's "logs" or "events" stream to its end and returns the job's final status.
func (c *client) watch(ctx context.Context, what, id string) (string, error) {
	var seen idFilter
	var status string
	ended := false
	connects := 0
	path := "/api/v1/jobs/" + url.PathEscape(id) + "/" + what + "/stream"
	err := c.stream(ctx, path, "", func(ev sseEvent) bool {
		d := decodeData(ev.Data)
		switch {
		case ev.Type == "connected":
			connects++
			c.greet(connects, d, fmt.Sprintf("🔄 Reconnected to the %s stream of job %s", what, id))
		case ev.Type == "completed":
			status, ended = d.Status, true
			c.out.ending(d)
		case seen.fresh(ev.ID): // else printed before a reconnection
			c.out.event(ev.Type, d)
		}
		return ended
	})
	if errors.Is(err, errStreamGone) {
		// charond had nothing left to send: the job ended while we were reconnecting.
		err = nil
	}
	if err != nil {
		return "", err
	}
	if status == "" {
		// Either the stream ended with a 204 or its completed event carried no status.
		j, err := c.getJob(ctx, id)
		if err != nil {
			return "", err
		}
		status = j.Status
		if !ended {
			msg := "Job already ended"
			if j.Message != "" {
				msg += ": " + j.Message
			}
			d := eventData{Message: msg, Status: j.Status, ExitCode: j.ExitCode}
			if j.FinishedAt != nil {
				d.Timestamp = j.FinishedAt.Format(time.RFC3339Nano)
			}
			c.out.ending(d)
		}
	}
	c.out.say("")
	if what == "logs" {
		c.out.say("📋 Log stream ended")
	} else {
		c.out.say("📋 Event stream ended")
	}
	return status, nil
}

// idFilter drops the events a reconnection repeats: those whose own numeric id is not above the
// highest seen. Events without a numeric id always pass.
type idFilter struct{ max int64 }

func (f *idFilter) fresh(id string) bool {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return true
	}
	if n <= f.max {
		return false
	}
	f.max = n
	return true
}

// errStreamGone means charond answered a reconnection with 204 No Content: the job has ended and
// every event was already sent.
var errStreamGone = errors.New("stream has ended")

// errStalled cancels a stream connection on which nothing arrived for idleTimeout.
var errStalled = errors.New("no data from charond, not even a ping")

// stream reads the event stream at path, calling handle for each event until handle returns
// true. When the connection drops it reconnects with Last-Event-ID, backing off between
// attempts, so handle sees the stream continue where it broke off. from, when not "", is the
// Last-Event-ID of the first connection: the stream starts after that event.
func (c *client) stream(ctx context.Context, path, from string, handle func(sseEvent) bool) error {
	events := &sseReader{lastID: from} // its last event ID and retry carry over from one connection to the next
	connected := false
	failures := 0
	for {
		got, done, err := c.streamOnce(ctx, path, events, handle)
		connected = connected || got >= 0
		switch {
		case done:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case !retryable(err, connected):
			return err
		}
		if got > 0 {
			failures = 0
		}
		failures++
		if failures > c.maxRetries {
			return fmt.Errorf("gave up after %d attempts to reconnect: %w", c.maxRetries, err)
		}
		delay := backoff(c.retryBase, events.retry, c.retryMax, failures)
		c.out.note("⚠️  Lost the stream (%v); reconnecting in %v...", err, delay)
		if err := sleep(ctx, delay); err != nil {
			return err
		}
	}
}

// streamOnce makes one connection to the event stream at path and parses it with events. It
// returns how many events it passed to handle (-1 if it never got a 200), whether handle
// reported the end, and why the connection ended otherwise.
func (c *client) streamOnce(ctx context.Context, path string, events *sseReader,
	handle func(sseEvent) bool) (got int, done bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return -1, false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if events.lastID != "" {
		req.Header.Set("Last-Event-ID", events.lastID)
	}
	resp, err := c.send(req)
	if err != nil {
		return -1, false, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNoContent:
		return -1, false, errStreamGone
	case resp.StatusCode != http.StatusOK:
		return -1, false, readAPIError(resp)
	}

	// The watchdog is owned by this call: Stop below ends it, and it only cancels ctx.
	watchdog := time.AfterFunc(c.idleTimeout, func() { cancel(errStalled) })
	defer watchdog.Stop()
	body := readerFunc(func(p []byte) (int, error) {
		watchdog.Reset(c.idleTimeout)
		return resp.Body.Read(p)
	})
	events.reset(body)
	for {
		ev, err := events.next()
		switch {
		case err == io.EOF:
			return got, false, errors.New("charond closed the stream before the end")
		case err != nil && errors.Is(context.Cause(ctx), errStalled):
			return got, false, errStalled
		case err != nil:
			return got, false, err
		}
		got++
		if handle(ev) {
			return got, true, nil
		}
	}
}

// retryable tells whether reconnecting may get past err. Refusals (4xx) are final; so is an
// unreachable charond before the stream ever opened, since then it is most likely not running.
func retryable(err error, connected bool) bool {
	var api *apiError
	var unreachable *unreachableError
	switch {
	case errors.Is(err, errStreamGone):
		return false
	case errors.As(err, &api):
		return api.status >= 500
	case errors.As(err, &unreachable):
		return connected
	}
	return true
}

// backoff is the delay before reconnection attempt n (from 1): the server's retry if it sent one,
// else base, doubled per failed attempt up to max.
func backoff(base, serverRetry, max time.Duration, n int) time.Duration {
	if serverRetry > 0 {
		base = serverRetry
	}
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// postJob submits a job file's YAML and returns the queued job.
func (c *client) postJob(ctx context.Context, body []byte) (job, error) {
	var j job
	err := c.call(ctx, http.MethodPost, "/api/v1/jobs", "application/x-yaml", body, &j)
	if err != nil {
		var refused *apiError
		if errors.As(err, &refused) {
			err = fmt.Errorf("charond refused the job: %w", err)
		}
	}
	return j, err
}

func (c *client) getJob(ctx context.Context, id string) (job, error) {
	var j job
	err := c.call(ctx, http.MethodGet, "/api/v1/jobs/"+url.PathEscape(id), "", nil, &j)
	return j, err
}

// call makes a short request to charond (with a body of contentType if body is not nil) and
// decodes its JSON answer into out.
func (c *client) call(ctx context.Context, method, path, contentType string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return readAPIError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: reading charond's answer: %w", method, path, err)
	}
	return nil
}

// send performs req with the bearer token, turning a failure to reach charond into an
// *unreachableError.
func (c *client) send(req *http.Request) (*http.Response, error) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err
		}
		return nil, &unreachableError{err: err}
	}
	return resp, nil
}

// unreachableError is a request that never got an answer from charond.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return "cannot reach charond: " + e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

// apiError is an error answer from charond: its status and the reason from its JSON body.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.msg, e.status) }

// readAPIError builds an *apiError from resp, falling back to the body's text or the status
// text when the body is not charond's {"error": "..."}.
func readAPIError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var payload struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &payload) == nil && payload.Error != "" {
		msg = payload.Error
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &apiError{status: resp.StatusCode, msg: msg}
}

// loadJobFile reads the job file at path and checks that it is valid YAML, so a typo is reported
// with its line before anything is sent. A relative playbook path in it is made absolute against
// the file's directory, so the job means the same from any working directory; then the
// returned body is the file re-encoded and playbook is the path it now names. Otherwise the body
// is the file as it is.
func loadJobFile(path string, opts ...launchOption) (body []byte, playbook string, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, "", yamlError(path, err)
	}
	if len(doc.Content) == 0 {
		return nil, "", fmt.Errorf("%s: the job file is empty", path)
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, "", fmt.Errorf("%s:%d: a job is a mapping of fields (name: ..., playbook: ...)", path, top.Line)
	}
	var fields map[string]any // decoded only to catch a duplicate key
	if err := doc.Decode(&fields); err != nil {
		return nil, "", yamlError(path, err)
	}

	changed := len(opts) > 0
	for _, o := range opts {
		if err := setField(top, o.field, o.value); err != nil {
			return nil, "", fmt.Errorf("%s: %w", path, err)
		}
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		value := top.Content[i+1]
		if top.Content[i].Value != "playbook" || value.Kind != yaml.ScalarNode ||
			value.Value == "" || strings.Contains(value.Value, "\n") || filepath.IsAbs(value.Value) {
			continue
		}
		abs, err := filepath.Abs(filepath.Join(filepath.Dir(path), value.Value))
		if err != nil {
			return nil, "", err
		}
		value.Value = abs
		playbook, changed = abs, true
		break
	}
	if !changed {
		return data, "", nil
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	return buf.Bytes(), playbook, nil
}

var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// yamlError turns the YAML library's error into "FILE:LINE: reason" lines.
func yamlError(path string, err error) error {
	reasons := []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	var typeErr *yaml.TypeError
	if errors.As(err, &typeErr) {
		reasons = typeErr.Errors
	}
	lines := make([]string, len(reasons))
	for i, r := range reasons {
		if m := yamlLine.FindStringSubmatch(r); m != nil {
			lines[i] = path + ":" + m[1] + ": " + m[2]
		} else {
			lines[i] = path + ": " + r
		}
	}
	return errors.New(strings.Join(lines, "\n"))
}

// eventData is the JSON in the data of charond's events: log lines, job events, and the
// connected and completed events that open and close every stream.
type eventData struct {
	Message   string `json:"message"`
	Line      string `json:"line"`
	Timestamp string `json:"timestamp"`
	Stream    string `json:"stream"`
	Type      string `json:"type"`
	Status    string `json:"status"`
	ExitCode  *int   `json:"exit_code"`

	// The fields of the job events that follow the playbook (see printer.jobEvent).
	Playbook     string               `json:"playbook"`
	Play         string               `json:"play"`
	Task         string               `json:"task"`
	Handler      bool                 `json:"handler"`
	Host         string               `json:"host"`
	Changed      bool                 `json:"changed"`
	Duration     json.RawMessage      `json:"duration"` // seconds; raw, so that a non-number shows no time, not 0
	Msg          string               `json:"msg"`      // a failed module's own message
	Item         string               `json:"item"`     // a loop item's label
	IgnoreErrors bool                 `json:"ignore_errors"`
	NoLog        bool                 `json:"no_log"`
	Hosts        map[string]hostStats `json:"hosts"`

	// The fields of the status changes of the stream of every job (see printer.change).
	JobID   string      `json:"job_id"`
	Name    string      `json:"name"`
	Summary *jobSummary `json:"summary"` // once the job has ended
}

// hostStats is one host's line of the play recap.
type hostStats struct {
	OK          int `json:"ok"`
	Changed     int `json:"changed"`
	Unreachable int `json:"unreachable"`
	Failed      int `json:"failed"`
	Skipped     int `json:"skipped"`
	Rescued     int `json:"rescued"`
	Ignored     int `json:"ignored"`
}

// decodeData reads an event's data; data that is not a JSON object is taken as a log line. A
// field of an unexpected type is left empty rather than losing the rest of the event.
func decodeData(data string) eventData {
	var d eventData
	err := json.Unmarshal([]byte(data), &d)
	var typeErr *json.UnmarshalTypeError
	if err != nil && !(errors.As(err, &typeErr) && typeErr.Field != "") {
		d = eventData{Line: data, Message: data}
	}
	return d
}

// when is the event's time, or now if it has none.
func (d eventData) when() time.Time {
	if t, err := time.Parse(time.RFC3339Nano, d.Timestamp); err == nil {
		return t
	}
	return time.Now()
}

// messageJSON renders a message the way the README shows it: {"message": "..."}.
func messageJSON(msg string) string {
	q, _ := json.Marshal(msg)
	return `{"message": ` + string(q) + `}`
}

// ANSI colours.
const (
	ansiReset   = "\033[0m"
	ansiBold    = "\033[1m"
	ansiDim     = "\033[2m"
	ansiRed     = "\033[31m"
	ansiGreen   = "\033[32m"
	ansiYellow  = "\033[33m"
	ansiBlue    = "\033[34m"
	ansiMagenta = "\033[35m"
	ansiCyan    = "\033[36m"
)

// useColor tells whether to colour output written to w: only on a terminal, and never when
// NO_COLOR is set (https://no-color.org).
func useColor(w io.Writer, getenv func(string) string) bool {
	f, ok := w.(*os.File)
	if !ok || getenv("NO_COLOR") != "" {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// statusStyle is how a job status is shown: an icon, a label and a colour.
func statusStyle(status string) (icon, label, color string) {
	switch status {
	case "queued":
		return "⏳", "Queued", ansiYellow
	case "running":
		return "🏃", "Running", ansiBlue
	case "completed":
		return "✅", "Completed", ansiGreen
	case "failed":
		return "❌", "Failed", ansiRed
	case "timed_out":
		return "⏰", "Timed out", ansiRed
	case "cancelled":
		return "🚫", "Cancelled", ansiMagenta
	}
	return "❔", status, ""
}

// printer writes the client's output: the stream to out, errors and notices to err. One
// goroutine at a time uses it, in the order events arrive. Everything it writes but its own
// formats and colours is data (from charond, a job file or the command line) and is escaped for
// the terminal on the way out: paint escapes the text it is given, and say and note escape
// their arguments, so a caller cannot forget.
type printer struct {
	out, err io.Writer
	color    bool
	loc      *time.Location // where stream times are shown; nil for the local time zone

	// What jobEvent remembers of the playbook so far, so that a host's result that does not
	// belong to the task heading above it gets its task's heading again (as with the free
	// strategy, where hosts run different tasks at once).
	task  taskKey          // the task whose heading was written last; zero after a play or recap
	tasks map[taskKey]bool // the tasks started so far; true for handlers
}

// taskKey names a task within its play.
type taskKey struct{ play, task string }

// styled is text the printer composed itself: escaped data inside the client's own colour codes.
// say and note write it as it is, where any other string is data.
type styled string

// paint escapes s, which may hold data, and colours it when the output is coloured.
func (p *printer) paint(color, s string) styled {
	s = escapeTerm(s)
	if !p.color || color == "" {
		return styled(s)
	}
	return styled(color + s + ansiReset)
}

// say writes a line to the output stream. format is the client's own; args are escaped.
func (p *printer) say(format string, args ...any) {
	fmt.Fprintf(p.out, format+"\n", escapeArgs(args)...)
}

// note writes a notice to the error stream. format is the client's own; args are escaped.
func (p *printer) note(format string, args ...any) {
	fmt.Fprintf(p.err, format+"\n", escapeArgs(args)...)
}

// fail writes an error to the error stream. An error may run over several lines (a job file's
// YAML mistakes, a proxy's error page), so its line breaks are kept and each line is escaped on
// its own; no other control character survives.
func (p *printer) fail(format string, args ...any) {
	msg := strings.ReplaceAll("❌ "+fmt.Sprintf(format, args...), "\r\n", "\n")
	for _, line := range strings.Split(msg, "\n") {
		fmt.Fprintln(p.err, p.paint(ansiRed, line))
	}
}

// escapeArgs escapes the strings, errors and Stringers among args (so they are to be formatted
// with %s or %v), which are data; styled text and numbers pass as they are.
func escapeArgs(args []any) []any {
	escaped := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case styled:
			escaped[i] = v
		case string:
			escaped[i] = escapeTerm(v)
		case error:
			escaped[i] = escapeTerm(v.Error())
		case fmt.Stringer:
			escaped[i] = escapeTerm(v.String())
		default:
			escaped[i] = a
		}
	}
	return escaped
}

// escapeTerm makes text from outside safe to write to a terminal, showing what it hides instead
// of letting the terminal act on it. A terminal obeys the C0 controls, DEL and the C1 controls
// U+0080-U+009F (U+009B alone starts a control sequence, as ESC [ does), and the bidi controls
// U+202A-U+202E and U+2066-U+2069 make a line display differently than it reads. The scheme:
// \a \b \n \v \f \r for those C0 controls, \xHH for the other C0 controls (ESC is \x1b) and
// DEL, \xHH also for each byte that is not valid UTF-8, and \uHHHH for the C1 and bidi controls
// (so U+009B, \u009b, cannot be mistaken for a stray byte 0x9B, \x9b). A tab stays a tab.
// Everything else, a backslash included, is left as it is: ordinary text prints unchanged, and
// escaping twice changes nothing more (though a literal "\x1b" in the data reads like an escape).
func escapeTerm(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x20 && r != '\t' || r == 0x7f:
			b.WriteString(controlEscape(byte(r)))
		case r >= 0x80 && r <= 0x9f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// controlEscape is how escapeTerm shows the C0 control or DEL c: as C and Go write it where
// they have a letter for it, else as \xHH.
func controlEscape(c byte) string {
	if i := strings.IndexByte("\a\b\f\n\r\v", c); i >= 0 {
		return `\` + "abfnrv"[i:i+1]
	}
	return fmt.Sprintf(`\x%02x`, c)
}

// stamped writes one stream line behind its [HH:MM:SS] time.
func (p *printer) stamped(t time.Time, color, text string) {
	p.say("%s %s", p.paint(ansiDim, t.In(cmp.Or(p.loc, time.Local)).Format("[15:04:05]")), p.paint(color, text))
}

// stampPad lines a line that continues a stamped one up with the text after the stamp.
const stampPad = "           " // as wide as "[15:04:05] "

// continued writes a line that belongs to the stamped line above it, indented by indent within
// the text after the stamp.
func (p *printer) continued(color, indent, text string) {
	p.say("%s%s%s", stampPad, indent, p.paint(color, text))
}

func (p *printer) submitted(title string, j job) {
	p.say("%s", p.paint(ansiGreen, title))
	p.say("   Job ID: %s", j.ID)
	p.say("   Name: %s", j.Name)
	p.say("   Status: %s", j.Status)
	if j.RelaunchOf != "" {
		p.say("   Relaunch of: %s", j.RelaunchOf)
	}
	if opts := j.options(); len(opts) > 0 {
		p.say("   Options: %s", strings.Join(opts, " "))
	}
	p.say("")
}

// event writes an event from the middle of a stream: a log line, a job event, or any other
// event type as its type and message.
func (p *printer) event(typ string, d eventData) {
	switch {
	case typ == "log" && d.Stream == "stderr":
		p.stamped(d.when(), ansiYellow, "📝 ERR: "+d.Line)
	case typ == "log":
		p.stamped(d.when(), "", "📝 LOG: "+d.Line)
	case typ == "job_event":
		p.jobEvent(d)
	default:
		p.generic(typ, d)
	}
}

// generic writes an event the client has no layout for: its type and message.
func (p *printer) generic(typ string, d eventData) {
	p.stamped(d.when(), "", fmt.Sprintf("📌 %s: %s", typ, d.Message))
}

// Indents that nest a playbook's events under one another.
const (
	taskIndent   = "  "     // a task's heading, under its play
	resultIndent = "    "   // a host's result, under its task
	itemIndent   = "      " // a host's result for one loop item, above the host's result for the task
)

// jobEvent writes one of a job's events. A status change is one line, coloured by status. The
// events that follow the playbook nest: each play and task is a heading, each host's result a
// line under its task marked by outcome (loop items a step further in), and the recap closes
// it with a line per host. Any other type, and a result that names no host, is written as its
// type and message.
func (p *printer) jobEvent(d eventData) {
	t := d.when()
	switch d.Type {
	case "status_changed":
		icon, _, color := statusStyle(d.Status)
		p.stamped(t, color, fmt.Sprintf("%s %-10s %s", icon, d.Status, d.Message))
	case "playbook_on_start":
		text := d.Message
		if text == "" {
			text = "Playbook " + d.Playbook + " started"
		}
		p.stamped(t, "", "📖 "+text)
	case "playbook_on_play_start":
		p.task = taskKey{}
		text := "PLAY [" + d.Play + "]"
		if d.Play == "" && d.Message != "" {
			text = d.Message
		}
		p.stamped(t, ansiBold, "▶ "+text)
	case "playbook_on_task_start":
		key := taskKey{d.Play, d.Task}
		if p.tasks == nil {
			p.tasks = map[taskKey]bool{}
		}
		p.tasks[key] = d.Handler
		p.taskHeading(t, key, "")
	case "playbook_on_stats":
		p.recap(t, d.Hosts)
	case "warning":
		p.stamped(t, ansiYellow, "⚠️  "+d.Message)
	default:
		if !p.result(t, d) {
			p.generic(cmp.Or(d.Type, "job_event"), d)
		}
	}
}

// taskHeading writes the heading of task key, with a note after it when not empty.
func (p *printer) taskHeading(t time.Time, key taskKey, note string) {
	p.task = key
	text := "TASK [" + key.task + "]"
	if p.tasks[key] {
		text = "HANDLER [" + key.task + "]"
	}
	if note != "" {
		text += " " + note
	}
	p.stamped(t, ansiBold, taskIndent+text)
}

// result writes a host's result for a task or loop item, if d is one; it tells whether it was.
// The result goes under its task's heading, which is written again if another came between.
func (p *printer) result(t time.Time, d eventData) bool {
	outcome, isItem := strings.CutPrefix(d.Type, "runner_item_on_")
	if !isItem {
		var ok bool
		if outcome, ok = strings.CutPrefix(d.Type, "runner_on_"); !ok {
			return false
		}
	}
	mark, color := resultMark(outcome, d.Changed)
	if mark == "" || d.Host == "" {
		return false
	}
	if key := (taskKey{d.Play, d.Task}); key != p.task {
		note := "" // a task whose start was missed gets a plain heading
		if _, started := p.tasks[key]; started {
			note = "(continued)"
		}
		p.taskHeading(t, key, note)
	}
	indent := resultIndent
	if isItem {
		indent = itemIndent
	}
	lines := resultLines(d, mark, outcome, isItem)
	p.stamped(t, color, indent+lines[0])
	for _, line := range lines[1:] {
		p.continued(color, indent+"   ", line) // under the host, past the mark
	}
	return true
}

// resultLines is the text of a host's result: mark, host, the loop item, notes in brackets (an
// ignored failure; how long the task took on the host), and for a failure the module's message,
// whose further lines are returned after the first. A task with no_log shows neither message
// nor item, even if charond were to send them.
func resultLines(d eventData, mark, outcome string, isItem bool) []string {
	text := mark + " " + d.Host
	if isItem {
		switch {
		case d.NoLog:
			text += " item=(hidden by no_log)"
		case d.Item != "":
			text += " item=" + d.Item
		}
	}
	var notes []string
	if d.IgnoreErrors {
		notes = append(notes, "ignored")
	}
	// An item's duration counts from the start of its task, not of the item, so only the task's
	// own result shows one: the time the whole loop took on the host.
	if secs, err := strconv.ParseFloat(string(d.Duration), 64); err == nil && secs >= 0 && !isItem {
		notes = append(notes, formatSeconds(secs))
	}
	if len(notes) > 0 {
		text += " (" + strings.Join(notes, ", ") + ")"
	}
	if outcome != "failed" && outcome != "unreachable" {
		return []string{text}
	}
	msg := strings.TrimSpace(strings.ReplaceAll(d.Msg, "\r\n", "\n"))
	if d.NoLog {
		msg = "(output hidden by no_log)"
	}
	if msg == "" {
		return []string{text}
	}
	lines := strings.Split(msg, "\n")
	lines[0] = text + ": " + lines[0]
	return lines
}

// resultMark is how a host's result is marked and coloured, by the outcome in its event type
// (runner_on_OUTCOME, runner_item_on_OUTCOME); "" for an outcome without a mark.
func resultMark(outcome string, changed bool) (mark, color string) {
	switch outcome {
	case "ok":
		if changed {
			return "🔄", ansiYellow
		}
		return "✅", ansiGreen
	case "failed":
		return "❌", ansiRed
	case "skipped":
		return "⏭", ansiCyan
	case "unreachable":
		return "🔌", ansiRed
	}
	return "", ""
}

// formatSeconds writes a task's duration: to the hundredth of a second under a minute, to the
// second above.
func formatSeconds(s float64) string {
	if s < 60 {
		return strconv.FormatFloat(s, 'f', 2, 64) + "s"
	}
	return time.Duration(s * float64(time.Second)).Round(time.Second).String()
}

// recap writes the play recap: a heading, then recapLines.
func (p *printer) recap(t time.Time, hosts map[string]hostStats) {
	p.task = taskKey{}
	p.stamped(t, ansiBold, "📊 PLAY RECAP")
	for _, l := range recapLines(hosts) {
		p.continued(l.color, "  ", l.text)
	}
}

// recapLine is one host's line of a recap, and its colour.
type recapLine struct{ color, text string }

// recapLines are the lines of a recap, one per host in name order, coloured as Ansible colours
// them (red for a failed or unreachable host, yellow for a changed one).
func recapLines(hosts map[string]hostStats) []recapLine {
	names := make([]string, 0, len(hosts))
	width := 0
	for name := range hosts {
		names = append(names, name)
		width = max(width, len([]rune(name)))
	}
	slices.Sort(names)
	lines := make([]recapLine, len(names))
	for i, name := range names {
		s := hosts[name]
		color := ansiGreen
		switch {
		case s.Failed > 0 || s.Unreachable > 0:
			color = ansiRed
		case s.Changed > 0:
			color = ansiYellow
		}
		lines[i] = recapLine{color, fmt.Sprintf("%-*s  ok=%d changed=%d unreachable=%d failed=%d skipped=%d"+
			" rescued=%d ignored=%d", width, name, s.OK, s.Changed, s.Unreachable, s.Failed, s.Skipped, s.Rescued, s.Ignored)}
	}
	return lines
}

// ending writes the completed event that closes a stream, labelled by the job's final status.
func (p *printer) ending(d eventData) {
	status := d.Status
	if status == "" {
		status = "completed" // a server sending only {"message": ...} gives no status
	}
	icon, label, color := statusStyle(status)
	text := icon + " " + label + " " + messageJSON(d.Message)
	if d.ExitCode != nil && *d.ExitCode != 0 {
		text += fmt.Sprintf(" (exit code %d)", *d.ExitCode)
	}
	p.stamped(d.when(), color, text)
}

// clock is how a job's times are shown: to the second, with the date, as jobs outlive a day.
func (p *printer) clock(t time.Time) string {
	return t.In(cmp.Or(p.loc, time.Local)).Format("2006-01-02 15:04:05")
}

// maxNameWidth is the most of a job's name that list shows, so that a long name does not push
// the queue and times out of sight; status shows it all.
const maxNameWidth = 40

// jobList writes the list command's table: a heading, then a line per job with its ID, its
// status coloured as statusStyle says, its priority, its name, and where it stands (see
// progress). Columns are as wide as their widest entry once escaped, as fmt pads by runes.
func (p *printer) jobList(jobs []job) {
	if len(jobs) == 0 {
		p.say("No jobs.")
		return
	}
	idW, labelW, nameW := len("ID"), len("STATUS")-3, len("NAME") // an icon and a space lead each status
	for _, j := range jobs {
		_, label, _ := statusStyle(j.Status)
		idW = max(idW, utf8.RuneCountInString(escapeTerm(j.ID)))
		labelW = max(labelW, utf8.RuneCountInString(escapeTerm(label)))
		nameW = max(nameW, min(maxNameWidth, utf8.RuneCountInString(escapeTerm(j.Name))))
	}
	const priW = len("PRIORITY")
	p.say("%s", p.paint(ansiBold, fmt.Sprintf("%-*s  %-*s  %s  %-*s  %s",
		idW, "ID", labelW+3, "STATUS", "PRIORITY", nameW, "NAME", "PROGRESS")))
	for _, j := range jobs {
		icon, label, color := statusStyle(j.Status)
		name := truncate(escapeTerm(j.Name), maxNameWidth)
		status := p.paint(color, fmt.Sprintf("%s %-*s", icon, labelW, escapeTerm(label)))
		if progress := p.progress(j); progress != "" {
			p.say("%-*s  %s  %*d  %-*s  %s", idW, j.ID, status, priW, j.Priority, nameW, name, progress)
		} else {
			p.say("%-*s  %s  %*d  %s", idW, j.ID, status, priW, j.Priority, name)
		}
	}
}

// truncate shortens s to at most n runes, ending it with "…" when it was longer.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// progress is where job j stands, in a few words: its place in the queue and the job it
// waits for while queued, when it started while running, how long it ran once ended.
func (p *printer) progress(j job) string {
	var parts []string
	if j.Status == "queued" && j.QueuePosition > 0 {
		parts = append(parts, fmt.Sprintf("#%d in queue", j.QueuePosition))
	}
	if j.WaitingFor != "" {
		parts = append(parts, "waiting for "+j.WaitingFor)
	}
	switch {
	case len(parts) > 0:
	case j.StartedAt != nil && j.FinishedAt != nil:
		parts = append(parts, "took "+j.FinishedAt.Sub(*j.StartedAt).Round(100*time.Millisecond).String())
	case j.StartedAt != nil:
		parts = append(parts, "started "+p.clock(*j.StartedAt))
	case j.FinishedAt != nil:
		parts = append(parts, "ended "+p.clock(*j.FinishedAt)+", never started")
	}
	return strings.Join(parts, ", ")
}

// jobDetails writes the status command's account of job j: a line for each thing charond knows
// of it, leaving out what does not apply (a queue position once it has started, a command
// before it has), then each host's counts, the failed tasks and the artifacts.
func (p *printer) jobDetails(j job) {
	icon, label, color := statusStyle(j.Status)
	p.say("%s", p.paint(ansiBold, cmp.Or(j.Name, "(unnamed job)")))
	p.say("   Job ID: %s", j.ID)
	status := label
	if j.ExitCode != nil {
		status += fmt.Sprintf(" (exit code %d)", *j.ExitCode)
	}
	p.say("   Status: %s", p.paint(color, icon+" "+status))
	if j.Message != "" {
		p.say("   Message: %s", j.Message)
	}
	if j.Description != "" {
		p.say("   Description: %s", j.Description)
	}
	p.say("   Priority: %d", j.Priority)
	p.jobTimes(j)
	if j.Status == "queued" && j.QueuePosition > 0 {
		p.say("   Queue position: %d", j.QueuePosition)
	}
	if j.WaitingFor != "" {
		p.say("   Waiting for: %s (it holds the concurrency key)", j.WaitingFor)
	}
	if j.Concurrency != "" {
		p.say("   Concurrency: %s", j.Concurrency)
	}
	if j.RelaunchOf != "" {
		p.say("   Relaunch of: %s", j.RelaunchOf)
	}
	if opts := j.options(); len(opts) > 0 {
		p.say("   Options: %s", strings.Join(opts, " "))
	}
	if len(j.Command) > 0 {
		p.say("   Command: %s", shellJoin(j.Command))
	}
	if j.Summary != nil {
		p.summary(*j.Summary)
	}
	p.artifacts(j.Artifacts)
}

// jobTimes writes when job j was created, started and finished, as far as it has got, and how
// long it ran.
func (p *printer) jobTimes(j job) {
	if j.CreatedAt != nil {
		p.say("   Created: %s", p.clock(*j.CreatedAt))
	}
	if j.StartedAt != nil {
		p.say("   Started: %s", p.clock(*j.StartedAt))
	}
	switch {
	case j.FinishedAt != nil && j.StartedAt != nil:
		p.say("   Finished: %s (took %s)", p.clock(*j.FinishedAt), j.FinishedAt.Sub(*j.StartedAt).Round(100*time.Millisecond))
	case j.FinishedAt != nil:
		p.say("   Finished: %s", p.clock(*j.FinishedAt))
	}
}

// summary writes the hosts' counts of a job, as the recap shows them, and the tasks that failed,
// each with the module's message (its further lines under the first).
func (p *printer) summary(s jobSummary) {
	if len(s.Hosts) > 0 {
		p.say("   Hosts:")
		for _, l := range recapLines(s.Hosts) {
			p.say("     %s", p.paint(l.color, l.text))
		}
	}
	if len(s.FailedTasks) > 0 {
		p.say("   Failed tasks:")
	}
	for _, f := range s.FailedTasks {
		text := "❌ " + f.Host + ": TASK [" + f.Task + "]"
		if f.Play != "" {
			text += " in PLAY [" + f.Play + "]"
		}
		msg := strings.TrimSpace(strings.ReplaceAll(f.Message, "\r\n", "\n"))
		lines := strings.Split(msg, "\n")
		if msg != "" {
			text += ": " + lines[0]
		}
		p.say("     %s", p.paint(ansiRed, text))
		for _, line := range lines[1:] {
			p.say("        %s", p.paint(ansiRed, line)) // under the host, past the mark
		}
	}
}

// artifacts writes a job's artifacts as indented JSON: on the line of its label when it is short,
// under it otherwise. JSON keeps its escapes (a \u001b stays six characters); what it may hold
// raw, a bidi control or a byte that is not UTF-8, is escaped as any data is.
func (p *printer) artifacts(raw json.RawMessage) {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, raw, "", "  "); err != nil {
		pretty.Reset()
		pretty.Write(raw) // shown as it came: escaped, it can do no harm
	}
	lines := strings.Split(strings.TrimSpace(pretty.String()), "\n")
	if len(lines) == 1 {
		p.say("   Artifacts: %s", lines[0])
		return
	}
	p.say("   Artifacts:")
	for _, line := range lines {
		p.say("     %s", line)
	}
}

// shellJoin writes a command line as a shell would read it back: a word that holds anything but
// letters, digits and a few safe signs is put in single quotes.
func shellJoin(words []string) string {
	quoted := make([]string, len(words))
	for i, w := range words {
		if w != "" && strings.Trim(w, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
			quoted[i] = w
		} else {
			quoted[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
	}
	return strings.Join(quoted, " ")
}

// change writes one event of the watch command's stream. A job's status change is one line
// coloured by its status: the status, the job's name and short ID, charond's message and, once
// the job has ended, how its hosts fared. Any other event is written as its type and message.
func (p *printer) change(typ string, d eventData) {
	if typ != "job_event" || d.Status == "" {
		p.generic(cmp.Or(d.Type, typ), d)
		return
	}
	icon, label, color := statusStyle(d.Status)
	text := fmt.Sprintf("%s %-9s %s (%s)", icon, label, cmp.Or(d.Name, "(unnamed job)"), shortID(d.JobID))
	if d.Message != "" {
		text += " " + d.Message
	}
	final := d.Status != "queued" && d.Status != "running"
	if final && d.Summary != nil && len(d.Summary.Hosts) > 0 {
		text += " — " + hostOutcomes(d.Summary.Hosts)
	}
	p.stamped(d.when(), color, text)
}

// shortID is the first part of a job ID, as charond makes them (8-4-4-4-12 hex digits): enough
// to tell the jobs of a watch apart.
func shortID(id string) string {
	r := []rune(cmp.Or(id, "?"))
	return string(r[:min(len(r), 8)])
}

// hostOutcomes counts the hosts by how they fared, the worst outcome of each: "3 hosts: 2 ok,
// 1 failed". A host is failed if a task failed on it, unreachable if it could not be reached,
// changed if a task changed it, else ok.
func hostOutcomes(hosts map[string]hostStats) string {
	var ok, changed, failed, unreachable int
	for _, s := range hosts {
		switch {
		case s.Failed > 0:
			failed++
		case s.Unreachable > 0:
			unreachable++
		case s.Changed > 0:
			changed++
		default:
			ok++
		}
	}
	text := fmt.Sprintf("%d hosts:", len(hosts))
	if len(hosts) == 1 {
		text = "1 host:"
	}
	var parts []string
	for _, n := range []struct {
		count int
		what  string
	}{{ok, "ok"}, {changed, "changed"}, {failed, "failed"}, {unreachable, "unreachable"}} {
		if n.count > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n.count, n.what))
		}
	}
	return text + " " + strings.Join(parts, ", ")
}

// sseEvent is one event of a text/event-stream.
type sseEvent struct {
	Type string // the event field, "message" when the event has none
	Data string // the data fields joined with "\n"
	ID   string // the event's own id field, "" when it has none
}

// sseReader parses a text/event-stream as the WHATWG HTML standard says (section 9.2.6): lines
// end in CR, LF or CRLF; a line starting with ":" is a comment; a blank line dispatches the
// event; an event without data fields is not dispatched (but its id and retry still count).
type sseReader struct {
	r       *bufio.Reader
	lastID  string        // the last event ID, sent back as Last-Event-ID on reconnection
	retry   time.Duration // the last retry field; 0 if none came
	line    []byte        // the line being read, reused
	afterCR bool          // the last line ended in CR, so an LF right after belongs to it
	started bool          // past the first line, where a byte order mark may stand
}

// reset makes p read a new connection's stream, keeping the last event ID and retry.
func (p *sseReader) reset(r io.Reader) {
	*p = sseReader{r: bufio.NewReader(r), lastID: p.lastID, retry: p.retry, line: p.line[:0]}
}

// next returns the next dispatched event. At the end of the input it returns io.EOF and drops
// an event that was not finished by a blank line, as the standard says.
func (p *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	var data strings.Builder
	for {
		line, err := p.readLine()
		if err != nil {
			return sseEvent{}, err
		}
		if !p.started {
			p.started = true
			line = bytes.TrimPrefix(line, []byte("\uFEFF"))
		}
		if len(line) == 0 {
			if data.Len() == 0 {
				ev = sseEvent{}
				continue
			}
			ev.Data = strings.TrimSuffix(data.String(), "\n")
			if ev.Type == "" {
				ev.Type = "message"
			}
			return ev, nil
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "": // a comment
		case "event":
			ev.Type = string(value)
		case "data":
			data.Write(value)
			data.WriteByte('\n')
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				ev.ID = string(value)
				p.lastID = ev.ID
			}
		case "retry":
			if ms, err := strconv.ParseUint(string(value), 10, 32); err == nil {
				p.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
}

// readLine returns the next line without its end. The slice is valid until the next call.
func (p *sseReader) readLine() ([]byte, error) {
	p.line = p.line[:0]
	for {
		b, err := p.r.ReadByte()
		if err != nil {
			return nil, err
		}
		if p.afterCR {
			p.afterCR = false
			if b == '\n' {
				continue
			}
		}
		switch b {
		case '\r':
			p.afterCR = true
			return p.line, nil
		case '\n':
			return p.line, nil
		}
		if len(p.line) >= maxLineBytes {
			return nil, fmt.Errorf("event stream line longer than %d bytes", maxLineBytes)
		}
		p.line = append(p.line, b)
	}
}

// launchOption is a job field that a submit flag sets, over the job file's own.
type launchOption struct {
	field string
	value any
}

// parseLaunchFlags reads submit's flags before the job file: the launch options, spelled as
// ansible-playbook spells them. It returns the options and the arguments left.
func parseLaunchFlags(args []string) ([]launchOption, []string, error) {
	var opts []launchOption
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		name, value, hasValue := strings.Cut(args[0], "=")
		args = args[1:]
		takeValue := func() (string, error) {
			if hasValue {
				return value, nil
			}
			if len(args) == 0 {
				return "", fmt.Errorf("%s needs a value", name)
			}
			v := args[0]
			args = args[1:]
			return v, nil
		}
		list := func(v string) []string { return strings.Split(v, ",") }
		switch {
		case name == "--check" || name == "--diff":
			opts = append(opts, launchOption{strings.TrimPrefix(name, "--"), true})
		case strings.Trim(name, "v") == "-" && len(name) <= 5 && len(name) >= 2:
			opts = append(opts, launchOption{"verbosity", len(name) - 1})
		case name == "--limit" || name == "--start-at-task":
			v, err := takeValue()
			if err != nil {
				return nil, nil, err
			}
			opts = append(opts, launchOption{strings.ReplaceAll(strings.TrimPrefix(name, "--"), "-", "_"), v})
		case name == "--tags" || name == "--skip-tags":
			v, err := takeValue()
			if err != nil {
				return nil, nil, err
			}
			opts = append(opts, launchOption{strings.ReplaceAll(strings.TrimPrefix(name, "--"), "-", "_"), list(v)})
		case name == "--forks":
			v, err := takeValue()
			if err != nil {
				return nil, nil, err
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, nil, fmt.Errorf("--forks %q is not a whole number", v)
			}
			opts = append(opts, launchOption{"forks", n})
		default:
			return nil, nil, fmt.Errorf("unknown option %q", name)
		}
	}
	return opts, args, nil
}

// setField sets a top-level field of a job document to value, replacing the file's own.
func setField(top *yaml.Node, field string, value any) error {
	var v yaml.Node
	if err := v.Encode(value); err != nil {
		return err
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == field {
			top.Content[i+1] = &v
			return nil
		}
	}
	top.Content = append(top.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: field}, &v)
	return nil
}
