package sqlite

import (
	"context"
	"sync"
)

// hub is the in-process commit signal of one table of a [DB]: the watchers
// of every store on the table, woken after commits that added rows.
type hub struct {
	mu       sync.Mutex
	next     uint64
	watchers map[uint64]func()
}

func newHub() *hub { return &hub{watchers: make(map[uint64]func())} }

// signal wakes every watcher.
func (h *hub) signal() {
	h.mu.Lock()
	ws := make([]func(), 0, len(h.watchers))
	for _, w := range h.watchers {
		ws = append(ws, w)
	}
	h.mu.Unlock()
	for _, w := range ws {
		w()
	}
}

// watch calls wake once, then on every signal, until ctx is done. Calls of
// wake never overlap.
func (h *hub) watch(ctx context.Context, wake func()) {
	var mu sync.Mutex
	w := func() {
		mu.Lock()
		defer mu.Unlock()
		wake()
	}
	h.mu.Lock()
	id := h.next
	h.next++
	h.watchers[id] = w
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.watchers, id)
		h.mu.Unlock()
	}()
	w()
	<-ctx.Done()
}
