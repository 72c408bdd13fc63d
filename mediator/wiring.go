package mediator

import (
	"cmp"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/gocqrs/cqrs/internal/engine"
	"github.com/gocqrs/cqrs/internal/registry"
)

// wiring is what a mediator was built from, kept for diagrams.
type wiring struct {
	requests map[reflect.Type]registry.Built
	events   map[reflect.Type][]registry.EventHandler
	eventMW  []string
	fanout   string // how events are scheduled
}

func newWiring(reqs map[reflect.Type]registry.Built, eng *engine.Engine, cfg Config) wiring {
	w := wiring{requests: reqs, events: eng.Routes(), fanout: fanoutText(cfg)}
	for _, mw := range cfg.EventMiddleware {
		w.eventMW = append(w.eventMW, reflect.TypeOf(mw).String())
	}
	return w
}

// fanoutText describes the scheduling cfg sets up.
func fanoutText(cfg Config) string {
	var s string
	if !cfg.ConcurrentEventHandleEnable || cfg.MaxConcurrentEventHandlers <= 1 {
		s = "event fan-out: sequential, one invocation at a time per Send"
	} else {
		s = fmt.Sprintf("event fan-out: up to %d invocations at once per Send; ", cfg.MaxConcurrentEventHandlers)
		if cfg.EventHandlerOrder == Parallel {
			s += "the handlers of one event in parallel"
		} else {
			s += "the handlers of one event one after the other (EventHandlerOrder Serial)"
		}
	}
	if cfg.MediatorWideLimit > 0 {
		s += fmt.Sprintf("; at most %d across every Send", cfg.MediatorWideLimit)
	}
	return s
}

// Mermaid returns a Mermaid flowchart of the mediator's wiring: each request
// type, the middleware around its handler, its handler (the links of a
// chain, or the primary and fallback), the events its handlers declare they
// emit (events.Declarer), and the handlers bound to each event, with their
// declared follow-ups. Events that are bound but declared by no handler are
// drawn too. The output is deterministic: nodes are sorted by type name.
//
// A last node states how events are scheduled: sequentially, or how many
// invocations of one Send run at once and whether the handlers of one event
// run one after the other (the default) or in parallel.
func (m *RequestMediator) Mermaid() string {
	if m == nil {
		return ""
	}
	return m.wiring.mermaid()
}

func (w wiring) mermaid() string {
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	byName := func(a, b reflect.Type) int { return cmp.Compare(a.String(), b.String()) }

	// Event nodes: every bound or declared event type.
	evTypes := map[reflect.Type]bool{}
	for t := range w.events {
		evTypes[t] = true
	}
	for _, built := range w.requests {
		for _, t := range built.Emits {
			evTypes[t] = true
		}
	}
	for _, hs := range w.events {
		for _, h := range hs {
			for _, t := range h.Emits {
				evTypes[t] = true
			}
		}
	}
	evID := map[reflect.Type]string{}
	for i, t := range slices.SortedFunc(maps.Keys(evTypes), byName) {
		evID[t] = fmt.Sprintf("e%d", i)
	}

	for i, t := range slices.SortedFunc(maps.Keys(w.requests), byName) {
		built := w.requests[t]
		rid := fmt.Sprintf("r%d", i)
		fmt.Fprintf(&b, "    %s[/%s/]\n", rid, label(t.String()))
		hid := func(j int) string { return fmt.Sprintf("r%dh%d", i, j) }
		for j, name := range built.Handlers {
			fmt.Fprintf(&b, "    %s[%s]\n", hid(j), label(name))
		}
		edge := "-->"
		if len(built.Middleware) > 0 {
			edge = "-->|" + label(strings.Join(built.Middleware, " → ")) + "|"
		}
		fmt.Fprintf(&b, "    %s %s %s\n", rid, edge, hid(0))
		switch built.Kind {
		case "chain":
			for j := 1; j < len(built.Handlers); j++ {
				fmt.Fprintf(&b, "    %s -->|next| %s\n", hid(j-1), hid(j))
			}
		case "fallback":
			fmt.Fprintf(&b, "    %s -.->|on failure| %s\n", hid(0), hid(1))
		}
		last := hid(len(built.Handlers) - 1)
		if built.Kind == "fallback" {
			last = hid(0)
		}
		for _, et := range uniq(built.Emits) {
			fmt.Fprintf(&b, "    %s -.->|emits| %s\n", last, evID[et])
		}
	}

	for _, t := range slices.SortedFunc(maps.Keys(evTypes), byName) {
		fmt.Fprintf(&b, "    %s([%s])\n", evID[t], label(t.String()))
	}
	handlerN := 0
	for _, t := range slices.SortedFunc(maps.Keys(w.events), byName) {
		for _, h := range w.events[t] {
			id := fmt.Sprintf("eh%d", handlerN)
			handlerN++
			fmt.Fprintf(&b, "    %s[%s]\n", id, label(h.Name))
			fmt.Fprintf(&b, "    %s --> %s\n", evID[t], id)
			for _, ft := range uniq(h.Emits) {
				fmt.Fprintf(&b, "    %s -.->|emits| %s\n", id, evID[ft])
			}
		}
	}
	if len(w.eventMW) > 0 {
		fmt.Fprintf(&b, "    emw{{%s}}\n", label("event middleware: "+strings.Join(w.eventMW, " → ")))
		fmt.Fprintf(&b, "    fan{{%s}}\n", label(w.fanout))
	}
	return b.String()
}

// label quotes s for a Mermaid node or edge label.
func label(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, "#quot;") + `"`
}

func uniq(ts []reflect.Type) []reflect.Type {
	var out []reflect.Type
	for _, t := range ts {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}
