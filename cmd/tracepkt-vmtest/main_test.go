package main

import (
	"io"
	"reflect"
	"testing"
)

func TestSplitCommands(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    [][]string
		wantErr bool
	}{
		{args: []string{"a.test", "-test.v"}, want: [][]string{{"a.test", "-test.v"}}},
		{args: []string{"a", "x", "--", "b", "--", "c", "y"}, want: [][]string{{"a", "x"}, {"b"}, {"c", "y"}}},
		{args: []string{"a", "--"}, want: [][]string{{"a"}}},
		{args: nil, wantErr: true},
		{args: []string{"a", "--", "--", "b"}, wantErr: true},
		{args: []string{"--", "a"}, wantErr: true},
	} {
		got, err := splitCommands(tc.args)
		if (err != nil) != tc.wantErr || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitCommands(%q) = %q, %v; want %q, error %v", tc.args, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestRunRejectsMissingCommand(t *testing.T) {
	if err := run([]string{"-timeout", "1s"}, io.Discard, io.Discard); err == nil {
		t.Error("run without a command: no error")
	}
}
