package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestImportsOnlyStdlibAndYAML fails if charond comes to depend, directly or through another
// package, on anything but the standard library and go.yaml.in/yaml/v3; that includes the
// module's own other packages (examples/ holds clients, not parts of the daemon). It asks
// `go list -deps`, which follows indirect imports, where reading import lines would not; and a
// module named "charond" has no dot in its first path element, so a package of its own would
// pass for the standard library by that test. Test files do not count: they are not charond.
func TestImportsOnlyStdlibAndYAML(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}} {{with .Module}}{{.Path}}{{end}}{{end}}", ".")
	// yaml is in the module cache already (this test binary was built with it): never fetch.
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list -deps: %v\n%s", err, stderr)
	}
	var sawSelf bool
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, module, _ := strings.Cut(line, " ")
		switch {
		case pkg == "charond":
			sawSelf = true
		case module == "go.yaml.in/yaml/v3":
		default:
			t.Errorf("charond depends on %s (module %q): only the standard library and go.yaml.in/yaml/v3 are allowed", pkg, module)
		}
	}
	if !sawSelf {
		t.Errorf("go list -deps did not list charond itself; its output:\n%s", out)
	}
}
