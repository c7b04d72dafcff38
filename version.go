package main

import (
	"runtime/debug"
	"strings"
)

// version is charond's version. A release build sets it:
//
//	go build -ldflags "-X main.version=1.2.0" .
//
// Otherwise it is what the Go toolchain stamped into the binary: the module's version, a
// pseudo-version made from the VCS revision, or "devel" when there is neither.
var version = ""

// buildInfo is what charond knows of how it was built, for -version and /api/v1/info.
type buildInfo struct {
	Version  string `json:"version"`
	Revision string `json:"revision"`   // the VCS revision built; "" if unknown
	Time     string `json:"build_time"` // the revision's commit time, RFC 3339; "" if unknown
	Modified bool   `json:"modified"`   // the working tree had changes not committed
	Go       string `json:"go_version"`
}

// thisBuild reads the build's version and VCS stamps, once.
var thisBuild = readBuildInfo(version, debug.ReadBuildInfo)

func readBuildInfo(override string, read func() (*debug.BuildInfo, bool)) buildInfo {
	b := buildInfo{Version: override}
	info, ok := read()
	if !ok {
		if b.Version == "" {
			b.Version = "devel"
		}
		return b
	}
	b.Go = info.GoVersion
	if b.Version == "" {
		b.Version = strings.TrimPrefix(info.Main.Version, "v")
		if b.Version == "" || b.Version == "(devel)" {
			b.Version = "devel"
		}
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// String is the build as -version prints it: "1.2.0 (rev 3edaa3a1c2d4, 2026-12-01T10:00:00Z, modified)".
func (b buildInfo) String() string {
	var details []string
	if b.Revision != "" {
		details = append(details, "rev "+b.Revision[:min(12, len(b.Revision))])
	}
	if b.Time != "" {
		details = append(details, b.Time)
	}
	if b.Modified {
		details = append(details, "modified")
	}
	if b.Go != "" {
		details = append(details, b.Go)
	}
	if len(details) == 0 {
		return b.Version
	}
	return b.Version + " (" + strings.Join(details, ", ") + ")"
}
