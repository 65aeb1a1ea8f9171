package netns

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// maxCmdline bounds what is read of a dockerd's command line: its flags
// fit in a few hundred bytes, but a process may carry up to ARG_MAX.
const maxCmdline = 64 << 10

// dockerRoots returns the data roots a Docker container's files may be
// under, the likeliest first: each running dockerd's, as dockerd itself
// takes it (its command line's --data-root, older -g/--graph, over the
// "data-root" of the configuration file it was given with --config-file);
// then the default configuration file's; then the default root. All are
// kept, since a container id names one container only: with live-restore
// the containers outlive a stopped daemon, and a root found wrongly costs
// only a look-up. Relative roots, which dockerd resolves against its own
// working directory, are left out. The result is never nil, so a Namer
// reads it once.
func dockerRoots(p Places) []string {
	roots := []string{}
	add := func(root string) {
		root = filepath.Clean(root)
		if filepath.IsAbs(root) && !slices.Contains(roots, root) {
			roots = append(roots, root)
		}
	}
	for _, args := range dockerdArgs(p.Proc) {
		if root, ok := flagValue(args, "--data-root", "--graph", "-g"); ok {
			add(root)
		} else if cfg, ok := flagValue(args, "--config-file"); ok {
			if root, ok := configRoot(cfg); ok {
				add(root)
			}
		}
	}
	if root, ok := configRoot(p.DockerConfig); ok {
		add(root)
	}
	if p.DockerRoot != "" {
		add(p.DockerRoot)
	}
	return roots
}

// dockerdArgs returns the arguments of each process whose command is
// dockerd, by PID order as /proc lists them.
func dockerdArgs(proc string) [][]string {
	entries, err := os.ReadDir(proc)
	if err != nil {
		return nil
	}
	var all [][]string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		dir := filepath.Join(proc, e.Name())
		if comm, _ := os.ReadFile(filepath.Join(dir, "comm")); strings.TrimSpace(string(comm)) != "dockerd" {
			continue
		}
		f, err := os.Open(filepath.Join(dir, "cmdline"))
		if err != nil {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(f, maxCmdline))
		f.Close()
		if err != nil {
			continue
		}
		var args []string
		for a := range bytes.SplitSeq(bytes.TrimSuffix(b, []byte{0}), []byte{0}) {
			args = append(args, string(a))
		}
		all = append(all, args)
	}
	return all
}

// flagValue returns the value the last of names is given in args, as
// dockerd's flag parser (spf13/pflag) reads them: "--name value",
// "--name=value", and for a one-letter name also "-nvalue". args[0] is
// the program; "--" ends the flags.
func flagValue(args []string, names ...string) (string, bool) {
	var value string
	var found bool
args:
	for i := 1; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		for _, name := range names {
			switch {
			case a == name && i+1 < len(args):
				i++
				value, found = args[i], true
			case strings.HasPrefix(a, name+"="):
				value, found = a[len(name)+1:], true
			case len(name) == 2 && len(a) > 2 && strings.HasPrefix(a, name):
				value, found = a[2:], true
			default:
				continue
			}
			continue args
		}
	}
	return value, found && value != ""
}

// configRoot reads the data root a dockerd configuration file sets:
// "data-root", else the older "graph".
func configRoot(path string) (string, bool) {
	var cfg struct {
		DataRoot string `json:"data-root"`
		Graph    string `json:"graph"`
	}
	if path == "" || !readJSON(path, &cfg) {
		return "", false
	}
	if cfg.DataRoot != "" {
		return cfg.DataRoot, true
	}
	return cfg.Graph, cfg.Graph != ""
}

// dockerName reads a Docker container's name from its config.v2.json,
// under whichever data root holds it.
func (n *Namer) dockerName(id string) string {
	if n.dockerRoots == nil {
		n.dockerRoots = dockerRoots(n.places)
	}
	for _, root := range n.dockerRoots {
		var cfg struct{ Name string }
		if readJSON(filepath.Join(root, "containers", id, "config.v2.json"), &cfg) {
			return strings.TrimPrefix(cfg.Name, "/")
		}
	}
	return ""
}
