package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// The man page and the bash completion are generated from usageText, the
// --help text, and kept in the repository for make install; this test
// fails when they fall behind it (go test -update writes them again).
var (
	manPath        = filepath.Join("..", "..", "docs", "tracepkt-perf.8")
	completionPath = filepath.Join("..", "..", "completions", "tracepkt-perf.bash")
)

// helpFlag is one entry of the Flags section of the help text.
type helpFlag struct {
	names []string // "-c", "--count"
	arg   string   // "N", "FILE", "A B"; empty for a switch
	text  []string
}

// helpSections splits the help text: the synopsis lines, the description,
// the flags, the exit status paragraph and the examples.
func helpSections(t *testing.T, usage string) (synopsis []string, description string, flags []helpFlag, exit string, examples []string) {
	t.Helper()
	blocks := strings.Split(strings.TrimSpace(usage), "\n\n")
	if len(blocks) != 5 || !strings.HasPrefix(blocks[2], "Flags:\n") || !strings.HasPrefix(blocks[3], "Exit status:") || !strings.HasPrefix(blocks[4], "Examples:\n") {
		t.Fatalf("the help text no longer has synopsis, description, flags, exit status and examples: %d blocks", len(blocks))
	}
	for _, l := range strings.Split(blocks[0], "\n") {
		synopsis = append(synopsis, strings.TrimSpace(strings.TrimPrefix(l, "usage:")))
	}
	description = strings.Join(strings.Fields(blocks[1]), " ")
	entry := regexp.MustCompile(`^ {2}(?: {4})?(-[-\w]+(?:, -[-\w]+)*)(?: ([A-Z][A-Z ,.]*?))?\s{2,}(.*)$`)
	for _, l := range strings.Split(blocks[2], "\n")[1:] {
		if m := entry.FindStringSubmatch(l); m != nil {
			f := helpFlag{arg: m[2], text: []string{m[3]}}
			for _, n := range strings.Split(m[1], ",") {
				f.names = append(f.names, strings.TrimSpace(n))
			}
			flags = append(flags, f)
			continue
		}
		// A continuation is indented to the descriptions' column; a line
		// indented like a flag that did not parse as one is an error.
		if len(flags) == 0 || strings.TrimSpace(l) == "" || len(l)-len(strings.TrimLeft(l, " ")) < 10 {
			t.Fatalf("help line %q is neither a flag nor its continuation", l)
		}
		flags[len(flags)-1].text = append(flags[len(flags)-1].text, strings.TrimSpace(l))
	}
	exit = strings.Join(strings.Fields(strings.TrimPrefix(blocks[3], "Exit status:")), " ")
	for _, l := range strings.Split(blocks[4], "\n")[1:] {
		examples = append(examples, strings.TrimSpace(l))
	}
	return synopsis, description, flags, exit, examples
}

// roff escapes text for a man page.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// manPage renders the help text as tracepkt-perf(8).
func manPage(t *testing.T, usage string) string {
	synopsis, description, flags, exit, examples := helpSections(t, usage)
	var b strings.Builder
	b.WriteString(`.TH TRACEPKT\-PERF 8 "" "tracepkt\-perf ` + roff(version) + `" "System Administration"` + "\n")
	b.WriteString(".\\\" Generated from the --help text by cmd/tracepkt-perf/manual_test.go: go test -update rewrites it.\n")
	b.WriteString(".SH NAME\ntracepkt\\-perf \\- show the journey of an ICMP echo through interfaces, network namespaces and netfilter chains\n")
	b.WriteString(".SH SYNOPSIS\n.nf\n")
	for _, s := range synopsis {
		b.WriteString(roff(s) + "\n")
	}
	b.WriteString(".fi\n.SH DESCRIPTION\n" + roff(description) + "\n.SH OPTIONS\n")
	for _, f := range flags {
		names := make([]string, len(f.names))
		for i, n := range f.names {
			names[i] = `\fB` + roff(n) + `\fR`
		}
		b.WriteString(".TP\n" + strings.Join(names, ", "))
		if f.arg != "" {
			b.WriteString(` \fI` + roff(f.arg) + `\fR`)
		}
		b.WriteString("\n" + roff(strings.Join(f.text, " ")) + "\n")
	}
	b.WriteString(".SH EXIT STATUS\n" + roff(exit) + "\n.SH EXAMPLES\n.nf\n")
	for _, e := range examples {
		b.WriteString(roff(e) + "\n")
	}
	b.WriteString(".fi\n.SH SEE ALSO\n\\fBping\\fR(8), \\fBnft\\fR(8), \\fBip\\fR(8)\n")
	return b.String()
}

// valueWords completes the values of flags that take one of a few words.
var valueWords = map[string]string{"--netfilter": "auto kprobe nftrace off", "--pmtudisc": "do dont want"}

// bashCompletion renders the help text's flags as a bash completion.
func bashCompletion(t *testing.T, usage string) string {
	_, _, flags, _, _ := helpSections(t, usage)
	var all, files, words, none []string
	for _, f := range flags {
		all = append(all, f.names...)
		pattern := strings.Join(f.names, "|")
		switch {
		case f.arg == "":
		case f.arg == "FILE" || f.arg == "OUT" || f.arg == "A B" || f.arg == "A B ...":
			files = append(files, pattern)
		case valueWords[f.names[len(f.names)-1]] != "":
			words = append(words, pattern+`) COMPREPLY=($(compgen -W "`+valueWords[f.names[len(f.names)-1]]+`" -- "$cur")); return ;;`)
		default:
			none = append(none, pattern)
		}
	}
	slices.Sort(all)
	return `# bash completion for tracepkt-perf(8), generated from its --help text by
# cmd/tracepkt-perf/manual_test.go (go test -update rewrites it).
_tracepkt_perf() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        ` + strings.Join(files, "|") + `) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        ` + strings.Join(words, "\n        ") + `
        ` + strings.Join(none, "|") + `) return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "` + strings.Join(all, " ") + `" -- "$cur"))
        return
    fi
    COMPREPLY=($(compgen -A hostname -- "$cur"))
}
complete -F _tracepkt_perf tracepkt-perf
`
}

func TestManualPages(t *testing.T) {
	for path, got := range map[string]string{manPath: manPage(t, usageText), completionPath: bashCompletion(t, usageText)} {
		if *update {
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (go test -update writes it)", err)
		}
		if string(want) != got {
			t.Errorf("%s is not what the --help text gives (go test -update rewrites it):\n%s", path, got)
		}
	}
}

// TestHelpListsEveryFlag: every flag in the help text is one parseArgs
// knows, so the man page and the completion name no flag that does not exist.
func TestHelpListsEveryFlag(t *testing.T) {
	_, _, flags, _, _ := helpSections(t, usageText)
	if len(flags) < 20 {
		t.Fatalf("%d flags in the help text", len(flags))
	}
	for _, f := range flags {
		for _, n := range f.names {
			if _, err := parseArgs([]string{n}, new(strings.Builder)); err != nil && strings.Contains(err.Error(), "not defined") {
				t.Errorf("the help lists %s, which parseArgs does not know: %v", n, err)
			}
		}
	}
}

// TestBashCompletion sources the completion and completes a few words.
func TestBashCompletion(t *testing.T) {
	testenv.RequireCommands(t, "bash")
	for words, want := range map[string]string{
		"tracepkt-perf --re":          "--record --replay",
		"tracepkt-perf --netfilter n": "nftrace",
		"tracepkt-perf -M d":          "do dont",
		"tracepkt-perf --vers":        "--version",
		"tracepkt-perf -c ":           "",
	} {
		script := `source "$1"; COMP_WORDS=(` + words + `); [[ "` + words + `" == *" " ]] && COMP_WORDS+=(""); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _tracepkt_perf; echo "${COMPREPLY[*]}"`
		out, err := exec.Command("bash", "-c", script, "bash", completionPath).CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != want {
			t.Errorf("completing %q: %q (%v), want %q", words, got, err, want)
		}
	}
}

// TestManPageRenders has groff read the man page with every warning on.
func TestManPageRenders(t *testing.T) {
	testenv.RequireCommands(t, "groff")
	out, err := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z", manPath).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("groff: %v\n%s", err, out)
	}
}
