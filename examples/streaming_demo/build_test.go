package main

import (
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The README builds the client with `go build -o streaming_demo main.go`, which compiles
// main.go alone: every file but the tests must be main.go, and it must build by itself.
func TestBuildsFromMainGoAlone(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if f != "main.go" && !strings.HasSuffix(f, "_test.go") {
			t.Errorf("%s: the client's code must all be in main.go", f)
		}
	}
	bin := filepath.Join(t.TempDir(), "streaming_demo")
	if out, err := exec.Command("go", "build", "-o", bin, "main.go").CombinedOutput(); err != nil {
		t.Fatalf("go build -o streaming_demo main.go: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-h").Output()
	if err != nil || !strings.HasPrefix(string(out), "Usage: streaming_demo") {
		t.Errorf("streaming_demo -h: %v\n%s", err, out)
	}
}

// The client may use the standard library and what the root module already uses, no more.
func TestImportsOnlyStdlibAndYAML(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	for _, name := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			first, _, _ := strings.Cut(path, "/")
			if strings.Contains(first, ".") && path != "go.yaml.in/yaml/v3" {
				t.Errorf("%s imports %s: only the standard library and go.yaml.in/yaml/v3 are allowed", name, path)
			}
		}
	}
}
