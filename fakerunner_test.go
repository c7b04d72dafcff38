package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
)

// fakeRunnerMain acts as ansible-playbook for tests. charond calls it as
// `ansible-playbook -i INVENTORY -e @VARS PLAYBOOK`; the job's variables choose what it does:
//
//	fake: lines        print `count` lines "line N" (`burst` of them every `interval_ms`, on stderr every `stderr_every`th)
//	fake: bigline      print a line of `size` bytes, then "after"
//	fake: sleep        print "started", then sleep `seconds`
//	fake: ignore_term  ignore SIGTERM, print "started PID", then sleep a minute
//	fake: grandchild   start `sleep 300` in the background holding stdout, print its pid, exit
//	fake: exit         print "failing", exit with `code`
//	fake: gate         print `count` lines, wait until the file `gate` exists, print `count` more
//	fake: report       print its arguments, working directory, the vars file's mode and some env
//	fake: envdump      print the name of every environment variable it has
//	fake: escape       print "leader PID", start `sleep 300` in a new session with none of the
//	                   job's pipes (without the job's environment if `clear_env` is "yes"),
//	                   print "escaped PID", then sleep `seconds` (0 by default)
//	fake: signal       die of signal number `signal`, as a crash or the OOM killer would do it
//
// It returns the process exit code.
func fakeRunnerMain(args []string) int {
	if len(args) == 1 && args[0] == "--version" {
		fmt.Println("ansible-playbook [core 0.0-fake]")
		return 0
	}
	vars, err := readFakeVars(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake runner:", err)
		return 1
	}
	num := func(key string, fallback int) int {
		switch v := vars[key].(type) {
		case int:
			return v
		case float64:
			return int(v)
		}
		return fallback
	}
	switch vars["fake"] {
	case "lines":
		every, interval := num("stderr_every", 0), time.Duration(num("interval_ms", 0))*time.Millisecond
		if every == 0 && interval == 0 {
			printLinesFast(num("count", 10))
			break
		}
		burst := max(num("burst", 1), 1) // lines a tick: 10 every 10 ms is a steady 1,000 lines/s
		for i := 1; i <= num("count", 10); i++ {
			out := os.Stdout
			if every > 0 && i%every == 0 {
				out = os.Stderr
			}
			fmt.Fprintf(out, "line %d\n", i)
			if i%burst == 0 {
				time.Sleep(interval)
			}
		}
	case "bigline":
		fmt.Printf("%s\nafter\n", strings.Repeat("x", num("size", 1<<20)))
	case "sleep":
		fmt.Println("started")
		time.Sleep(time.Duration(num("seconds", 60)) * time.Second)
	case "ignore_term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Printf("started %d\n", os.Getpid())
		time.Sleep(time.Minute)
	case "grandchild":
		cmd := exec.Command("sleep", "300")
		cmd.Stdout = os.Stdout // holds charond's pipe open, as a playbook's background job would
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "fake runner:", err)
			return 1
		}
		fmt.Printf("grandchild %d\n", cmd.Process.Pid)
	case "exit":
		fmt.Println("failing")
		return num("code", 2)
	case "gate":
		n := num("count", 5)
		for i := 1; i <= n; i++ {
			fmt.Printf("line %d\n", i)
		}
		for {
			if _, err := os.Stat(vars["gate"].(string)); err == nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		for i := n + 1; i <= 2*n; i++ {
			fmt.Printf("line %d\n", i)
		}
	case "report":
		report(args)
	case "envdump":
		for _, kv := range os.Environ() {
			name, _, _ := strings.Cut(kv, "=")
			fmt.Println(name)
		}
	case "escape":
		if err := escape(fmt.Sprint(vars["clear_env"]) == "yes"); err != nil {
			fmt.Fprintln(os.Stderr, "fake runner:", err)
			return 1
		}
		time.Sleep(time.Duration(num("seconds", 0)) * time.Second)
	case "signal":
		dieOfSignal(syscall.Signal(num("signal", int(syscall.SIGKILL))))
		return 1
	default:
		fmt.Fprintf(os.Stderr, "fake runner: unknown scenario %v\n", vars["fake"])
		return 1
	}
	return 0
}

// printLinesFast prints "line 1".."line n" through a buffer, as fast as the pipe takes them.
func printLinesFast(n int) {
	w := bufio.NewWriterSize(os.Stdout, 64<<10)
	for i := 1; i <= n; i++ {
		w.WriteString("line ")
		w.WriteString(strconv.Itoa(i))
		w.WriteByte('\n')
	}
	w.Flush()
}

func readFakeVars(args []string) (map[string]any, error) {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-e" && strings.HasPrefix(args[i+1], "@") {
			raw, err := os.ReadFile(args[i+1][1:])
			if err != nil {
				return nil, err
			}
			// YAML, as charond writes it (values tagged !unsafe), or JSON with -allow-jinja-in-vars.
			var vars map[string]any
			return vars, yaml.Unmarshal(raw, &vars)
		}
	}
	return nil, fmt.Errorf("no -e @file among %q", args)
}

func report(args []string) {
	wd, _ := os.Getwd()
	fmt.Printf("args=%s\n", strings.Join(args, " "))
	fmt.Printf("cwd=%s\n", wd)
	if info, err := os.Stat(strings.TrimPrefix(args[3], "@")); err == nil {
		fmt.Printf("varsmode=%o\n", info.Mode().Perm())
	}
	for _, k := range []string{"PYTHONUNBUFFERED", "ANSIBLE_NOCOLOR", "ANSIBLE_RETRY_FILES_ENABLED"} {
		fmt.Printf("%s=%s\n", k, os.Getenv(k))
	}
	stdin, _ := os.Stdin.Stat()
	fmt.Printf("stdin=%s\n", stdin.Mode().Type())
}

// escape starts a process that leaves the job's process group and session, as `setsid nohup
// sleep 600 &` or Ansible's async_wrapper does, and holds none of the job's pipes, so the run
// ends without waiting for it. clearEnv drops the environment, marker included.
func escape(clearEnv bool) error {
	fmt.Printf("leader %d\n", os.Getpid())
	// fd 3 is the events pipe, inherited without close-on-exec: the escaped process must not
	// hold it either.
	syscall.CloseOnExec(eventsFD)
	cmd := exec.Command("sleep", "300")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if clearEnv {
		cmd.Env = []string{}
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	fmt.Printf("escaped %d\n", cmd.Process.Pid)
	return nil
}

// dieOfSignal ends the process with sig. A Go program cannot die of SIGSEGV sent to it (the
// runtime catches it and exits 2), so a shell takes over the process and signals itself.
func dieOfSignal(sig syscall.Signal) {
	syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{}) // no core file
	if sig == syscall.SIGKILL {
		syscall.Kill(os.Getpid(), sig)
	}
	err := syscall.Exec("/bin/sh", []string{"sh", "-c", fmt.Sprintf("kill -%d $$", int(sig))}, os.Environ())
	fmt.Fprintln(os.Stderr, "fake runner:", err)
}
