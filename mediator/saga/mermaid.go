package saga

import (
	"fmt"
	"strings"
)

// Mermaid returns a Mermaid sequence diagram of d: the orchestrator runs
// the steps in order, each followed by its checkpoint; a step with a
// fallback shows it as the alternative to its action; the last step's
// alternative shows a failure, after which the completed steps are
// compensated in reverse order (steps with nothing to compensate are noted
// and skipped). A failure of any other step is compensated the same way,
// from the step before it down. The output is deterministic.
func (d *Definition[S]) Mermaid() string {
	if d == nil {
		return ""
	}
	var b strings.Builder
	line := func(format string, args ...any) {
		b.WriteString("    ")
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	b.WriteString("sequenceDiagram\n")
	line("participant O as saga %s", label(d.Name))
	for i, s := range d.Steps {
		line("participant S%d as %s", i+1, label(s.Name))
		if s.Fallback != nil {
			line("participant F%d as %s (fallback)", i+1, label(s.Name))
		}
	}
	n := len(d.Steps)
	for i, s := range d.Steps {
		name, last := label(s.Name), i == n-1
		done := "done, checkpoint"
		if last {
			done += ": completed"
		}
		line("O->>S%d: %s", i+1, name)
		if s.Fallback == nil && !last {
			line("S%d-->>O: %s", i+1, done)
			continue
		}
		line("alt %s succeeds", name)
		line("    S%d-->>O: %s", i+1, done)
		if s.Fallback != nil {
			line("else %s fails and the fallback policy accepts the error", name)
			line("    O->>F%d: %s (fallback)", i+1, name)
			line("    F%d-->>O: %s", i+1, done)
		}
		if last {
			line("else %s fails", name)
			line("    S%d--xO: failed, checkpoint: compensating", i+1)
			d.compensations(line, i)
		}
		line("end")
	}
	if n > 1 {
		line("Note over O,S%d: a step that fails is followed by the compensation of the steps before it, in reverse order", n)
	}
	return b.String()
}

// compensations draws the compensation of the steps before failed.
func (d *Definition[S]) compensations(line func(string, ...any), failed int) {
	undone := false
	for j := failed - 1; j >= 0; j-- {
		s := d.Steps[j]
		name := label(s.Name)
		hasFb := s.Fallback != nil && s.Fallback.Compensation != nil
		switch {
		case s.Fallback != nil && (s.Compensation != nil || hasFb):
			line("    alt %s ran", name)
			if s.Compensation != nil {
				line("        O->>S%d: compensate %s, retried with backoff", j+1, name)
				line("        S%d-->>O: done, checkpoint", j+1)
			} else {
				line("        Note over O,S%d: %s: nothing to compensate", j+1, name)
			}
			line("    else its fallback ran")
			if hasFb {
				line("        O->>F%d: compensate %s (fallback), retried with backoff", j+1, name)
				line("        F%d-->>O: done, checkpoint", j+1)
			} else {
				line("        Note over O,F%d: %s (fallback): nothing to compensate", j+1, name)
			}
			line("    end")
			undone = true
		case s.Compensation != nil:
			line("    O->>S%d: compensate %s, retried with backoff", j+1, name)
			line("    S%d-->>O: done, checkpoint", j+1)
			undone = true
		default:
			line("    Note over O,S%d: %s: nothing to compensate", j+1, name)
		}
	}
	if undone {
		line("    Note over O: compensated")
	} else {
		line("    Note over O: compensated (nothing to undo)")
	}
}

// label makes s safe as Mermaid message or participant text.
func label(s string) string {
	if s == "" {
		return "(unnamed)"
	}
	return strings.NewReplacer(";", ",", "#", "", "\n", " ", ":", " ").Replace(s)
}
