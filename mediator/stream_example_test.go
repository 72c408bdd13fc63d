package mediator_test

import (
	"context"
	"fmt"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// exampleStreamImport is a long-running command that reports its progress.
type exampleStreamImport struct {
	requests.Returns[exampleStreamProgress]
	File   string
	Chunks int
}

// exampleStreamProgress is one item of the import's stream.
type exampleStreamProgress struct {
	Chunk   int
	Percent int
}

// exampleStreamChunkImported is emitted with each progress item.
type exampleStreamChunkImported struct {
	File  string
	Chunk int
}

// exampleStreamImportDone is emitted once, after the last item.
type exampleStreamImportDone struct{ File string }

func ExampleStream() {
	importer := requests.StreamHandlerFunc[exampleStreamImport, exampleStreamProgress](
		func(ctx context.Context, cmd exampleStreamImport, yield func(exampleStreamProgress, []events.Event) bool) ([]events.Event, error) {
			for i := 1; i <= cmd.Chunks; i++ {
				// ... import chunk i ...
				p := exampleStreamProgress{Chunk: i, Percent: 100 * i / cmd.Chunks}
				if !yield(p, []events.Event{exampleStreamChunkImported{File: cmd.File, Chunk: i}}) {
					return nil, ctx.Err() // the consumer stopped
				}
			}
			// Dispatched after the last item, before the stream ends.
			return []events.Event{exampleStreamImportDone{File: cmd.File}}, nil
		})

	sm, err := bootstrap.Streaming(nil,
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindStreamHandler(r, importer)
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler(e, events.HandlerFunc[exampleStreamChunkImported](
				func(_ context.Context, ev exampleStreamChunkImported) ([]events.Event, error) {
					fmt.Printf("audit: %s chunk %d imported\n", ev.File, ev.Chunk)
					return nil, nil
				}))
			events.BindHandler(e, events.HandlerFunc[exampleStreamImportDone](
				func(_ context.Context, ev exampleStreamImportDone) ([]events.Event, error) {
					fmt.Printf("audit: %s done\n", ev.File)
					return nil, nil
				}))
		}),
		// One event at a time, so the output is deterministic.
		bootstrap.WithConcurrentEventHandling(false),
	)
	if err != nil {
		panic(err)
	}

	// p is an exampleStreamProgress: the item type comes from the request.
	// The events of each item are handled before the item arrives here.
	for p, err := range mediator.Stream(context.Background(), sm, exampleStreamImport{File: "users.csv", Chunks: 3}) {
		if err != nil {
			fmt.Println("import failed:", err)
			break
		}
		fmt.Printf("progress: chunk %d, %d%%\n", p.Chunk, p.Percent)
	}
	fmt.Println("stream ended")
	// Output:
	// audit: users.csv chunk 1 imported
	// progress: chunk 1, 33%
	// audit: users.csv chunk 2 imported
	// progress: chunk 2, 66%
	// audit: users.csv chunk 3 imported
	// progress: chunk 3, 100%
	// audit: users.csv done
	// stream ended
}
