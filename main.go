// Command charond runs Ansible playbook jobs submitted over HTTP, by priority, and streams
// every job's output and status changes to any number of clients over Server-Sent Events.
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
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is everything the flags set.
type config struct {
	Addr              string
	Workers           int
	AnsiblePlaybook   string
	PlaybookDir       string
	DataDir           string
	DefaultTimeout    time.Duration
	MaxTimeout        time.Duration
	KillGrace         time.Duration
	Heartbeat         time.Duration
	WriteTimeout      time.Duration
	MaxBody           int64
	MaxLine           int
	CORSOrigins       string
	Retention         time.Duration
	MaxJobs           int
	DrainTimeout      time.Duration
	Token             string
	TokenFile         string
	InsecureNoAuth    bool
	TLSCert           string
	TLSKey            string
	EnvAllow          string
	MaxQueue          int
	MaxStreams        int
	ReadHeaderTime    time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	ReadBodyTimeout   time.Duration
	MaxForks          int
	InventoryDir      string
	DefaultIdle       time.Duration
	VaultPassFile     string
	VaultIDs          stringList
	AllowedHosts      string
	PlaybooksOnly     bool
	AllowVars         string
	AllowJinjaVars    bool
	Webhooks          stringList
	WebhookSecret     string
	WebhookSecretFile string
	PublicURL         string
	ShowVersion       bool
}

// parseFlags reads the command line; flags that have an environment variable take their
// default from it, so a flag given explicitly always wins.
func parseFlags(args []string, getenv func(string) string, out io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("charond", flag.ContinueOnError)
	fs.SetOutput(out)
	e := &flagEnv{getenv: getenv}
	env := e.str
	fs.StringVar(&c.Addr, "addr", env("CHARON_ADDR", "127.0.0.1:8080"),
		"Address to listen on, host:port. Env CHARON_ADDR.")
	fs.IntVar(&c.Workers, "workers", envParse(e, "CHARON_WORKERS", "-workers", runtime.NumCPU(), strconv.Atoi, "not a whole number"),
		"How many jobs run at once; the rest wait in the queue by priority. Env CHARON_WORKERS.")
	fs.StringVar(&c.AnsiblePlaybook, "ansible-playbook", env("CHARON_ANSIBLE_PLAYBOOK", "ansible-playbook"),
		"The ansible-playbook to run: a path, or a name looked up in PATH. Env CHARON_ANSIBLE_PLAYBOOK.")
	fs.StringVar(&c.PlaybookDir, "playbook-dir", env("CHARON_PLAYBOOK_DIR", "."),
		"Directory that external playbook paths are resolved against and must stay inside. Env CHARON_PLAYBOOK_DIR.")
	fs.StringVar(&c.InventoryDir, "inventory-dir", env("CHARON_INVENTORY_DIR", ""),
		"Directory that a job's inventory path (a file or a directory) is resolved against and must stay inside; "+
			"empty means -playbook-dir. Env CHARON_INVENTORY_DIR.")
	fs.StringVar(&c.DataDir, "data-dir", env("CHARON_DATA_DIR", "./charon-data"),
		"Directory for charond's state: each running job's work dir (inventory, variables, embedded playbook). Env CHARON_DATA_DIR.")
	fs.DurationVar(&c.DefaultTimeout, "default-timeout", time.Hour,
		"Timeout of a job that sets none (or 0).")
	fs.DurationVar(&c.DefaultIdle, "default-idle-timeout", 0,
		"idle_timeout of a job that sets none: a run that prints nothing and reports no task event for this long is stopped and ends timed_out. 0 is off.")
	fs.DurationVar(&c.MaxTimeout, "max-timeout", 24*time.Hour,
		"Largest timeout a job may ask for; a larger one is refused with 400.")
	fs.DurationVar(&c.KillGrace, "kill-grace", 10*time.Second,
		"How long a cancelled or timed-out job's processes have between SIGTERM and SIGKILL.")
	fs.DurationVar(&c.Heartbeat, "heartbeat", 15*time.Second,
		"How often an idle SSE stream sends a ': ping' comment, which keeps proxies from closing it.")
	fs.DurationVar(&c.WriteTimeout, "stream-write-timeout", 30*time.Second,
		"How long one write to a client (an SSE stream's, or any answer's) may block before the client is dropped; the job never waits for it.")
	fs.Int64Var(&c.MaxBody, "max-body", 1<<20,
		"Largest job submission accepted, in bytes; a larger one is answered 413.")
	fs.IntVar(&c.MaxLine, "max-line", 64<<10,
		"Longest output line kept, in bytes; a longer line keeps its start and says how much was cut.")
	fs.StringVar(&c.CORSOrigins, "cors-origins", env("CHARON_CORS_ORIGINS", ""),
		"Comma-separated origins whose browser pages may call the API, or * for any. Empty allows none. Env CHARON_CORS_ORIGINS.")
	fs.DurationVar(&c.Retention, "retention", 30*24*time.Hour,
		"How long finished jobs and their logs are kept; older ones are deleted.")
	fs.IntVar(&c.MaxJobs, "max-jobs", 10000,
		"How many jobs are kept at most; beyond it the oldest finished jobs are deleted with their logs.")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 0,
		"On SIGTERM or SIGINT, first wait up to this long for running jobs to finish (new submissions get 503), "+
			"then cancel what is left. 0 cancels at once. Queued jobs stay queued for the next start either way.")
	fs.StringVar(&c.Token, "token", env("CHARON_TOKEN", ""),
		"Bearer token that every /api/ route requires (stream routes also take ?access_token=). Env CHARON_TOKEN. "+
			"Prefer the environment or -token-file: a flag shows in the process list.")
	fs.StringVar(&c.TokenFile, "token-file", env("CHARON_TOKEN_FILE", ""),
		"File holding the bearer token, instead of -token. Env CHARON_TOKEN_FILE.")
	fs.BoolVar(&c.InsecureNoAuth, "insecure-no-auth", false,
		"Allow listening on a non-loopback -addr without a token. Anyone who can reach charond can then run playbooks.")
	fs.StringVar(&c.TLSCert, "tls-cert", env("CHARON_TLS_CERT", ""),
		"TLS certificate file (PEM); with -tls-key, charond serves HTTPS. Env CHARON_TLS_CERT.")
	fs.StringVar(&c.TLSKey, "tls-key", env("CHARON_TLS_KEY", ""),
		"TLS private key file (PEM), with -tls-cert. Env CHARON_TLS_KEY.")
	fs.StringVar(&c.EnvAllow, "env-allow", env("CHARON_ENV_ALLOW", "PATH,HOME,LANG,LC_*,USER,TMPDIR,ANSIBLE_*,SSH_AUTH_SOCK"),
		"Comma-separated names of charond's environment variables that jobs inherit; a trailing * matches a prefix. "+
			"The rest, CHARON_TOKEN included, never reaches a playbook. Env CHARON_ENV_ALLOW.")
	fs.IntVar(&c.MaxQueue, "max-queue", 1000,
		"Most jobs that may wait in the queue; a submission beyond it gets 429 with Retry-After.")
	fs.IntVar(&c.MaxStreams, "max-streams", 1000,
		"Most SSE streams open at once; one more gets 503 with Retry-After.")
	fs.DurationVar(&c.ReadHeaderTime, "read-header-timeout", 10*time.Second,
		"How long a client may take to send its request headers.")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 2*time.Minute,
		"How long an idle keep-alive connection stays open between requests.")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", 64<<10,
		"Largest request header block accepted, in bytes.")
	fs.IntVar(&c.MaxForks, "max-forks", 50,
		"Largest forks a job may ask for (ansible-playbook --forks: hosts run at once); a larger one is refused with 400.")
	fs.DurationVar(&c.ReadBodyTimeout, "read-body-timeout", 30*time.Second,
		"How long a client may take to send a request body (streams excepted); a slower one gets 408.")
	fs.StringVar(&c.AllowedHosts, "allowed-hosts", env("CHARON_ALLOWED_HOSTS", ""),
		"Comma-separated host names that requests may name in their Host header besides localhost, 127.0.0.1 and [::1] "+
			"(the name a reverse proxy passes on, say). Others get 421, which stops DNS rebinding. "+
			"When -addr is not loopback and this is empty, any Host is answered. Env CHARON_ALLOWED_HOSTS.")
	fs.BoolVar(&c.PlaybooksOnly, "playbooks-only", false,
		"For untrusted submitters: refuse embedded playbooks (403), so jobs can only run the playbooks in -playbook-dir, "+
			"and refuse variables named ansible_* (which choose interpreters, shells, connections and their commands) "+
			"unless -allow-vars names them.")
	fs.StringVar(&c.AllowVars, "allow-vars", env("CHARON_ALLOW_VARS", ""),
		"With -playbooks-only: comma-separated ansible_* variable names that jobs may still set (a trailing * matches a prefix), "+
			"such as ansible_user,ansible_port. Env CHARON_ALLOW_VARS.")
	fs.BoolVar(&c.AllowJinjaVars, "allow-jinja-in-vars", false,
		"Let Ansible template the values of job variables ({{ }} runs there, lookups included). "+
			"By default they are handed over as text Ansible never templates (YAML !unsafe), like AWX's launch-time extra vars.")
	fs.StringVar(&c.VaultPassFile, "vault-password-file", env("CHARON_VAULT_PASSWORD_FILE", ""),
		"File holding the Ansible Vault password every job runs with (ansible-playbook --vault-password-file), so that "+
			"playbooks and inventories in -playbook-dir can use vaulted files and variables. Env CHARON_VAULT_PASSWORD_FILE.")
	fs.Var(&c.VaultIDs, "vault-id",
		"A vault id every job runs with, label@FILE (ansible-playbook --vault-id); repeat for several.")
	fs.Var(&c.Webhooks, "webhook",
		"A URL that charond POSTs a signed JSON document to whenever a job ends; repeat for several. Needs -webhook-secret or -webhook-secret-file.")
	fs.StringVar(&c.WebhookSecret, "webhook-secret", env("CHARON_WEBHOOK_SECRET", ""),
		"Key of the HMAC-SHA256 signature of each webhook delivery (X-Charon-Signature-256), at least 16 bytes. "+
			"Env CHARON_WEBHOOK_SECRET. Prefer the environment or -webhook-secret-file: a flag shows in the process list.")
	fs.StringVar(&c.WebhookSecretFile, "webhook-secret-file", env("CHARON_WEBHOOK_SECRET_FILE", ""),
		"File holding the webhook secret, instead of -webhook-secret. Env CHARON_WEBHOOK_SECRET_FILE.")
	fs.StringVar(&c.PublicURL, "public-url", env("CHARON_PUBLIC_URL", ""),
		"charond's address as others reach it, such as https://charon.example.com behind a proxy: webhook documents link "+
			"to jobs under it. Empty: the address charond listens on. Env CHARON_PUBLIC_URL.")
	fs.BoolVar(&c.ShowVersion, "version", false, "Print the version and exit.")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: charond takes flags only (see -h)", fs.Arg(0))
	}
	// Refused even when the flag was given too: the value is wrong wherever it is used next.
	if e.err != nil {
		return nil, e.err
	}
	return c, c.validate()
}

// flagEnv gives flags their defaults from the environment.
type flagEnv struct {
	getenv func(string) string
	err    error // the first value that did not parse
}

// str is the variable's value, or fallback when it is unset or empty.
func (e *flagEnv) str(name, fallback string) string {
	if v := e.getenv(name); v != "" {
		return v
	}
	return fallback
}

// envParse is the variable's value parsed by parse, or fallback when it is unset or empty. A
// value that does not parse is kept in e.err, which parseFlags refuses as it refuses a bad
// flag: falling back to the default would run charond with a setting nobody chose. what is
// the complaint the message makes, such as "not a whole number".
func envParse[T any](e *flagEnv, name, flagName string, fallback T, parse func(string) (T, error), what string) T {
	v := e.getenv(name)
	if v == "" {
		return fallback
	}
	parsed, err := parse(v)
	if err != nil {
		if e.err == nil {
			e.err = fmt.Errorf("%s=%q: %s (%s)", name, v, what, flagName)
		}
		return fallback
	}
	return parsed
}

func (c *config) validate() error {
	switch {
	case c.Workers < 1:
		return fmt.Errorf("-workers must be at least 1, not %d", c.Workers)
	case c.DefaultTimeout <= 0 || c.MaxTimeout <= 0:
		return errors.New("-default-timeout and -max-timeout must be positive")
	case c.DefaultTimeout > c.MaxTimeout:
		return fmt.Errorf("-default-timeout (%s) must not exceed -max-timeout (%s)", c.DefaultTimeout, c.MaxTimeout)
	case c.DefaultIdle < 0 || c.DefaultIdle > c.MaxTimeout:
		return fmt.Errorf("-default-idle-timeout must be from 0 (off) to -max-timeout (%s), not %s", c.MaxTimeout, c.DefaultIdle)
	case c.KillGrace < 0 || c.Heartbeat <= 0 || c.WriteTimeout <= 0:
		return errors.New("-kill-grace must not be negative; -heartbeat and -stream-write-timeout must be positive")
	case c.MaxBody < 1 || c.MaxLine < 1 || c.MaxForks < 1:
		return errors.New("-max-body, -max-line and -max-forks must be at least 1")
	case c.Retention <= 0 || c.MaxJobs < 1 || c.DrainTimeout < 0:
		return errors.New("-retention and -max-jobs must be positive; -drain-timeout must not be negative")
	case c.MaxQueue < 1 || c.MaxStreams < 1 || c.MaxHeaderBytes < 1 || c.ReadHeaderTime <= 0 || c.IdleTimeout <= 0 || c.ReadBodyTimeout <= 0:
		return errors.New("-max-queue, -max-streams, -max-header-bytes, -read-header-timeout, -read-body-timeout and -idle-timeout must be positive")
	case c.PlaybooksOnly && c.AllowJinjaVars:
		return errors.New("-allow-jinja-in-vars lets a variable run commands through lookups, which -playbooks-only exists to prevent: use one or the other")
	case c.AllowVars != "" && !c.PlaybooksOnly:
		return errors.New("-allow-vars only means something with -playbooks-only: without it every variable is allowed")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("-tls-cert and -tls-key go together: give both or neither")
	case c.WebhookSecret != "" && c.WebhookSecretFile != "":
		return errors.New("-webhook-secret (or CHARON_WEBHOOK_SECRET) and -webhook-secret-file are both set: use one")
	}
	return checkPublicURL(c.PublicURL)
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "charond:", err)
		os.Exit(1)
	}
}

// run is main without os.Exit, so deferred cleanup always runs.
func run(args []string) error {
	cfg, err := parseFlags(args, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	if cfg.ShowVersion {
		fmt.Println("charond", thisBuild)
		return nil
	}
	token, err := loadToken(cfg.Token, cfg.TokenFile)
	if err != nil {
		return err
	}
	cfg.Token = token
	if err := checkAuthSettings(cfg); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	d, err := newDaemon(cfg, logger)
	if err != nil {
		return err
	}
	return d.run(ctx)
}

// checkAuthSettings refuses settings that would let anyone who can reach charond, or any web
// page its user opens, run playbooks.
func checkAuthSettings(cfg *config) error {
	if err := checkToken(cfg.Token); err != nil {
		return err
	}
	if cfg.Token != "" || cfg.InsecureNoAuth {
		return nil
	}
	if !isLoopback(cfg.Addr) {
		return fmt.Errorf("refusing to listen on %s without a token: anyone who can reach it could run playbooks; "+
			"set CHARON_TOKEN or -token-file, or pass -insecure-no-auth", cfg.Addr)
	}
	for _, o := range splitList(cfg.CORSOrigins) {
		if o == "*" {
			return errors.New("refusing -cors-origins * without a token: every web page the user opens could run playbooks; " +
				"list the origins, set CHARON_TOKEN or -token-file, or pass -insecure-no-auth")
		}
	}
	return nil
}

// stringList is a flag that may be given more than once; each value is kept, in order.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}
