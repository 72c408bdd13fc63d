package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestRun runs the program and checks what it prints.
func TestRun(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, want := range []string{
		"Send returned order ord-1",
		"GetOrder ord-1: book x 2 for ada@example.com, status confirmed",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if n := strings.Count(out.String(), " end "); n != 4 {
		t.Errorf("output has %d end lines, want 4:\n%s", n, out.String())
	}
}

// TestEventHandlersShareThreeSlots checks the seed scenario from the order in
// which things were recorded, not from how long they took: at most three
// handlers at once, and three did run at once; the fourth started only after
// one of the first three ended; all four ended before Send returned.
func TestEventHandlersShareThreeSlots(t *testing.T) {
	t.Parallel()
	tl := NewTimeline()
	if err := runWith(context.Background(), &bytes.Buffer{}, tl); err != nil {
		t.Fatalf("run: %v", err)
	}
	entries := tl.Entries()

	maxInFlight, starts, ends := 0, 0, 0
	fourthStart, firstEnd, returned := -1, -1, -1
	for i, e := range entries {
		maxInFlight = max(maxInFlight, e.InFlight)
		switch e.Kind {
		case Start:
			starts++
			if starts == 4 {
				fourthStart = i
				if e.Event != "EmailQueued" {
					t.Errorf("fourth handler to start handles %s, want EmailQueued (the fourth event emitted)", e.Event)
				}
			}
		case End:
			ends++
			if firstEnd < 0 {
				firstEnd = i
			}
		case Returned:
			returned = i
		}
	}
	if starts != 4 || ends != 4 {
		t.Fatalf("recorded %d starts and %d ends, want 4 and 4:\n%v", starts, ends, entries)
	}
	if maxInFlight != 3 {
		t.Errorf("max in flight = %d, want 3:\n%v", maxInFlight, entries)
	}
	if fourthStart < firstEnd {
		t.Errorf("fourth handler started (entry %d) before any handler ended (entry %d):\n%v", fourthStart, firstEnd, entries)
	}
	if returned != len(entries)-1 || entries[returned-1].InFlight != 0 {
		t.Errorf("Send returned (entry %d) before every handler ended:\n%v", returned, entries)
	}
}
