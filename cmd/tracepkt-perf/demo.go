package main

import (
	"context"
	"errors"
	"io"
)

func runDemo(ctx context.Context, o options, w journeyWriter, stderr io.Writer) error {
	return errors.New("--demo: not yet")
}
