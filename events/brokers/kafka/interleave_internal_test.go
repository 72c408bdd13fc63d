package kafka

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A poll's records, and those still buffered before them, are handed out
// one partition after another in turn, each partition's in offset order.
func TestInterleaveTakesPartitionsInTurn(t *testing.T) {
	t.Parallel()
	a, b, c := &partition{num: 0}, &partition{num: 1}, &partition{num: 2}
	var ents []entry
	for _, r := range []struct {
		p   *partition
		off int64
	}{{a, 10}, {a, 11}, {a, 12}, {b, 5}, {c, 7}, {c, 8}} {
		ents = append(ents, entry{p: r.p, rec: &kgo.Record{Partition: r.p.num, Offset: r.off}})
	}
	prior := &entry{p: b, rec: &kgo.Record{Partition: 1, Offset: 4}}
	buf := interleave([]*entry{prior}, ents)
	var got [][2]int64
	for _, e := range buf {
		got = append(got, [2]int64{int64(e.p.num), e.rec.Offset})
	}
	require.Equal(t, [][2]int64{{1, 4}, {0, 10}, {2, 7}, {1, 5}, {0, 11}, {2, 8}, {0, 12}}, got)

	one := interleave(nil, ents[:3])
	require.Len(t, one, 3)
	require.Equal(t, int64(12), one[2].rec.Offset)
}
