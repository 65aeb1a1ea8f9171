package netns

import "testing"

func TestParseNsLink(t *testing.T) {
	for s, want := range map[string]uint32{"net:[4026531840]": 4026531840, "net:[1]": 1} {
		if got, ok := parseNsLink(s, "net"); !ok || got != want {
			t.Errorf("parseNsLink(%q) = %d, %v", s, got, ok)
		}
	}
	if got, ok := parseNsLink("pid:[4026531836]", "pid"); !ok || got != 4026531836 {
		t.Errorf("parseNsLink(pid:[4026531836], pid) = %d, %v", got, ok)
	}
	for _, s := range []string{"mnt:[4026531840]", "pid:[4026531836]", "net:[x]", "net:[4026531840", "net:[99999999999]", ""} {
		if _, ok := parseNsLink(s, "net"); ok {
			t.Errorf("parseNsLink(%q) accepted", s)
		}
	}
}
