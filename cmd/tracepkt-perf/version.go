package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// version is the tool's version, recorded in every recording.
const version = "0.1.0"

// printVersion prints the tool's version, the commit it was built from, and
// the versions of Go and cilium/ebpf it was built with, from the build
// information the Go toolchain embeds in every binary.
func printVersion(w io.Writer) error {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		_, err := fmt.Fprintf(w, "tracepkt-perf %s\n", version)
		return err
	}
	_, err := io.WriteString(w, versionText(info))
	return err
}

func versionText(info *debug.BuildInfo) string {
	commit, modified := "unknown", ""
	for _, s := range info.Settings {
		switch {
		case s.Key == "vcs.revision":
			commit = s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			modified = " (with local changes)"
		}
	}
	ebpf := "unknown"
	for _, d := range info.Deps {
		if d.Path == "github.com/cilium/ebpf" {
			ebpf = d.Version
			if d.Replace != nil {
				ebpf += " => " + d.Replace.Path + " " + d.Replace.Version
			}
		}
	}
	return fmt.Sprintf("tracepkt-perf %s\ncommit %s%s\n%s\ncilium/ebpf %s\n", version, commit, modified, info.GoVersion, ebpf)
}
